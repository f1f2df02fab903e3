"""The Lightning callbacks a recipe lists under ``trainer.callbacks``, and the extra loggers under ``logger.extra``.

Both are built from their entries (zoo.core.class_paths) when the recipe is validated, so that a mistake is
refused before a run folder exists; the run builds them again from its recipe, a resumed run from its run
folder's recipe, and Lightning gives each callback its state back from the checkpoint (EarlyStopping's
count of epochs without improvement and best score among them).

Callbacks that would fight zoo's own are refused: zoo writes the checkpoints, draws the progress bar, prints
the model summary, logs the learning rate, averages the weights (``ema:``) and stops a diverging run itself,
and the recipe says the learning rate and batch size (no tuner changes them behind its back).
"""

from __future__ import annotations

from typing import Any

from zoo.core.class_paths import construct
from zoo.core.errors import RecipeError, did_you_mean

CALLBACKS_MODULE = "lightning.pytorch.callbacks"
LOGGERS_MODULE = "lightning.pytorch.loggers"


def build_callbacks(recipe: Any, where: str = "recipe") -> list[Any]:
    """The recipe's ``trainer.callbacks``, built, each checked against zoo's own callbacks and the others."""
    from lightning.pytorch.callbacks import Callback, WeightAveraging

    built: list[Any] = []
    averaging = recipe.ema is not None
    for i, entry in enumerate(recipe.trainer.callbacks):
        at = f"{where}: trainer.callbacks[{i}]"
        callback = construct(entry, at, Callback, CALLBACKS_MODULE)
        problem = _conflict(callback)
        if isinstance(callback, WeightAveraging):
            if averaging:
                problem = "the weights are averaged already (ema:, or an earlier entry); a run keeps one average"
            averaging = True
        same = next((j for j, other in enumerate(built) if _state_key(other) == _state_key(callback)), None)
        if problem is None and same is not None and _state_key(callback) is not None:
            problem = (f"its checkpointed state would collide with trainer.callbacks[{same}]'s (the same class and "
                       "settings): list it once")
        if problem:
            raise RecipeError(f"{at}: {type(callback).__name__}: {problem}")
        built.append(callback)
    _check_monitored_metrics(recipe, built, where)
    return built


def _check_monitored_metrics(recipe: Any, callbacks: list[Any], where: str) -> None:
    """Refuse an EarlyStopping that monitors a metric no zoo run logs; Lightning would say so only at the
    first validation. Checked only where every metric name is known: no plugin's callback or monitor, which
    may log names of their own."""
    from lightning.pytorch.callbacks import EarlyStopping

    from zoo.core.class_paths import TRUSTED_PACKAGES
    from zoo.core.logged_metrics import is_logged, known_names

    if any(type(c).__module__.split(".")[0] not in TRUSTED_PACKAGES for c in callbacks):
        return
    known = known_names(recipe)
    if known is None:
        return
    names, prefixes = known
    for i, callback in enumerate(callbacks):
        if isinstance(callback, EarlyStopping) and not is_logged(callback.monitor, names, prefixes):
            raise RecipeError(
                f"{where}: trainer.callbacks[{i}]: EarlyStopping: monitor {callback.monitor!r} is not a "
                f"metric zoo logs{did_you_mean(callback.monitor, names)}; zoo logs {', '.join(names)}"
                + (f" and {', '.join(p + '...' for p in prefixes)}" if prefixes else "")
            )


def _state_key(callback: Any) -> str | None:
    """The key Lightning keeps a callback's checkpointed state under; None for a callback with no state."""
    return callback.state_key if callback.state_dict() else None


def _conflict(callback: Any) -> str | None:
    """Why ``callback`` cannot run beside zoo's own callbacks, or None."""
    from lightning.pytorch.callbacks import (
        BackboneFinetuning,
        BatchSizeFinder,
        Checkpoint,
        LearningRateFinder,
        LearningRateMonitor,
        ModelSummary,
        ProgressBar,
        SpikeDetection,
        StochasticWeightAveraging,
    )

    if isinstance(callback, Checkpoint):
        return ("zoo writes checkpoints/last.ckpt and best.ckpt itself (checkpoint.every_n_epochs), and resumes and "
                "evaluates from those; a second checkpoint callback is not needed")
    if isinstance(callback, StochasticWeightAveraging):
        return ("its average replaces the weights only after the last epoch, while zoo tests best.ckpt, written "
                "before, so the average would never be evaluated; use lightning.pytorch.callbacks.WeightAveraging "
                "(an equal average of the weights of every step, validated, saved and tested) or ema:")
    if isinstance(callback, ProgressBar):
        return "zoo draws its own progress bar (trainer.enable_progress_bar)"
    if isinstance(callback, ModelSummary):
        return "zoo prints the model summary itself (trainer.enable_model_summary)"
    if isinstance(callback, LearningRateMonitor):
        return "zoo logs the learning rate of every parameter group itself (train/lr)"
    if isinstance(callback, SpikeDetection):
        return ("zoo's divergence guard stops a run whose loss spikes, keeping the last good checkpoint "
                "(checkpoint.divergence_guard; a divergence monitor under monitors: sets its limits)")
    if isinstance(callback, BackboneFinetuning):
        return "it trains a module's `backbone`, and zoo's models have none (subclass BaseFinetuning in a plugin)"
    if isinstance(callback, (LearningRateFinder, BatchSizeFinder)):
        return ("it would change the learning rate or batch size behind the recipe's back (recipe.yaml would no "
                "longer say what was trained, and a resumed run would search again); use zoo lr-find")
    return None


def build_extra_loggers(recipe: Any, where: str = "recipe") -> list[Any]:
    """The recipe's ``logger.extra``: Lightning loggers besides logs/metrics.csv, W&B, TensorBoard and MLflow."""
    from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

    sections = {WandbLogger: "logger.wandb", TensorBoardLogger: "logger.tensorboard", MLFlowLogger: "logger.mlflow"}
    built = []
    for i, entry in enumerate(recipe.logger.extra):
        at = f"{where}: logger.extra[{i}]"
        logger = construct(entry, at, Logger, LOGGERS_MODULE)
        section = next((name for cls, name in sections.items() if isinstance(logger, cls)), None)
        if section is not None:
            raise RecipeError(f"{at}: {type(logger).__name__}: use the {section} section, which keeps a resumed run "
                              "in the same place")
        if isinstance(logger, CSVLogger):
            raise RecipeError(f"{at}: CSVLogger: zoo writes logs/metrics.csv itself")
        built.append(logger)
    return built


# the packages each optional logger needs (any one of them), all in zoo's `loggers` extra
LOGGER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "mlflow": ("mlflow",)}


def check(recipe: Any, where: str) -> None:
    """Refuse a recipe whose callbacks or loggers cannot be built or would fight zoo's own."""
    import importlib.util

    for section, packages in LOGGER_PACKAGES.items():
        if getattr(recipe.logger, section).enabled and not any(importlib.util.find_spec(p) for p in packages):
            raise RecipeError(
                f"{where}: logger.{section}.enabled: the {packages[0]} package is not installed "
                "(pip install 'zoo[loggers]')"
            )
    if recipe.trainer.callbacks:
        build_callbacks(recipe, where)
    if recipe.logger.extra:
        build_extra_loggers(recipe, where)
