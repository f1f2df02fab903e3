"""One trial of a sweep: a ``zoo.train`` run with the divergence guard on, and the callback that reports its
validation metric to its Optuna trial for the pruner."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L

if TYPE_CHECKING:
    import optuna


def run_trial(recipe_path: Path, overrides: list[str], run_dir: Path,
              callbacks: list | None = None) -> tuple[dict[str, float], str, float, int]:
    """Train one trial with the divergence guard on; (metrics, status, seconds, epochs trained). A trial a
    signal stopped after its first checkpoint goes on from there (its folder's recipe is the one it started
    with). ``callbacks``: Lightning callbacks of the trial (the pruner's report)."""
    from zoo.core.recipe import derive, load
    from zoo.monitoring.monitors import DivergenceWarning
    from zoo.training.run import train
    from zoo.training.run_folder import resumable

    stopped = resumable(run_dir) and not (run_dir / "metrics.json").exists()
    if not stopped:
        recipe = load(recipe_path, overrides)
        if not any(m.get("name") == "divergence" for m in recipe.monitors):
            recipe = derive(recipe, [], monitors=[*recipe.monitors, {"name": "divergence"}])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DivergenceWarning)
        if stopped:
            result = train(resume=run_dir, progress=False, callbacks=callbacks or ())
        else:
            result = train(recipe, run_dir=run_dir, overwrite=True, progress=False, callbacks=callbacks or ())
    diverged = any(issubclass(w.category, DivergenceWarning) for w in caught)
    for w in caught:  # pass the others on
        if not issubclass(w.category, DivergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    metrics = dict(result.metrics)
    metrics.setdefault("val_acc", result.val_acc)
    metrics.setdefault("test_acc", result.test_acc)
    epochs = next((c.epochs for c in callbacks or () if hasattr(c, "epochs")), 0)
    return metrics, "diverged" if diverged else "ok", result.seconds, epochs


class ReportToTrial(L.Callback):
    """Reports the validation metric to the trial after each validation; when the pruner says so, training
    stops at the end of that epoch (the run then ends normally: its test, metrics.json). Records the
    epochs trained."""

    def __init__(self, trial: optuna.Trial | None, key: str, prune: bool) -> None:
        self.trial, self.key, self.prune = trial, key, prune
        self.pruned = False
        self.epochs = 0

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.trial is None:
            return
        value = trainer.callback_metrics.get(self.key)
        if value is None or not math.isfinite(float(value)):
            return
        self.trial.report(float(value), step=trainer.current_epoch)
        # pruned means stopped early: after the last epoch the trial is simply finished
        last = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs > 0
        if self.prune and not last and self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True

    def on_fit_end(self, trainer, pl_module) -> None:
        self.epochs = int(trainer.current_epoch)


def reported_key(metric: str) -> str:
    """The per-epoch value the pruner compares: validation accuracy or loss, as the metric is one or the other."""
    return "val/loss" if metric.endswith("loss") else "val/acc"
