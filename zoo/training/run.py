"""``zoo train`` in Python: claim a run folder, train one model or an ensemble into it, report.

A resumed run goes on from its folder's ``checkpoints/last.ckpt`` with the folder's own recipe.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from zoo.core.errors import ZooError
from zoo.core.io import write_json
from zoo.core.recipe import Recipe, load
from zoo.monitoring.wandb_logging import announce_sync
from zoo.training.ensemble_training import train_ensemble
from zoo.training.fit import LAST_CHECKPOINT, RunResult, _quiet_lightning, fit_one, process_rank
from zoo.training.run_folder import RUN_DIR_ENV, claim_run_dir, settle_replaced, write_recipe


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
    aside = ckpt = wandb_id = None
    earlier = 0.0  # a resumed run: the seconds its earlier sittings took to the checkpoint it goes on from
    if resume is not None:
        if recipe is not None or list(overrides) or run_dir is not None:
            raise ZooError("--resume takes the run folder alone: its recipe.yaml is the recipe (drop RECIPE, "
                           "key=value overrides and --run-dir)")
        path = Path(resume)
        resolved, ckpt = resume_point(path)
        wandb_id, earlier = _prepare_resume(path, ckpt)
    else:
        resolved = recipe if isinstance(recipe, Recipe) else load(recipe, overrides)
        if process_rank() > 0:
            # a DDP worker: Lightning's launcher passes rank 0's folder on; torchrun and SLURM need --run-dir
            shared = os.environ.get(RUN_DIR_ENV) or run_dir
            if not shared:
                raise ZooError("this process is a DDP worker (rank > 0): pass --run-dir so every rank shares one folder")
            path = Path(shared)
            path.mkdir(parents=True, exist_ok=True)
        else:
            path, aside = claim_run_dir(run_dir, resolved.name or "run", overwrite)
            write_recipe(resolved, path)
    if process_rank() == 0:
        # Lightning starts the other ranks by running this same command again; they read this to join in
        os.environ[RUN_DIR_ENV] = str(path)
    _quiet_lightning()
    try:
        if resolved.ensemble is None:
            result = fit_one(resolved, path, progress, ckpt_path=ckpt, wandb_resume_id=wandb_id)
        else:
            result = train_ensemble(resolved, path, progress)
    except ZooError:
        settle_replaced(path, aside, started=False)  # a mistake caught before training: the old run stays
        raise
    except BaseException:
        if process_rank() == 0:
            announce_sync(path)  # stopped (a signal, a crash): what W&B got so far can be uploaded all the same
        raise
    settle_replaced(path, aside, started=True)
    result.seconds = round(earlier + time.perf_counter() - start, 2)
    if result.rank == 0:
        write_json(path / "metrics.json", result.summary())
        announce_sync(path)
    return result


def resume_point(path: Path) -> tuple[Recipe, Path]:
    """The recipe and checkpoint a stopped run folder goes on from; a clear error when it cannot."""
    if not (path / "recipe.yaml").is_file():
        raise ZooError(f"--resume {path}: not a run folder (no recipe.yaml in it)")
    if (path / "metrics.json").is_file() and process_rank() == 0:
        raise ZooError(f"--resume {path}: that run finished (see its metrics.json); there is nothing to resume")
    ckpt = path / "checkpoints" / LAST_CHECKPOINT
    if not ckpt.is_file():
        raise ZooError(
            f"--resume {path}: no checkpoints/{LAST_CHECKPOINT} (the run stopped before its first checkpoint); "
            f"start it again with: zoo train {path / 'recipe.yaml'} --run-dir {path} --overwrite"
        )
    resolved = load(path / "recipe.yaml")
    if resolved.ensemble is not None:
        raise ZooError(f"--resume {path}: resuming an ensemble is not supported; train it again")
    return resolved, ckpt


def _prepare_resume(path: Path, ckpt: Path) -> tuple[str | None, float]:
    """Trim the metrics a stopped run logged after its checkpoint (the replay logs them again); its W&B id,
    and the seconds its sittings so far took to that checkpoint."""
    from zoo.monitoring.wandb_logging import read_run_id
    from zoo.training.checkpoints import trim_metrics_csv
    from zoo.training.evaluation import safe_load

    state = safe_load(ckpt)
    if process_rank() == 0:
        trim_metrics_csv(path / "logs" / "metrics.csv", state["global_step"])
    return read_run_id(path), float(state.get("zoo_resume", {}).get("seconds", 0.0))
