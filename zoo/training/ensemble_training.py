"""Training an ensemble recipe: independent members, or snapshots of one run's warm-restart cycles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from zoo.core.catalog import schedules
from zoo.core.errors import RecipeError
from zoo.core.recipe import Recipe, derive
from zoo.monitoring.wandb_logging import read_run_id
from zoo.training.classifier import schedule_lengths
from zoo.training.ensemble_model import Ensemble
from zoo.training.evaluation import evaluate
from zoo.training.fit import RunResult, fit_one
from zoo.training.run_folder import write_recipe


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


class SnapshotCheckpoints(L.Callback):
    """Saves the model at the end of each warm-restart cycle of the schedule: each snapshot is a member."""

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

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # a training step may hold several optimizer steps (steps_per_execution): a cycle ending inside
        # one is saved at its end
        step, passed = trainer.global_step, self._seen
        self._seen = step
        if any(passed < end <= step for end in self.steps):
            path = self.folder / f"cycle-{len(self.saved)}-step{step}.ckpt"
            trainer.save_checkpoint(path)
            self.saved.append(path)


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


def train_ensemble(recipe: Recipe, path: Path, progress: bool | None = None) -> RunResult:
    ens = recipe.ensemble
    if ens.snapshot:
        return _train_snapshots(recipe, path, progress)
    jobs = []
    for i, member in enumerate(member_recipes(recipe, path.name)):
        folder = path / "members" / f"m{i}"
        folder.mkdir(parents=True)
        write_recipe(member, folder)
        jobs.append((member, folder, 10_000 + member.seed if ens.bootstrap else None))
    if ens.parallel > 1:
        checkpoints = _fit_in_parallel(jobs, ens.parallel)
    else:
        checkpoints = [fit_one(m, folder, progress, bootstrap_seed=b).best_checkpoint for m, folder, b in jobs]
    infos = [
        {"member": i, "seed": m.seed, "run_dir": str(folder), "wandb_run_id": read_run_id(folder)}
        for i, (m, folder, _) in enumerate(jobs)
    ]
    return _summary(recipe, Ensemble.from_checkpoints(checkpoints, ens.combine), infos, path)


def _fit_member(
    recipe_data: dict[str, Any], source: str | None, folder: str, bootstrap: int | None, device: int | None,
    plugins: list[str],
) -> str:
    """One member in a fresh worker process, with the plugins the parent imported by name (``--plugin``
    files included); returns its best checkpoint."""
    import os

    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device)  # read when CUDA starts, which has not happened yet
    from zoo.core import discovery
    from zoo.core.recipe import from_dict
    from zoo.training.fit import _quiet_lightning

    _quiet_lightning()
    discovery.load_local(plugins, kind="--plugin")
    member = from_dict(recipe_data, str(folder))
    member.source = source
    return fit_one(member, Path(folder), False, bootstrap_seed=bootstrap).best_checkpoint


def _fit_in_parallel(jobs: list[tuple[Recipe, Path, int | None]], workers: int) -> list[str]:
    """Members trained ``workers`` at a time in waves, each in a fresh process and, given GPUs, one per device."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    from zoo.core import discovery

    plugins = discovery.loaded_by_name()
    gpus = torch.cuda.device_count()
    if gpus:
        workers = min(workers, gpus)
    context = multiprocessing.get_context("spawn")  # fresh interpreters: CUDA does not survive fork
    checkpoints: list[str] = []
    for start in range(0, len(jobs), workers):
        wave = jobs[start : start + workers]
        with ProcessPoolExecutor(max_workers=len(wave), mp_context=context) as pool:
            futures = [
                pool.submit(
                    _fit_member, m.to_dict(), m.source, str(folder), b, slot if gpus else None, plugins
                )
                for slot, (m, folder, b) in enumerate(wave)
            ]
            checkpoints += [f.result() for f in futures]
    return checkpoints


def _train_snapshots(recipe: Recipe, path: Path, progress: bool | None) -> RunResult:
    if not hasattr(schedules.get(recipe.schedule["name"]).obj, "cycle_ends"):
        with_restarts = [e.name for e in schedules if hasattr(e.obj, "cycle_ends")]
        raise RecipeError(
            f"{recipe.source}: ensemble.snapshot needs a schedule with warm restarts (its cycle ends are the "
            f"members: {', '.join(with_restarts)}), got {recipe.schedule['name']}"
        )
    snapshots = SnapshotCheckpoints(recipe.schedule, path / "snapshots")
    # the training run is a W&B run of its own; the ensemble's run, named after the folder, comes after it
    group = [] if recipe.logger.wandb.group else [f"logger.wandb.group={path.name}"]
    fit_one(derive(recipe, [*group, *_wandb_name(path.name, "snapshots")], ensemble=None), path, progress,
            callbacks=[snapshots])
    if not snapshots.saved:
        raise RecipeError(f"{recipe.source}: the run ended before the first warm-restart cycle did")
    training_run = read_run_id(path)
    infos = [{"member": i, "snapshot": p.name, "wandb_run_id": training_run} for i, p in enumerate(snapshots.saved)]
    return _summary(recipe, Ensemble.from_checkpoints(snapshots.saved, recipe.ensemble.combine), infos, path)
