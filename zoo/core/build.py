"""The one place that turns resolved recipe sections into objects: data, network, optimizer, schedule."""

from __future__ import annotations

from typing import Any

from torch import nn

from zoo.core.catalog import datasets, models, optimizers, schedules
from zoo.core.contracts import model_output_problem
from zoo.core.errors import ComponentError, ZooError

# The fewest samples each split may have: training needs two (batch norm cannot train on one sample, and
# one sample has no spread to standardize by); validation and test need one to be scored at all.
MIN_SPLIT_SIZES = {"train": 2, "val": 1, "test": 1}


def check_split_sizes(where: str, sizes: dict[str, int], hint: str = "") -> None:
    """Raise a ZooError when a split is below MIN_SPLIT_SIZES: ``where`` names the data, ``hint`` the fix."""
    short = [part for part, least in MIN_SPLIT_SIZES.items() if sizes.get(part, 0) < least]
    if not short:
        return
    counts = ", ".join(f"{part} {sizes.get(part, 0)}" for part in MIN_SPLIT_SIZES)
    need = ", ".join(f"{part} at least {MIN_SPLIT_SIZES[part]}" for part in short)
    message = f"{where} is too small for the split: {counts} samples (needs {need})"
    raise ZooError(message + (f"; {hint}" if hint else ""))


def build_data(spec: dict[str, Any], seed: int = 0):
    """The recipe's data set as a zoo.data.datamodule.DataModule, refused when a split is too small to use."""
    dm = datasets.build(spec, "data")
    # a data set may check itself with a better hint; this catches the ones that do not (third-party ones too)
    params = dict(spec) if isinstance(spec, dict) else {"name": spec}
    knobs = [f"data.{key}" for key in sorted(params) if key.startswith(("n_", "val_", "test_", "limit_"))]
    sizes = {part: len(getattr(dm, part)) for part in MIN_SPLIT_SIZES}
    hint = f"change {', '.join(knobs)}" if knobs else "use more data"
    check_split_sizes(f"data: {params.get('name')}", sizes, hint)
    classes = getattr(dm, "num_classes", 2)
    if classes < 2:
        raise ZooError(f"data: {params.get('name')} has {classes} class; a classifier needs at least 2 to tell apart")
    dm.seed = seed
    return dm


def build_network(spec: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The recipe's model (an nn.Module producing logits), not yet initialized.

    Checked on a sample batch before anything trains: a model whose output is not (batch, num_classes)
    logits is refused naming the model and its package (zoo.core.contracts.model_output_problem).
    """
    net = models.build(spec, "model", input_shape=tuple(input_shape), num_classes=num_classes)
    problem = model_output_problem(net, tuple(input_shape), num_classes)
    if problem:
        name = spec["name"] if isinstance(spec, dict) else spec
        raise ComponentError(f"model: {models.get(name).title} {problem}")
    return net


def param_groups(
    net: nn.Module, decay_norm_and_bias: bool = False, norm_and_bias_lr: float = 1.0
) -> list[dict[str, Any]]:
    """Parameters split so weight decay skips biases and norm scales (1-D tensors), which it only hurts.

    ``norm_and_bias_lr`` multiplies the learning rate of those 1-D tensors (``lr_scale`` in their group).
    """
    trained = [p for p in net.parameters() if p.requires_grad]
    if decay_norm_and_bias and norm_and_bias_lr == 1.0:
        return [{"params": trained}]
    weights = [p for p in trained if p.ndim > 1]
    vectors = [p for p in trained if p.ndim <= 1]
    groups = [{"params": weights}]
    if vectors:
        group: dict[str, Any] = {"params": vectors, "lr_scale": norm_and_bias_lr}
        if not decay_norm_and_bias:
            group["weight_decay"] = 0.0
        groups.append(group)
    return groups


def build_optimizer(
    spec: dict[str, Any], net: nn.Module, decay_norm_and_bias: bool = False, norm_and_bias_lr: float = 1.0
):
    optimizer = optimizers.build(spec, "optimizer", params=param_groups(net, decay_norm_and_bias, norm_and_bias_lr))
    for group in optimizer.param_groups:
        group["lr"] *= group.pop("lr_scale", 1.0)
    return optimizer


def build_schedule(spec: dict[str, Any], optimizer, total_steps: int, steps_per_epoch: int) -> dict[str, Any]:
    """A schedule in Lightning's lr_scheduler dict form."""
    return schedules.build(
        spec, "schedule", optimizer=optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch
    )
