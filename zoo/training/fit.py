"""Fitting one model: one Trainer in one run folder, its best checkpoint evaluated on val and test.

:func:`prepare_fit` builds and checks everything a fit needs (data, the initialized network, callbacks, the
Trainer) and writes nothing, so whoever owns the run folder claims it only once the recipe has passed every
check; :func:`run_fit` then adds the W&B logger and trains. :func:`fit_one` does both, for a folder that
exists already (an ensemble member's).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from zoo.core.errors import ZooError
from zoo.core.io import json_text
from zoo.core.recipe import Recipe

LAST_CHECKPOINT = "last.ckpt"


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
    diverged: str | None = None  # why the divergence guard stopped training early, if it did
    rank: int = field(default=0, repr=False)  # this process's global rank: only rank 0 reports

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        del out["rank"]
        return out

    def to_json(self) -> str:
        return json_text(self.summary(), sort_keys=True)


def _quiet_lightning() -> None:
    # Lightning's tips about GPUs, TPUs and workers are noise for a recipe run.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval")
    warnings.filterwarnings("ignore", message=r".*overridden `on_after_batch_transfer`")
    # a resumed run writes into its own folder on purpose (and the CSV logger appends, despite its warning)
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # the module's configure_model only converts or compiles the network it already has: no sharding to lose
    warnings.filterwarnings("ignore", message=r".*WeightAveraging callback with a model that overrides the configure_model")
    # evaluating the best checkpoint without the EMA callback is deliberate (see fit_one)
    warnings.filterwarnings("ignore", message=r".*callbacks used to create the checkpoint need to be provided")
    # the training loss is left unsynced across ranks on purpose: a sync per step would cost more than it tells
    warnings.filterwarnings("ignore", message=r".*It is recommended to use `self.log\('train/")


def make_trainer(
    recipe: Recipe,
    run_dir: Path,
    progress: bool | None = None,
    extra_callbacks: list | None = None,
    wandb_resume_id: str | None = None,
    *,
    wandb: bool = True,
    signals: Any | None = None,
):
    """The run's Trainer; ``wandb=False`` leaves the W&B logger out (:func:`attach_wandb` adds it later).

    ``signals``: the run owner's :class:`zoo.training.checkpoints.SignalStop`, if it installed one.
    """
    import lightning as L
    from lightning.fabric.plugins.environments import ClusterEnvironment

    from zoo.core.catalog import monitors
    from zoo.core.recipe_callbacks import build_callbacks
    from zoo.monitoring.monitors import DivergenceGuard
    from zoo.training.checkpoints import (
        AtomicCheckpointIO,
        ResumeState,
        RunCheckpoint,
        RunCSVLogger,
        StopOnSignal,
    )
    from zoo.training.slurm import cluster_environment
    from zoo.training.step_groups import LearningRateMonitor, ProgressBar

    kwargs: dict[str, Any] = recipe.trainer.model_dump()
    plugins = kwargs.pop("plugins", None) or []
    bar = kwargs.pop("enable_progress_bar")
    if progress is not None:
        bar = progress
    if bar is None:
        bar = sys.stderr.isatty()
    summary = kwargs.pop("enable_model_summary", bar)
    kwargs.pop("callbacks")  # the recipe's own Lightning callbacks, built below
    _check_devices(kwargs)
    listed = [monitors.build(spec, f"monitors[{i}]") for i, spec in enumerate(recipe.monitors)]
    extra = list(extra_callbacks or [])
    guard = next((m for m in [*listed, *extra] if isinstance(m, DivergenceGuard)), None)
    default_guard = None
    if guard is None and recipe.checkpoint.divergence_guard:
        spec: dict[str, Any] = {"name": "divergence"}
        if torch.cuda.is_available() and kwargs.get("accelerator") in ("auto", "gpu", "cuda"):
            # each check reads the losses back to the host, a sync that stalls a GPU's queue: check as
            # often as the loggers write (a bad step's update may then go through before the stop)
            spec["check_every_n_steps"] = recipe.trainer.log_every_n_steps
        guard = monitors.build(spec, "checkpoint.divergence_guard")
        default_guard = guard
        listed.append(guard)
    folder = run_dir / "checkpoints"
    from zoo.training.finetune import callbacks as finetune_callbacks

    callbacks = [
        RunCheckpoint(folder, recipe.checkpoint.every_n_epochs, guard=guard),
        ResumeState(),
        *finetune_callbacks(recipe),
        LearningRateMonitor(logging_interval="step"),
        *listed,
        *extra,
        *build_callbacks(recipe),
    ]
    if recipe.checkpoint.on_signal:
        callbacks.append(StopOnSignal(folder, signals))
    if bar:
        # redrawing the bar and reading the metrics after every batch cost the default recipe 14% of its
        # speed on a 2-core CPU (benchmarks/framework_overhead.py --progress-bar); every 10 batches, 2%
        callbacks.append(ProgressBar(refresh_rate=10))
    if recipe.ema is not None:
        from zoo.training.weight_averaging import EMA

        # validation runs on the average, checkpoints hold it as their weights (Lightning's callback, which
        # zoo's EMA keeps on the current weights until its first update)
        callbacks.append(
            EMA(
                decay=recipe.ema.decay,
                update_every_n_steps=recipe.ema.every_n_steps,
                update_starting_at_step=recipe.ema.start_step,
            )
        )
    plugins = [*(plugins if isinstance(plugins, list) else [plugins]), AtomicCheckpointIO()]
    if not any(isinstance(p, ClusterEnvironment) for p in plugins):
        plugins += cluster_environment()  # under SLURM: without Lightning's mid-step requeue checkpoint
    try:
        trainer = L.Trainer(
            **kwargs,
            default_root_dir=run_dir,
            plugins=plugins,
            logger=[RunCSVLogger(run_dir)],  # first, so trainer.log_dir stays run_dir/logs
            callbacks=callbacks,
            enable_progress_bar=bar,
            enable_model_summary=summary,
        )
    except Exception as exc:  # noqa: BLE001 - more devices than exist, an unknown strategy, a bad type, ...
        # every argument here comes from the recipe's trainer section (or is zoo's own, and those are fine):
        # whatever Lightning raises about them is the recipe's mistake
        raise ZooError(f"trainer: {type(exc).__name__}: {exc}") from None
    _group_steps(recipe, trainer, default_guard)
    if wandb:
        attach_wandb(trainer, recipe, run_dir, wandb_resume_id)
    return trainer


def attach_wandb(trainer, recipe: Recipe, run_dir: Path, resume_id: str | None = None) -> None:
    """Add the W&B logger and its extras to a trainer (nothing when logger.wandb.mode is disabled), and the
    recipe's other loggers (TensorBoard, MLflow, logger.extra).

    Separate from :func:`make_trainer` so that no logger exists until the run's folder is claimed; the
    W&B run itself starts later still, when ``fit`` sets up (on global rank 0 only).
    """
    from lightning.pytorch.callbacks import Checkpoint

    from zoo.monitoring.extra_loggers import recipe_loggers
    from zoo.monitoring.wandb_logging import WandbExtras, wandb_logger

    trainer.loggers = [*trainer.loggers, *recipe_loggers(recipe, run_dir)]
    logger = wandb_logger(recipe, run_dir, resume_id=resume_id)
    if logger is None:
        return
    trainer.loggers = [*trainer.loggers, logger]
    # before the checkpoint callbacks, where Lightning keeps them
    at = next((i for i, c in enumerate(trainer.callbacks) if isinstance(c, Checkpoint)), len(trainer.callbacks))
    trainer.callbacks.insert(at, WandbExtras(recipe, run_dir))


def _group_steps(recipe: Recipe, trainer, guard) -> None:
    """Fit the trainer to the steps per training step the run will take (zoo.training.step_groups)."""
    from zoo.training.step_groups import group_size

    group, note = group_size(recipe.to_dict(), trainer.world_size)
    if note and trainer.is_global_zero:
        print(f"zoo: {note}", file=sys.stderr)
    if group == 1:
        return
    trainer.gradient_clip_val = None  # the module clips each step; Lightning refuses to under manual optimization
    # step metrics are written when a group ends on a multiple of log_every_n_steps: rounded up to one
    if trainer.log_every_n_steps:
        trainer.log_every_n_steps = -(-trainer.log_every_n_steps // group) * group
    if guard is not None:
        # examined once per group: a check reads the losses back to the host, which on every step would
        # cost the default recipe about 1% of its speed
        guard.check_every_n_steps = max(group, guard.check_every_n_steps)
    # Lightning compares that interval with its count of training steps, which are groups here
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval")


def _check_devices(kwargs: dict[str, Any]) -> None:
    """Say plainly what Lightning or PyTorch would otherwise report deep inside a traceback."""
    if kwargs.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ZooError("trainer.accelerator: a GPU was asked for, but PyTorch sees no CUDA device here; use cpu or auto")
    devices, accelerator = kwargs.get("devices"), kwargs.get("accelerator")
    on_cpu = accelerator == "cpu" or (
        accelerator == "auto" and not torch.cuda.is_available() and not torch.backends.mps.is_available()
    )
    if on_cpu and isinstance(devices, int) and devices > 1:
        from zoo.data.datamodule import usable_cores

        cores = usable_cores()
        if devices > cores:
            # on the CPU each device is a whole training process; more than there are cores only thrashes
            raise ZooError(
                f"trainer.devices: {devices} CPU processes asked for, but only {cores} cores are available "
                f"here; on the CPU each device is a whole training process: use trainer.devices={cores} or fewer"
            )
    if kwargs.get("sync_batchnorm") and not torch.cuda.is_available():
        raise ZooError(
            "trainer.sync_batchnorm: PyTorch's SyncBatchNorm runs only on CUDA devices; drop it on the CPU "
            "(each process then normalizes over its own part of the batch)"
        )


def process_rank() -> int:
    """This process's rank as its launcher (torchrun, SLURM, Lightning) announced it; 0 when alone."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


@dataclass
class PreparedFit:
    """A fit built and checked, not started: what :func:`run_fit` trains."""

    recipe: Recipe
    data: Any
    module: Any
    trainer: Any


def prepare_fit(
    recipe: Recipe,
    path: Path,
    progress: bool | None = None,
    *,
    bootstrap_seed: int | None = None,
    callbacks: Iterable[Any] = (),
    signals: Any | None = None,
    resuming: bool = False,
) -> PreparedFit:
    """Build the data, the initialized model and the Trainer for ``path``; a mistake raises a ZooError.

    Nothing is written: the folder may not exist yet. ``resuming``: the weights come from the run's own
    checkpoint, so ``init_from`` is not loaded again.
    """
    import lightning as L

    from zoo.core.build import build_data
    from zoo.data.datamodule import Split
    from zoo.training.classifier import Classifier

    L.seed_everything(recipe.seed, workers=True, verbose=False)
    dm = build_data(recipe.data, seed=recipe.seed)
    if bootstrap_seed is not None and not hasattr(dm, "train"):
        raise ZooError(
            f"ensemble.bootstrap: the {recipe.data.get('name')} data set streams its images instead of holding them "
            "in memory, so its training split cannot be resampled for bagging; set ensemble.bootstrap=false"
        )
    if bootstrap_seed is not None:
        # a resample with replacement of the training split, as in bagging (Breiman 1996)
        gen = torch.Generator().manual_seed(bootstrap_seed)
        idx = torch.randint(0, len(dm.train), (len(dm.train),), generator=gen)
        dm.train = Split(dm.train.x[idx], dm.train.y[idx])
    if recipe.performance.steps_per_execution > 1 and not hasattr(dm, "steps_per_execution"):
        raise ZooError(
            f"data: {recipe.data.get('name')} gives a {type(dm).__name__}, not a zoo.data.datamodule.DataModule, which "
            f"performance.steps_per_execution={recipe.performance.steps_per_execution} needs to hand batches "
            "over in groups; set performance.steps_per_execution=1"
        )
    module = Classifier(recipe.to_dict(), dm.input_shape, dm.num_classes)
    if hasattr(dm, "train_box"):  # streamed data crops per image: the recipe's leading crop may run there
        from zoo.data.streaming import take_leading_box

        take_leading_box(module, dm)
    module.set_input_stats(dm.mean, dm.std)
    try:
        module.initialize(dm.sample())
    except ZooError:
        raise
    except Exception as exc:  # noqa: BLE001 - an initializer's parameters that its arithmetic refuses
        init = recipe.model.get("init")
        name = init.get("name") if isinstance(init, dict) else init
        raise ZooError(f"model.init: initializing the network with {name!r} failed: {type(exc).__name__}: {exc}") from None
    if recipe.init_from is not None and not resuming:
        from zoo.training.init_from import load_weights

        loaded = load_weights(module, recipe.init_from)
        if process_rank() == 0:
            print(f"zoo: {loaded}", file=sys.stderr)
    from zoo.training import finetune

    finetune.freeze(module.net, recipe.finetune.model_dump())
    _check_optimization(recipe, module, dm)
    trainer = make_trainer(recipe, path, progress, extra_callbacks=list(callbacks), wandb=False, signals=signals)
    finetune.check_world(recipe, trainer)
    return PreparedFit(recipe, dm, module, trainer)


def _check_optimization(recipe: Recipe, module: Any, dm: Any) -> None:
    """Build the optimizer and schedule once, as ``configure_optimizers`` will inside ``fit``, so that what
    they refuse is refused before the run folder exists. (The run's own are built there: they need the
    Trainer's count of steps, estimated here from the training split.)"""
    from zoo.core.build import build_optimizer, build_schedule

    optimizer = build_optimizer(recipe.optimizer, module.net, recipe.regularization.decay_norm_and_bias,
                                backbone_lr_mult=recipe.finetune.backbone_lr_mult)
    from zoo.core.contracts import split_size

    if not hasattr(dm, "train") and not hasattr(dm, "split_size"):
        return
    per_epoch = max(1, -(-split_size(dm, "train") // int(recipe.data.get("batch_size") or 1)))
    total = per_epoch * recipe.trainer.max_epochs
    if recipe.trainer.max_steps > 0:
        total = min(total, recipe.trainer.max_steps)
    build_schedule(recipe.schedule, optimizer, total, per_epoch)


def run_fit(
    prepared: PreparedFit, path: Path, *, ckpt_path: Path | None = None, wandb_resume_id: str | None = None
) -> RunResult:
    """Train a prepared fit in ``path`` (from ``ckpt_path`` when resuming) and evaluate its best checkpoint."""
    from lightning.pytorch.callbacks import WeightAveraging

    from zoo.monitoring.monitors import DivergenceGuard
    from zoo.monitoring.wandb_logging import finish_wandb

    trainer, module, dm = prepared.trainer, prepared.module, prepared.data
    attach_wandb(trainer, prepared.recipe, path, wandb_resume_id)
    exit_code = 1
    try:
        # weights_only: even our own checkpoint is read as tensors and plain containers, never code
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
        _check_trained(trainer)
        ckpt = trainer.checkpoint_callback.best_model_path or None
        # A weight-averaging callback would load a checkpoint's raw weights back for testing; without it
        # the checkpoint's weights, which are the averaged ones, are what gets evaluated.
        trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, WeightAveraging)]
        # our own checkpoint, but loaded the safe way all the same: tensors and plain containers only
        val = trainer.validate(module, datamodule=dm, ckpt_path=ckpt, verbose=False, weights_only=True)[0]
        test = trainer.test(module, datamodule=dm, ckpt_path=ckpt, verbose=False, weights_only=True)[0]
        exit_code = 0
    finally:
        finish_wandb(trainer, exit_code)  # Lightning leaves the W&B run open; the next member must not reuse it
    metrics = {k.replace("/", "_"): float(v) for k, v in {**val, **test}.items()}
    guard = next((c for c in trainer.callbacks if isinstance(c, DivergenceGuard) and c.stopped), None)
    return RunResult(
        test_acc=metrics["test_acc"],
        val_acc=metrics["val_acc"],
        run_dir=str(path),
        seconds=0.0,
        best_checkpoint=str(ckpt or ""),
        metrics=metrics,
        world_size=trainer.world_size,
        diverged=f"step {guard.stopped_step}: {guard.reason}" if guard is not None else None,
        rank=trainer.global_rank,
    )


def _check_trained(trainer) -> None:
    """Refuse to report an untrained network as a run's result: settings the recipe checks cannot see
    (a Trainer argument, a callback) may leave a run without a single optimizer step."""
    from zoo.monitoring.monitors import DivergenceGuard

    stopped = any(isinstance(c, DivergenceGuard) and c.stopped for c in trainer.callbacks)
    if trainer.global_step == 0 and not stopped:
        raise ZooError(
            "training took no optimizer step (check trainer.max_steps, trainer.max_time, trainer.limit_train_batches "
            "and the callbacks that stop training): the network is untrained, so there is no result to report"
        )


def fit_one(
    recipe: Recipe,
    path: Path,
    progress: bool | None = None,
    *,
    bootstrap_seed: int | None = None,
    callbacks: Iterable[Any] = (),
    ckpt_path: Path | None = None,
    wandb_resume_id: str | None = None,
    signals: Any | None = None,
) -> RunResult:
    """Train one model into the existing folder ``path`` (from ``ckpt_path`` when resuming) and evaluate it;
    ``signals``: the run owner's installed :class:`zoo.training.checkpoints.SignalStop`, if any."""
    prepared = prepare_fit(recipe, path, progress, bootstrap_seed=bootstrap_seed, callbacks=callbacks, signals=signals,
                           resuming=ckpt_path is not None)
    return run_fit(prepared, path, ckpt_path=ckpt_path, wandb_resume_id=wandb_resume_id)
