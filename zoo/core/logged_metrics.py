"""The names of the metrics a zoo run logs while it trains, so that a callback monitoring a name no run logs
(EarlyStopping on `val_accuracy`) is refused with the recipe instead of at the first validation, after the
run folder was made.

These are what zoo.training.classifier logs (per split, `<split>/loss` and `<split>/acc`; training's step and
epoch loss), what its learning-rate monitor logs (`train/lr`, `train/lr/pg<i>` with several parameter
groups) and what zoo's own monitors log under their prefixes. tests/test_callbacks_loggers.py holds them
against the columns of a real run's logs/metrics.csv.
"""

from __future__ import annotations

import re
from typing import Any

# available to a callback from the first validation on (test/* is logged only after training)
TRAINING_METRICS = ("val/acc", "val/loss", "train/loss_step", "train/loss_epoch", "train/acc", "train/lr")
LEARNING_RATE_GROUP = re.compile(r"train/lr/pg\d+")
# zoo's own monitors (zoo.monitoring.monitors) and the prefixes of what each logs
MONITOR_PREFIXES = {
    "activations": ("activations/",),
    "update_ratio": ("update_ratio/", "grad_norm/"),
    "divergence": (),
}


def known_names(recipe: Any) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(exact names, prefixes) of every metric ``recipe``'s run can log, or None when a plugin's monitor may
    log names zoo cannot know (its callbacks under trainer.callbacks are checked by the caller)."""
    prefixes: tuple[str, ...] = ()
    for i, spec in enumerate(recipe.monitors):
        origin = recipe.provenance.get(f"monitors[{i}]", {})
        if origin.get("package") != "zoo" or spec.get("name") not in MONITOR_PREFIXES:
            return None
        prefixes += MONITOR_PREFIXES[spec["name"]]
    return TRAINING_METRICS, prefixes


def is_logged(name: str, names: tuple[str, ...], prefixes: tuple[str, ...]) -> bool:
    return name in names or name.startswith(prefixes) or LEARNING_RATE_GROUP.fullmatch(name) is not None
