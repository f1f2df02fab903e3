"""The catalog: zoo's public registries, one per kind of component. Plugins fill them; recipes draw on them.

Each registry's ``context`` names what the caller hands a factory; everything else is set in recipes.
"""

from zoo.core import discovery, registry
from zoo.core.registry import Registry

if discovery.load_plugins not in registry.before_lookup:
    registry.before_lookup.append(discovery.load_plugins)

activations = Registry(
    "activations",
    doc="Nonlinearities. A factory returns an nn.Module; one that widens its input (maxout) sets "
    "`width_factor` on the module so the layer before it produces that many times more features.",
)
normalizers = Registry(
    "normalizers",
    context=("num_features", "dim"),
    doc="Normalization layers, built for `num_features` channels of `dim`-dimensional data "
    "(0: feature vectors, 1: sequences, 2: images) by the model that asks.",
)
initializers = Registry(
    "initializers",
    doc="Weight initialization schemes. A factory returns an object with "
    "`apply(model, activation=..., sample=...)` that initializes the model in place.",
)
augmentations = Registry(
    "augmentations",
    doc="Batch augmentations applied on the training device.",
)
optimizers = Registry(
    "optimizers",
    context=("params",),
    doc="Optimizers, built over the model's parameter groups.",
)
schedules = Registry(
    "schedules",
    context=("optimizer", "total_steps", "steps_per_epoch"),
    doc="Learning-rate schedules. A factory returns a dict in Lightning's lr_scheduler format.",
)
models = Registry(
    "models",
    context=("input_shape", "num_classes"),
    doc="Networks (nn.Module) mapping a batch of `input_shape` inputs to `num_classes` logits.",
)
monitors = Registry(
    "monitors",
    doc="Training callbacks a recipe switches on under `monitors:` (activation statistics, update ratios, "
    "divergence guard). A factory returns a Lightning Callback.",
)
datasets = Registry(
    "datasets",
    doc="Data sets. A factory returns a zoo.data.datamodule.DataModule.",
)

__all__ = [
    "activations",
    "normalizers",
    "initializers",
    "augmentations",
    "optimizers",
    "schedules",
    "models",
    "monitors",
    "datasets",
]
