"""zoo: a PyTorch Lightning model zoo assembled from plugin components.

Importing ``zoo`` is cheap: torch and Lightning load only when something is built or trained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo.core.catalog import (
    activations,
    augmentations,
    datasets,
    initializers,
    models,
    monitors,
    normalizers,
    optimizers,
    schedules,
)
from zoo.core.errors import ZooError
from zoo.core.registry import ActivationSpec, Component, InitSpec, NormSpec, Registry, Seed, Spec

if TYPE_CHECKING:
    from zoo.export.load import Predictor
    from zoo.training.fit import RunResult

__version__ = "0.1.0"


def train(recipe=None, overrides=(), **options) -> RunResult:
    """Train a recipe (path, or None for the default) with ``key=value`` overrides; see zoo.training.run.train."""
    from zoo.training.run import train as _train

    return _train(recipe, overrides=overrides, **options)


def load(path, plugins=()) -> Predictor:
    """A trained model ready to predict, from a run folder, a checkpoint or a ``zoo export`` folder; see
    zoo.export.load.load. ``model.predict(images)`` takes a uint8 tensor (N, C, H, W) or image file paths."""
    from zoo.export.load import load as _load

    return _load(path, plugins)


def load_recipe(recipe=None, overrides=()):
    """The fully resolved recipe as a plain dict; see zoo.core.recipe.load."""
    from zoo.core.recipe import load

    return load(recipe, overrides).to_dict()


__all__ = [
    "ActivationSpec",
    "Component",
    "InitSpec",
    "NormSpec",
    "Registry",
    "Seed",
    "Spec",
    "ZooError",
    "activations",
    "augmentations",
    "datasets",
    "initializers",
    "load",
    "load_recipe",
    "models",
    "monitors",
    "normalizers",
    "optimizers",
    "schedules",
    "train",
]
