"""The catalog: zoo's public registries, one per kind of component. Plugins fill them; recipes draw on them.

Each registry's ``context`` names what the caller hands a factory; everything else is set in recipes.
Each registry's ``contract`` (zoo.core.contracts) checks what a factory returns; docs/plugins.md
writes both out for plugin authors.
"""

from zoo.core import contracts, discovery, registry
from zoo.core.registry import Registry

if discovery.load_plugins not in registry.before_lookup:
    registry.before_lookup.append(discovery.load_plugins)

activations = Registry(
    "activations",
    doc="Nonlinearities. A factory returns an nn.Module; one that widens its input (maxout) sets "
    "`width_factor` on the module so the layer before it produces that many times more features, and "
    "`gain` on the module tells initializers how to scale the layer before it (ReLU: sqrt(2)).",
    contract=contracts.activation,
)
normalizers = Registry(
    "normalizers",
    context=("num_features", "dim"),
    doc="Normalization layers, built for `num_features` channels of `dim`-dimensional data "
    "(0: feature vectors, 1: sequences, 2: images) by the model that asks.",
    contract=contracts.module,
)
initializers = Registry(
    "initializers",
    doc="Weight initialization schemes. A factory returns an object with "
    "`apply(model, activation=..., sample=...)` that initializes the model in place.",
    contract=contracts.initializer,
)
augmentations = Registry(
    "augmentations",
    doc="Batch augmentations applied on the training device.",
    contract=contracts.augmentation,
)
optimizers = Registry(
    "optimizers",
    context=("params",),
    doc="Optimizers, built over the model's parameter groups.",
    contract=contracts.optimizer,
)
schedules = Registry(
    "schedules",
    context=("optimizer", "total_steps", "steps_per_epoch"),
    doc="Learning-rate schedules. A factory returns a dict in Lightning's lr_scheduler format.",
    contract=contracts.schedule,
)
models = Registry(
    "models",
    context=("input_shape", "num_classes"),
    doc="Networks (nn.Module) mapping a batch of `input_shape` inputs to `num_classes` logits.",
    contract=contracts.module,
)
monitors = Registry(
    "monitors",
    doc="Training callbacks a recipe switches on under `monitors:` (activation statistics, update ratios, "
    "divergence guard). A factory returns a Lightning Callback.",
    contract=contracts.monitor,
)
datasets = Registry(
    "datasets",
    doc="Data sets. A factory returns a zoo.data.datamodule.DataModule.",
    contract=contracts.dataset,
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
