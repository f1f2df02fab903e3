"""Training an ensemble recipe: independent members, or snapshots of one run's warm-restart cycles."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L

from zoo.core.catalog import schedules
from zoo.core.errors import RecipeError
from zoo.core.io import read_text, write_json
from zoo.core.recipe import Recipe, derive
from zoo.monitoring.wandb_logging import read_run_id
from zoo.training.checkpoints import Interrupted, SignalStop, seconds_so_far
from zoo.training.classifier import schedule_lengths
from zoo.training.ensemble_model import Ensemble
from zoo.training.evaluation import evaluate, safe_load
from zoo.training.fit import LAST_CHECKPOINT, RunResult, fit_one
from zoo.training.resume import checkpoint_to_resume, prepare_resume, refuse_edited_recipe
from zoo.training.run_folder import finished, remove_stale_temp_files, write_recipe


def member_recipes(recipe: Recipe, run_name: str | None = None) -> list[Recipe]:
    """One resolved recipe per member: its own seed, its own overrides, no ensemble section; given the
    ensemble's run folder name, members are W&B runs named ``<run_name>-m<i>`` in the group ``run_name``."""
    ens = recipe.ensemble
    seeds = ens.seeds if ens.seeds is not None else [recipe.seed + i for i in range(ens.members)]
    if len(seeds) != ens.members:
        raise RecipeError(f"{recipe.source}: ensemble.seeds has {len(seeds)} seeds for {ens.members} members")
    overrides = ens.member_overrides or [[] for _ in seeds]
    if len(overrides) != ens.members:
        raise RecipeError(
            f"{recipe.source}: ensemble.member_overrides has {len(overrides)} lists for {ens.members} members"
        )
    # members are W&B runs of their own, grouped by the ensemble's run folder: two ensembles of one recipe
    # stay apart in W&B
    group = [] if recipe.logger.wandb.group else [f"logger.wandb.group={run_name or recipe.name}"]
    return [
        derive(recipe, [*group, *_wandb_name(run_name, f"m{i}"), *extra], ensemble=None, seed=seed,
               name=f"{recipe.name}-m{i}")
        for i, (seed, extra) in enumerate(zip(seeds, overrides))
    ]


def _wandb_name(run_name: str | None, suffix: str) -> list[str]:
    return [f"logger.wandb.name={run_name}-{suffix}"] if run_name else []


# what member_recipes and snapshot runs name after the ensemble's folder: a moved folder resumes all the same
FOLDER_NAMED = ("logger.wandb.group", "logger.wandb.name")


class SnapshotCheckpoints(L.Callback):
    """Saves the model at the end of each warm-restart cycle of the schedule: each snapshot is a member.

    A resumed run keeps the snapshots taken up to its checkpoint; those after it are taken again, at the
    same steps, by the replay.
    """

    def __init__(self, schedule: dict[str, Any], folder: Path) -> None:
        # the recipe's schedule spec; parameters without a name are cosine_restarts', the default restarts
        self.schedule = schedule if "name" in schedule else {"name": "cosine_restarts", **schedule}
        self.folder = folder
        self.steps: set[int] = set()
        self.saved: list[Path] = []
        self._seen = 0

    def on_train_start(self, trainer, pl_module) -> None:
        total, per_epoch = schedule_lengths(trainer)
        cycle_ends = schedules.get(self.schedule["name"]).obj.cycle_ends
        self.steps = set(cycle_ends(self.schedule, total_steps=total, steps_per_epoch=per_epoch))
        self._seen = trainer.global_step
        self.saved = [p for p in self.taken() if _snapshot_step(p) <= trainer.global_step]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # a training step may hold several optimizer steps (steps_per_execution): a cycle ending inside
        # one is saved at its end
        step, passed = trainer.global_step, self._seen
        self._seen = step
        if any(passed < end <= step for end in self.steps):
            path = self.folder / f"cycle-{len(self.saved)}-step{step}.ckpt"
            trainer.save_checkpoint(path)
            self.saved.append(path)

    def taken(self) -> list[Path]:
        """The snapshots in the folder, in the order they were taken (over all sittings of the run: a run
        resumed after its training ended starts no training, and none of the hooks above)."""
        return sorted(self.folder.glob("cycle-*-step*.ckpt"), key=_snapshot_step)


def _snapshot_step(path: Path) -> int:
    """The step a snapshot file (``cycle-<i>-step<step>.ckpt``) was taken at."""
    return int(path.stem.rsplit("-step", 1)[1])


def _summary(recipe: Recipe, ensemble: Ensemble, member_info: list[dict[str, Any]], path: Path) -> RunResult:
    from zoo.monitoring.wandb_ensemble import log_ensemble

    test = evaluate(ensemble, recipe.data, "test")
    val = evaluate(ensemble, recipe.data, "val")
    for info, acc_t, acc_v in zip(member_info, test["members"], val["members"]):
        info.update(test_acc=acc_t, val_acc=acc_v)
    ensemble_file = path / "ensemble.ckpt"
    ensemble.save(ensemble_file)
    log_ensemble(recipe, path, test=test, val=val, members=member_info, checkpoint=ensemble_file)
    mean_member = sum(m["test_acc"] for m in member_info) / len(member_info)
    return RunResult(
        test_acc=test["acc"],
        val_acc=val["acc"],
        run_dir=str(path),
        seconds=0.0,
        best_checkpoint=str(ensemble_file),
        metrics={"test_acc": test["acc"], "val_acc": val["acc"], "test_nll": test["nll"], "mean_member_test_acc": mean_member},
        members=member_info,
        ensemble_acc=test["acc"],
    )


def train_ensemble(
    recipe: Recipe, path: Path, progress: bool | None = None, *, signals: SignalStop | None = None,
    resume: bool = False,
) -> RunResult:
    """Train an ensemble recipe in ``path``, or go on with one that stopped (``resume``).

    Each member trains in ``members/m<i>/`` and writes its ``metrics.json`` when it has finished. A resumed
    ensemble keeps its finished members, resumes a member with a last checkpoint from it (exactly, as a
    single run), and starts the others; a snapshot ensemble resumes its one run. ``signals``: the run
    owner's installed :class:`SignalStop`. The result's ``seconds`` are what the earlier sittings of a
    resumed ensemble took.
    """
    ens = recipe.ensemble
    if ens.snapshot:
        return _train_snapshots(recipe, path, progress, signals, resume)
    jobs = [
        MemberJob(member, path / "members" / f"m{i}", 10_000 + member.seed if ens.bootstrap else None)
        for i, member in enumerate(member_recipes(recipe, path.name))
    ]
    for job in jobs:
        if finished(job.folder):  # kept as it is: it must be a member of this recipe
            refuse_edited_recipe(safe_load(job.best_checkpoint()), job.recipe, path, FOLDER_NAMED)
    earlier = sum(job.seconds_before() for job in jobs)
    pending = [job for job in jobs if not finished(job.folder)]
    if ens.parallel > 1:
        _fit_in_parallel(pending, ens.parallel, signals)
    else:
        for job in pending:
            job.run(progress, signals)
    infos = [
        {"member": i, "seed": job.recipe.seed, "run_dir": str(job.folder), "wandb_run_id": read_run_id(job.folder)}
        for i, job in enumerate(jobs)
    ]
    checkpoints = [job.best_checkpoint() for job in jobs]
    result = _summary(recipe, Ensemble.from_checkpoints(checkpoints, ens.combine), infos, path)
    result.seconds = earlier
    return result


@dataclass
class MemberJob:
    """One member of an ensemble and its folder, which says how far the member got."""

    recipe: Recipe
    folder: Path
    bootstrap_seed: int | None

    def seconds_before(self) -> float:
        """What earlier sittings spent on this member: all of a finished member, a begun one's to its checkpoint."""
        if finished(self.folder):
            return float(json.loads(read_text(self.folder / "metrics.json")).get("seconds", 0.0))
        last = self.folder / "checkpoints" / LAST_CHECKPOINT
        return seconds_so_far(safe_load(last)) if last.is_file() else 0.0

    def run(self, progress: bool | None, signals: SignalStop | None, callbacks: list[Any] | None = None) -> None:
        """Train the member, from its last checkpoint when it has one, and mark it finished."""
        start = time.perf_counter()
        if signals is not None:
            signals.when = f"before member {self.folder.name} started training"
        ckpt, wandb_id, before = None, None, 0.0
        if (self.folder / "checkpoints" / LAST_CHECKPOINT).is_file():
            remove_stale_temp_files(self.folder)
            ensemble = self.folder.parent.parent
            ckpt, step, before, rows = checkpoint_to_resume(self.folder, self.recipe, ensemble, FOLDER_NAMED)
            wandb_id = prepare_resume(self.folder, step, rows)
        else:
            # begun without a checkpoint (killed, or not begun): nothing in it is worth keeping
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            write_recipe(self.recipe, self.folder)
        result = fit_one(self.recipe, self.folder, progress, bootstrap_seed=self.bootstrap_seed,
                         callbacks=callbacks or [], ckpt_path=ckpt, wandb_resume_id=wandb_id, signals=signals)
        result.seconds = round(before + time.perf_counter() - start, 2)
        write_json(self.folder / "metrics.json", result.summary())  # last: the member has finished

    def best_checkpoint(self) -> str:
        # named from the folder, which may have moved since the member finished
        written = json.loads(read_text(self.folder / "metrics.json"))["best_checkpoint"]
        return str(self.folder / "checkpoints" / Path(written).name) if written else written


# set in each worker process: the ensemble's process asks the members in progress to stop (a signal number)
_stop_request: Any = None
IN_PARALLEL = "while members trained in parallel processes"


def _share_stop_request(value: Any) -> None:
    global _stop_request
    _stop_request = value


class _StopWhenAsked(L.Callback):
    """In a member's worker process: a signal the ensemble's process got stops this member at the end of its
    step too, as its own signal would (a signal sent to both is acted on once). So does the end of the
    ensemble's process (kill -9): the member, orphaned, would otherwise train on outside the folder's lock."""

    def __init__(self, request: Any, watch: SignalStop) -> None:
        self.request, self.watch = request, watch
        self.parent = os.getppid()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.watch.received is None:
            if self.request.value:
                self.watch.received = self.request.value
            elif os.getppid() != self.parent:
                self.watch.received = signal.SIGTERM


def _fit_member(recipe_data: dict[str, Any], source: str | None, folder: str, bootstrap: int | None,
                device: int | None, plugins: list[str]) -> int | None:
    """One member in a fresh worker process, with the plugins the parent imported by name (``--plugin`` files
    included); the signal that stopped it, or None when it finished."""
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device)  # read when CUDA starts, which has not happened yet
    from zoo.core import discovery
    from zoo.core.recipe import from_dict
    from zoo.training.fit import _quiet_lightning
    from zoo.training.slurm import requeue_signal

    _quiet_lightning()
    discovery.load_local(plugins, kind="--plugin")
    if _stop_request.value:  # the ensemble stopped while this process started: the member stays unbegun
        return _stop_request.value
    member = from_dict(recipe_data, str(folder))
    member.source = source
    signals = SignalStop(requeue_signal(member.checkpoint)).install()
    watch = _StopWhenAsked(_stop_request, signals)
    try:
        MemberJob(member, Path(folder), bootstrap).run(False, signals, [watch])
    except Interrupted as stop:
        return stop.signum  # its checkpoint is written; an Interrupted does not survive the trip back
    finally:
        signals.restore()
        if os.getppid() != watch.parent:
            os._exit(1)  # nobody is left to take the result: the pool's worker would wait for work forever
    return None


def _fit_in_parallel(jobs: list[MemberJob], workers: int, signals: SignalStop | None) -> None:
    """Members trained ``workers`` at a time in waves, each in a fresh process and, given GPUs, one per device.

    A signal to this process, a member stopped by one, or a member that fails stops the members in progress
    at the end of their step, each writing its checkpoint: the ensemble resumes from them.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    from zoo.core import discovery

    plugins = discovery.loaded_by_name()
    gpus = torch.cuda.device_count()
    if gpus:
        workers = min(workers, gpus)
    context = multiprocessing.get_context("spawn")  # fresh interpreters: CUDA does not survive fork
    stop = context.Value("i", 0)
    if signals is not None:
        signals.when = IN_PARALLEL
    for start in range(0, len(jobs), workers):
        wave = jobs[start : start + workers]
        with ProcessPoolExecutor(max_workers=len(wave), mp_context=context, initializer=_share_stop_request,
                                 initargs=(stop,)) as pool:
            futures = [
                pool.submit(_fit_member, job.recipe.to_dict(), job.recipe.source, str(job.folder),
                            job.bootstrap_seed, slot if gpus else None, plugins)
                for slot, job in enumerate(wave)
            ]
            try:
                stopped_by = [f.result() for f in futures]
            except BaseException as exc:
                stop.value = getattr(exc, "signum", signal.SIGTERM)  # leaving the pool waits for them
                raise
        signum = next((s for s in stopped_by if s), None)
        if signum is not None:
            raise Interrupted(signum, when=IN_PARALLEL)


def _train_snapshots(
    recipe: Recipe, path: Path, progress: bool | None, signals: SignalStop | None, resume: bool
) -> RunResult:
    if not hasattr(schedules.get(recipe.schedule["name"]).obj, "cycle_ends"):
        with_restarts = [e.name for e in schedules if hasattr(e.obj, "cycle_ends")]
        raise RecipeError(
            f"{recipe.source}: ensemble.snapshot needs a schedule with warm restarts (its cycle ends are the "
            f"members: {', '.join(with_restarts)}), got {recipe.schedule['name']}"
        )
    snapshots = SnapshotCheckpoints(recipe.schedule, path / "snapshots")
    # the training run is a W&B run of its own; the ensemble's run, named after the folder, comes after it
    group = [] if recipe.logger.wandb.group else [f"logger.wandb.group={path.name}"]
    training = derive(recipe, [*group, *_wandb_name(path.name, "snapshots")], ensemble=None)
    ckpt, wandb_id, earlier = None, None, 0.0
    if resume:  # the one training run goes on from its checkpoint, as a single run does
        ckpt, step, earlier, rows = checkpoint_to_resume(path, training, ignored=FOLDER_NAMED)
        wandb_id = prepare_resume(path, step, rows)
    fit_one(training, path, progress, callbacks=[snapshots], ckpt_path=ckpt, wandb_resume_id=wandb_id,
            signals=signals)
    members = snapshots.taken()
    if not members:
        raise RecipeError(f"{recipe.source}: the run ended before the first warm-restart cycle did")
    training_run = read_run_id(path)
    infos = [{"member": i, "snapshot": p.name, "wandb_run_id": training_run} for i, p in enumerate(members)]
    result = _summary(recipe, Ensemble.from_checkpoints(members, recipe.ensemble.combine), infos, path)
    result.seconds = earlier
    return result
