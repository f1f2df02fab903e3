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
    from zoo.core.contracts import split_size

    sizes = {part: split_size(dm, part) for part in MIN_SPLIT_SIZES}
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


# Set on a parameter that finetune.freeze holds still for now: it stays in the optimizer (without a gradient
# the optimizer leaves it alone), so unfreezing it later changes no group and a resumed run loads the same
# state.
THAWS_LATER = "zoo_thaws_later"


def head_module(net: nn.Module) -> nn.Module | None:
    """The layer that gives the logits: timm's classifier, a model's ``head``, else its last Linear layer."""
    for owner in (net, getattr(net, "net", None)):
        if owner is not None and hasattr(owner, "get_classifier"):
            return owner.get_classifier()
    head = getattr(net, "head", None)
    if isinstance(head, nn.Module):
        return head
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def param_groups(
    net: nn.Module,
    decay_norm_and_bias: bool = False,
    norm_and_bias_lr: float = 1.0,
    backbone_lr_mult: float = 1.0,
) -> list[dict[str, Any]]:
    """Parameters split so weight decay skips biases and norm scales (1-D tensors), which it only hurts.

    ``norm_and_bias_lr`` multiplies the learning rate of those 1-D tensors (``lr_scale`` in their group);
    ``backbone_lr_mult`` that of every parameter outside the head (groups of their own).
    """
    trained = [p for p in net.parameters() if p.requires_grad or getattr(p, THAWS_LATER, False)]
    groups = _decay_groups(trained, decay_norm_and_bias, norm_and_bias_lr)
    if backbone_lr_mult == 1.0:
        return groups
    head = head_module(net)
    in_head = {id(p) for p in head.parameters()} if head is not None else set()
    split = []
    for group in groups:
        for is_head in (True, False):
            params = [p for p in group["params"] if (id(p) in in_head) == is_head]
            if params:
                scale = group.get("lr_scale", 1.0) * (1.0 if is_head else backbone_lr_mult)
                split.append({**group, "params": params, "lr_scale": scale})
    return split


def _decay_groups(
    trained: list[nn.Parameter], decay_norm_and_bias: bool, norm_and_bias_lr: float
) -> list[dict[str, Any]]:
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
    spec: dict[str, Any], net: nn.Module, decay_norm_and_bias: bool = False, norm_and_bias_lr: float = 1.0,
    backbone_lr_mult: float = 1.0,
):
    groups = param_groups(net, decay_norm_and_bias, norm_and_bias_lr, backbone_lr_mult)
    optimizer = optimizers.build(spec, "optimizer", params=groups)
    for group in optimizer.param_groups:
        group["lr"] *= group.pop("lr_scale", 1.0)
    return optimizer


def build_schedule(spec: dict[str, Any], optimizer, total_steps: int, steps_per_epoch: int) -> dict[str, Any]:
    """A schedule in Lightning's lr_scheduler dict form."""
    return schedules.build(
        spec, "schedule", optimizer=optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch
    )
