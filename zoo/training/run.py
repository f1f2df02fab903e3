"""``zoo train`` in Python: check a recipe, claim a run folder, train one model or an ensemble in it, report.

The order is what keeps a refused recipe from leaving anything behind: the recipe is resolved, the data,
the initialized model and the Trainer are built and checked (zoo.training.fit.prepare_fit), and only then is
the run folder claimed (locked, created, an overwritten run set aside: zoo.training.run_folder) and the
W&B logger created (zoo.training.fit.run_fit). A failure before the run can be resumed removes the folder
again and puts back the run it replaced. A resumed run goes on from its folder's
``checkpoints/last.ckpt`` with the folder's own recipe, which must be the one its checkpoint was trained
with (zoo.training.resume); an ensemble goes on member by member (zoo.training.ensemble_training). A requeued
SLURM job runs its ``zoo train RECIPE --run-dir PATH`` again, and the run that job started in PATH goes on the
same way (zoo.training.slurm).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import lightning as L

from zoo.core.errors import ZooError
from zoo.core.io import write_json
from zoo.core.recipe import Recipe, load
from zoo.monitoring.extra_loggers import check_mlflow_store
from zoo.monitoring.wandb_logging import announce_sync
from zoo.training.checkpoints import Interrupted, SignalStop
from zoo.training.fit import LAST_CHECKPOINT, RunResult, _quiet_lightning, prepare_fit, process_rank, run_fit
from zoo.training.resume import load_unfinished, prepare_resume, resume_point
from zoo.training.run_folder import (
    RUN_DIR_ENV,
    RunFolder,
    check_target,
    new_run_path,
    requeued_run,
    resumable,
    resume_command,
    write_recipe,
)
from zoo.training.slurm import batch_job, requeue_signal


def train(
    recipe: str | Path | Recipe | None = None,
    overrides: Iterable[str] = (),
    *,
    run_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    resume: str | Path | None = None,
    callbacks: Iterable[L.Callback] = (),
) -> RunResult:
    """Train a recipe (one model or an ensemble) and evaluate it; the Python form of ``zoo train``.

    ``resume``: a run folder whose training stopped (killed, interrupted); it goes on from its
    ``checkpoints/last.ckpt`` with the folder's own recipe and ends as the uninterrupted run would.
    ``callbacks``: more Lightning callbacks for a single model's Trainer (a sweep's pruning report).
    """
    start = time.perf_counter()
    _quiet_lightning()
    if resume is not None:
        if recipe is not None or list(overrides) or run_dir is not None or overwrite:
            raise ZooError("--resume takes the run folder alone: its recipe.yaml is the recipe (drop RECIPE, "
                           "key=value overrides, --run-dir and --overwrite)")
        return _resume(Path(resume), progress, start, list(callbacks))
    resolved = recipe if isinstance(recipe, Recipe) else load(recipe, overrides)
    from zoo.training.init_from import with_weights_files

    # recipe.yaml records the files themselves, before any member's recipe or the run's is written
    resolved = with_weights_files(resolved)
    if process_rank() > 0:
        # a DDP worker: Lightning's launcher passes rank 0's folder on; torchrun and SLURM need --run-dir
        shared = os.environ.get(RUN_DIR_ENV) or run_dir
        if not shared:
            raise ZooError("this process is a DDP worker (rank > 0): pass --run-dir so every rank shares one folder")
        # a requeued SLURM job: rank 0 goes on from the checkpoint (_resume_requeued), and so does every rank
        requeued = not overwrite and requeued_run(Path(shared)) is not None
        return _as_worker(resolved, Path(shared), progress,
                          ckpt=Path(shared) / "checkpoints" / LAST_CHECKPOINT if requeued else None)
    path = Path(run_dir) if run_dir is not None else new_run_path(resolved.name or "run")
    if run_dir is not None:
        job = None if overwrite else requeued_run(path)
        if job is not None:
            return _resume_requeued(resolved, path, job, progress, start, list(callbacks))
        check_target(path, overwrite)
    elif batch_job() is not None:
        print("zoo: in a SLURM batch job without --run-dir: if the job is requeued, it starts a new run in a "
              "new folder; pass --run-dir for the requeued job to go on with this run", file=sys.stderr)
    signals = SignalStop(requeue_signal(resolved.checkpoint))
    prepared = None
    if resolved.ensemble is None:
        prepared = prepare_fit(resolved, path, progress, signals=signals, callbacks=callbacks)
    else:
        from zoo.training.ensemble_training import member_recipes

        member_recipes(resolved)  # every member's recipe is checked before the folder is claimed
    check_mlflow_store(resolved)
    signals.install()
    try:
        folder = RunFolder.claim(path, overwrite)
        with _owning(folder):
            write_recipe(resolved, path)
            # Lightning starts the other DDP ranks by running this same command again; they read this to join in
            os.environ[RUN_DIR_ENV] = str(path)
            if prepared is not None:
                if folder.aside is not None:
                    prepared.trainer.callbacks.append(_DropReplacedRun(folder))
                result = run_fit(prepared, path)
            else:
                from zoo.training.ensemble_training import train_ensemble

                result = train_ensemble(resolved, path, progress, signals=signals)
            _report(result, path, start)
    finally:
        signals.restore()
    return result


def _resume(path: Path, progress: bool | None, start: float, callbacks: list[L.Callback]) -> RunResult:
    if not (path / "recipe.yaml").exists():
        raise ZooError(f"--resume {path}: not a run folder (no recipe.yaml in it)")
    if process_rank() > 0:  # rank 0 checked the folder and holds its lock
        return _as_worker(load(path / "recipe.yaml"), path, progress, ckpt=path / "checkpoints" / LAST_CHECKPOINT)
    folder = RunFolder.reopen(path)  # refused while another process runs it
    with _owning(folder):
        resolved = load_unfinished(path)
        check_mlflow_store(resolved)
        signals = SignalStop(requeue_signal(resolved.checkpoint))
        if resolved.ensemble is not None:
            result = _resume_ensemble(resolved, path, progress, signals)
            _report(result, path, start, earlier=result.seconds)
            return result
        resolved, ckpt, step, earlier, rows = resume_point(path)
        prepared = prepare_fit(resolved, path, progress, signals=signals, callbacks=callbacks, resuming=True)
        wandb_id = prepare_resume(path, step, rows)
        os.environ[RUN_DIR_ENV] = str(path)
        signals.install()
        try:
            result = run_fit(prepared, path, ckpt_path=ckpt, wandb_resume_id=wandb_id)
        finally:
            signals.restore()
        _report(result, path, start, earlier)
    return result


def _resume_requeued(resolved: Recipe, path: Path, job: str, progress: bool | None, start: float,
                     callbacks: list[L.Callback]) -> RunResult:
    """A requeued SLURM job runs its ``zoo train RECIPE --run-dir PATH`` again: the run it started there goes
    on as ``--resume PATH`` would, provided the recipe asked for is still the run's own."""
    from zoo.training.resume import recipe_changes

    changed = recipe_changes(load_unfinished(path).to_dict(), resolved.to_dict())
    if changed:
        raise ZooError(
            f"--run-dir {path}: SLURM job {job} started this run with another recipe "
            f"({'; '.join(changed[:3])}{'; ...' if len(changed) > 3 else ''}); its requeue goes on only with "
            "the run's own recipe: undo the edit, or start over with --overwrite"
        )
    print(f"zoo: {path}: started by this SLURM job ({job}), which was requeued: going on from its last "
          f"checkpoint, as {resume_command(path)} would", file=sys.stderr)
    return _resume(path, progress, start, callbacks)


def _resume_ensemble(resolved: Recipe, path: Path, progress: bool | None, signals: SignalStop) -> RunResult:
    """An ensemble goes on member by member (see zoo.training.ensemble_training); the result's ``seconds``
    are what its earlier sittings took."""
    from zoo.training.ensemble_training import train_ensemble

    os.environ[RUN_DIR_ENV] = str(path)
    signals.install()
    try:
        return train_ensemble(resolved, path, progress, signals=signals, resume=True)
    finally:
        signals.restore()


def _as_worker(resolved: Recipe, path: Path, progress: bool | None, ckpt: Path | None) -> RunResult:
    """A DDP rank > 0: trains in rank 0's folder, writing nothing there itself."""
    signals = SignalStop(requeue_signal(resolved.checkpoint))
    prepared = prepare_fit(resolved, path, progress, signals=signals, resuming=ckpt is not None)
    signals.install()
    try:
        return run_fit(prepared, path, ckpt_path=ckpt)
    finally:
        signals.restore()


class _owning:
    """The run's lifetime in its folder: on success keep it, on any failure :meth:`RunFolder.end` decides."""

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder

    def __enter__(self) -> RunFolder:
        return self.folder

    def __exit__(self, kind, exc, tb) -> None:
        kept = self.folder.end(ok=exc is None)
        if exc is not None:
            _describe_outcome(exc, self.folder.path, kept)


def _describe_outcome(exc: BaseException, path: Path, kept: bool) -> None:
    """Tell whoever reports the failure where the run is and whether it can go on."""
    try:
        exc.zoo_run_dir = path  # type: ignore[attr-defined]
        exc.zoo_resumable = kept and resumable(path)  # type: ignore[attr-defined]
    except AttributeError:
        pass
    if isinstance(exc, Interrupted):
        exc.run_dir, exc.resumable = path, kept and resumable(path)
    if kept and process_rank() == 0:
        announce_sync(path)  # stopped (a signal, a crash): what W&B got so far can be uploaded all the same


def _report(result: RunResult, path: Path, start: float, earlier: float = 0.0) -> None:
    """metrics.json and the W&B upload hint; ``earlier``: the seconds a resumed run's past sittings took."""
    result.seconds = round(earlier + time.perf_counter() - start, 2)
    if result.rank == 0:
        write_json(path / "metrics.json", result.summary())
        announce_sync(path)


class _DropReplacedRun(L.Callback):
    """Deletes the run that --overwrite set aside as soon as the new run has a checkpoint to resume from."""

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder

    def _check(self, trainer) -> None:
        if self.folder.aside is not None and trainer.is_global_zero and resumable(self.folder.path):
            self.folder.settle()

    # Lightning calls the checkpoint callbacks' epoch-end hooks after everyone else's: the next epoch's
    # start is the first moment after an epoch-end checkpoint (and validation's end, where it saves there)
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._check(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        self._check(trainer)
