"""Training a resolved recipe: one run directory, one Trainer, best checkpoint evaluated on val and test."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import sys
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from zoo.errors import ZooError
from zoo.recipe import Recipe, load

RUNS_DIR = Path("runs")
RUN_DIR_ENV = "ZOO_RUN_DIR"


@dataclass
class RunResult:
    """What a finished run reached and where it left its files."""

    test_acc: float
    val_acc: float
    run_dir: str
    seconds: float
    best_checkpoint: str
    metrics: dict[str, float] = field(default_factory=dict)
    members: list[dict[str, Any]] | None = None  # ensembles: each member's seed, accuracies, run folder
    ensemble_acc: float | None = None
    world_size: int = 1
    rank: int = field(default=0, repr=False)  # this process's global rank: only rank 0 reports

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        del out["rank"]
        return out

    def to_json(self) -> str:
        return json.dumps(self.summary(), sort_keys=True)


def new_run_dir(name: str, root: Path = RUNS_DIR) -> Path:
    """A fresh directory under ``root``: time-stamped, with a random suffix so parallel runs never share one."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = root / f"{name}-{stamp}-{secrets.token_hex(2)}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def claim_run_dir(run_dir: str | Path | None, name: str, overwrite: bool) -> Path:
    if run_dir is None:
        return new_run_dir(name)
    path = Path(run_dir)
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise ZooError(f"run directory {path} already exists; pass --overwrite to replace it")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _quiet_lightning() -> None:
    # Lightning's tips about GPUs, TPUs and workers are noise for a recipe run.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval")
    warnings.filterwarnings("ignore", message=r".*overridden `on_after_batch_transfer`")
    # the training loss is left unsynced across ranks on purpose: a sync per step would cost more than it tells
    warnings.filterwarnings("ignore", message=r".*It is recommended to use `self.log\('train/")


def make_trainer(recipe: Recipe, run_dir: Path, progress: bool | None = None, extra_callbacks: list | None = None):
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from zoo.registries import monitors
    from zoo.wandb_logging import WandbExtras, wandb_logger

    kwargs: dict[str, Any] = recipe.trainer.model_dump()
    bar = kwargs.pop("enable_progress_bar")
    if progress is not None:
        bar = progress
    if bar is None:
        bar = sys.stderr.isatty()
    _check_devices(kwargs)
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor="val/acc",
        mode="max",
        save_last=True,
        auto_insert_metric_name=False,
    )
    callbacks = [
        checkpoint,
        LearningRateMonitor(logging_interval="step"),
        *(monitors.build(spec, f"monitors[{i}]") for i, spec in enumerate(recipe.monitors)),
        *(extra_callbacks or []),
    ]
    loggers = [CSVLogger(run_dir, name="logs", version="")]  # first, so trainer.log_dir stays run_dir/logs
    wandb = wandb_logger(recipe, run_dir)
    if wandb is not None:
        loggers.append(wandb)
        callbacks.append(WandbExtras(recipe, run_dir))
    try:
        return L.Trainer(
            **kwargs,
            default_root_dir=run_dir,
            logger=loggers,
            callbacks=callbacks,
            enable_progress_bar=bar,
            enable_model_summary=bar,
        )
    except MisconfigurationException as exc:  # more devices than exist, an unknown strategy, ...
        raise ZooError(f"trainer: {exc}") from None


def _check_devices(kwargs: dict[str, Any]) -> None:
    """Say plainly what Lightning or PyTorch would otherwise report deep inside a traceback."""
    if kwargs.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ZooError("trainer.accelerator: a GPU was asked for, but PyTorch sees no CUDA device here; use cpu or auto")
    if kwargs.get("sync_batchnorm") and not torch.cuda.is_available():
        raise ZooError(
            "trainer.sync_batchnorm: PyTorch's SyncBatchNorm runs only on CUDA devices; drop it on the CPU "
            "(each process then normalizes over its own part of the batch)"
        )


def train(
    recipe: str | Path | Recipe | None = None,
    overrides: Iterable[str] = (),
    *,
    run_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> RunResult:
    """Train a recipe (one model or an ensemble) and evaluate it; the Python form of ``zoo train``."""
    start = time.perf_counter()
    resolved = recipe if isinstance(recipe, Recipe) else load(recipe, overrides)
    if process_rank() > 0:
        # a DDP worker: Lightning's launcher passes rank 0's folder on; torchrun and SLURM need --run-dir
        shared = os.environ.get(RUN_DIR_ENV) or run_dir
        if not shared:
            raise ZooError("this process is a DDP worker (rank > 0): pass --run-dir so every rank shares one folder")
        path = Path(shared)
        path.mkdir(parents=True, exist_ok=True)
    else:
        path = claim_run_dir(run_dir, resolved.name or "run", overwrite)
        write_recipe(resolved, path)
        # Lightning starts the other ranks by running this same command again; they read this to join in
        os.environ[RUN_DIR_ENV] = str(path)
    _quiet_lightning()
    if resolved.ensemble is None:
        result = fit_one(resolved, path, progress)
    else:
        from zoo.ensembling import train_ensemble

        result = train_ensemble(resolved, path, progress)
    result.seconds = round(time.perf_counter() - start, 2)
    if result.rank == 0:
        write_json(path / "metrics.json", result.summary())
    return result


def process_rank() -> int:
    """This process's rank as its launcher (torchrun, SLURM, Lightning) announced it; 0 when alone."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def write_recipe(recipe: Recipe, path: Path) -> None:
    (path / "recipe.yaml").write_text(
        f"# resolved from {recipe.source}; run again with: zoo train {path / 'recipe.yaml'}\n" + recipe.to_yaml()
    )


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def fit_one(
    recipe: Recipe,
    path: Path,
    progress: bool | None = None,
    *,
    bootstrap_seed: int | None = None,
    callbacks: Iterable[Any] = (),
) -> RunResult:
    """Train one model into ``path`` and evaluate its best checkpoint on val and test."""
    import lightning as L

    from zoo.build import build_data
    from zoo.data import Split
    from zoo.module import Classifier

    L.seed_everything(recipe.seed, workers=True, verbose=False)
    try:
        dm = build_data(recipe.data, seed=recipe.seed)
        if bootstrap_seed is not None:
            # a resample with replacement of the training split, as in bagging (Breiman 1996)
            gen = torch.Generator().manual_seed(bootstrap_seed)
            idx = torch.randint(0, len(dm.train), (len(dm.train),), generator=gen)
            dm.train = Split(dm.train.x[idx], dm.train.y[idx])
        module = Classifier(recipe.to_dict(), dm.input_shape, dm.num_classes)
        module.set_input_stats(dm.mean, dm.std)
        module.initialize(dm.sample())
        trainer = make_trainer(recipe, path, progress, extra_callbacks=list(callbacks))
    except ZooError:
        shutil.rmtree(path, ignore_errors=True)  # nothing ran: leave no half-made run behind
        raise
    from zoo.wandb_logging import finish_wandb

    exit_code = 1
    try:
        trainer.fit(module, datamodule=dm)
        ckpt = trainer.checkpoint_callback.best_model_path or None
        # our own checkpoint, but loaded the safe way all the same: tensors and plain containers only
        val = trainer.validate(module, datamodule=dm, ckpt_path=ckpt, verbose=False, weights_only=True)[0]
        test = trainer.test(module, datamodule=dm, ckpt_path=ckpt, verbose=False, weights_only=True)[0]
        exit_code = 0
    finally:
        finish_wandb(trainer, exit_code)  # Lightning leaves the W&B run open; the next member must not reuse it
    metrics = {k.replace("/", "_"): float(v) for k, v in {**val, **test}.items()}
    return RunResult(
        test_acc=metrics["test_acc"],
        val_acc=metrics["val_acc"],
        run_dir=str(path),
        seconds=0.0,
        best_checkpoint=str(ckpt or ""),
        metrics=metrics,
        world_size=trainer.world_size,
        rank=trainer.global_rank,
    )
