"""``zoo train`` in Python: check a recipe, claim a run folder, train one model or an ensemble in it, report.

The order is what keeps a refused recipe from leaving anything behind: the recipe is resolved, the data,
the initialized model and the Trainer are built and checked (zoo.training.fit.prepare_fit), and only then is
the run folder claimed (locked, created, an overwritten run set aside: zoo.training.run_folder) and the
W&B logger created (zoo.training.fit.run_fit). A failure before the run can be resumed removes the folder
again and puts back the run it replaced. A resumed run goes on from its folder's
``checkpoints/last.ckpt`` with the folder's own recipe, which must be the one its checkpoint was trained
with; an ensemble goes on member by member (zoo.training.ensemble_training.train_ensemble).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L

from zoo.core.errors import ZooError, brief
from zoo.core.io import write_json
from zoo.core.recipe import Recipe, load
from zoo.monitoring.wandb_logging import announce_sync
from zoo.training.checkpoints import Interrupted, SignalStop, seconds_so_far
from zoo.training.fit import LAST_CHECKPOINT, RunResult, _quiet_lightning, prepare_fit, process_rank, run_fit
from zoo.training.run_folder import (
    RUN_DIR_ENV,
    RunFolder,
    check_target,
    new_run_path,
    resumable,
    write_recipe,
)


def train(
    recipe: str | Path | Recipe | None = None,
    overrides: Iterable[str] = (),
    *,
    run_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    resume: str | Path | None = None,
) -> RunResult:
    """Train a recipe (one model or an ensemble) and evaluate it; the Python form of ``zoo train``.

    ``resume``: a run folder whose training stopped (killed, interrupted); it goes on from its
    ``checkpoints/last.ckpt`` with the folder's own recipe and ends as the uninterrupted run would.
    """
    start = time.perf_counter()
    _quiet_lightning()
    if resume is not None:
        if recipe is not None or list(overrides) or run_dir is not None or overwrite:
            raise ZooError("--resume takes the run folder alone: its recipe.yaml is the recipe (drop RECIPE, "
                           "key=value overrides, --run-dir and --overwrite)")
        return _resume(Path(resume), progress, start)
    resolved = recipe if isinstance(recipe, Recipe) else load(recipe, overrides)
    if process_rank() > 0:
        # a DDP worker: Lightning's launcher passes rank 0's folder on; torchrun and SLURM need --run-dir
        shared = os.environ.get(RUN_DIR_ENV) or run_dir
        if not shared:
            raise ZooError("this process is a DDP worker (rank > 0): pass --run-dir so every rank shares one folder")
        return _as_worker(resolved, Path(shared), progress, ckpt=None)
    path = Path(run_dir) if run_dir is not None else new_run_path(resolved.name or "run")
    if run_dir is not None:
        check_target(path, overwrite)
    signals = SignalStop()
    prepared = None
    if resolved.ensemble is None:
        prepared = prepare_fit(resolved, path, progress, signals=signals)
    else:
        from zoo.training.ensemble_training import member_recipes

        member_recipes(resolved)  # every member's recipe is checked before the folder is claimed
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


def _resume(path: Path, progress: bool | None, start: float) -> RunResult:
    if not (path / "recipe.yaml").exists():
        raise ZooError(f"--resume {path}: not a run folder (no recipe.yaml in it)")
    if process_rank() > 0:  # rank 0 checked the folder and holds its lock
        return _as_worker(load(path / "recipe.yaml"), path, progress, ckpt=path / "checkpoints" / LAST_CHECKPOINT)
    signals = SignalStop()
    folder = RunFolder.reopen(path)  # refused while another process runs it
    with _owning(folder):
        resolved = load_unfinished(path)
        if resolved.ensemble is not None:
            result = _resume_ensemble(resolved, path, progress, signals)
            _report(result, path, start, earlier=result.seconds)
            return result
        resolved, ckpt, step, earlier, rows = resume_point(path)
        prepared = prepare_fit(resolved, path, progress, signals=signals)
        wandb_id = prepare_resume(path, step, rows)
        os.environ[RUN_DIR_ENV] = str(path)
        signals.install()
        try:
            result = run_fit(prepared, path, ckpt_path=ckpt, wandb_resume_id=wandb_id)
        finally:
            signals.restore()
        _report(result, path, start, earlier)
    return result


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
    signals = SignalStop()
    prepared = prepare_fit(resolved, path, progress, signals=signals)
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


def load_unfinished(path: Path) -> Recipe:
    """The recipe of a run folder that has not finished; a clear error for a finished one."""
    if (path / "metrics.json").is_file():
        raise ZooError(f"--resume {path}: that run finished (see its metrics.json); there is nothing to resume")
    return load(path / "recipe.yaml")


def resume_point(path: Path) -> tuple[Recipe, Path, int, float, int | None]:
    """The recipe, checkpoint and step a stopped run folder goes on from, the seconds its sittings took to
    that checkpoint and the rows of metrics.csv logged before it; a clear error when it cannot."""
    resolved = load_unfinished(path)
    if resolved.ensemble is not None:
        raise ZooError(f"--resume {path}: an ensemble goes on member by member, not from one checkpoint")
    ckpt, step, seconds, rows = checkpoint_to_resume(path, resolved)
    return resolved, ckpt, step, seconds, rows


def checkpoint_to_resume(
    path: Path, resolved: Recipe, run: Path | None = None, ignored: tuple[str, ...] = ()
) -> tuple[Path, int, float, int | None]:
    """The ``last.ckpt`` of the run in ``path``, checked to have been trained with ``resolved``; its step, the
    seconds its sittings took to it and the rows of metrics.csv logged before it. ``run``: the folder whose
    recipe.yaml ``resolved`` comes from (an ensemble's, for a member); ``ignored``: recipe keys that may
    differ (see :func:`refuse_edited_recipe`)."""
    from zoo.training.checkpoints import metrics_rows
    from zoo.training.evaluation import safe_load

    ckpt = path / "checkpoints" / LAST_CHECKPOINT
    if not ckpt.is_file():
        raise ZooError(
            f"--resume {path}: no checkpoints/{LAST_CHECKPOINT} (the run stopped before its first checkpoint); "
            f"start it again with: zoo train {path / 'recipe.yaml'} --run-dir {path} --overwrite"
        )
    state = safe_load(ckpt)
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        raise ZooError(f"{ckpt}: not a zoo training checkpoint (no global_step)")
    refuse_edited_recipe(state, resolved, run or path, ignored)
    return ckpt, state["global_step"], seconds_so_far(state), metrics_rows(state)


def refuse_edited_recipe(state: dict[str, Any], resolved: Recipe, run: Path, ignored: tuple[str, ...] = ()) -> None:
    """A clear error when checkpoint ``state`` was trained with another recipe than ``resolved``, which
    comes from ``run``'s recipe.yaml; keys in ``ignored`` (an ensemble's W&B names, which follow its
    folder's name) may differ."""
    trained = (state.get("hyper_parameters") or {}).get("recipe")
    if not isinstance(trained, dict):
        return
    changed = [c for c in recipe_changes(trained, resolved.to_dict()) if c.split(":", 1)[0] not in ignored]
    if changed:
        raise ZooError(
            f"--resume {run}: recipe.yaml is not the recipe its checkpoint was trained with "
            f"({'; '.join(changed[:3])}{'; ...' if len(changed) > 3 else ''}); a resumed run goes on "
            f"with its own recipe: undo the edit, or train the edited recipe as a new run: "
            f"zoo train {run / 'recipe.yaml'} --run-dir NEW_FOLDER"
        )


def recipe_changes(before: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: old -> new`` for every value that differs (keys only ``now`` has are a newer zoo's defaults)."""
    changes = []
    for key in sorted(set(before) | set(now), key=str):
        where = f"{prefix}{key}"
        if key not in before:
            continue
        old, new = before[key], now.get(key, "(removed)")
        if key == "name" and isinstance(old, str) and ":" not in old and str(new).endswith(f":{old}"):
            continue  # the same component, qualified because another plugin now holds its name too
        if isinstance(old, dict) and isinstance(new, dict):
            changes += recipe_changes(old, new, f"{where}.")
        elif old != new:
            changes.append(f"{where}: {brief(old)} -> {brief(new)}")
    return changes


def prepare_resume(path: Path, step: int, rows: int | None) -> str | None:
    """Trim the metrics a stopped run logged after its checkpoint (the replay logs them again); its W&B id."""
    from zoo.monitoring.wandb_logging import read_run_id
    from zoo.training.checkpoints import trim_metrics_csv

    trim_metrics_csv(path / "logs" / "metrics.csv", step, rows)
    return read_run_id(path)
