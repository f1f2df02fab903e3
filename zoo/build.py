"""The one place that turns resolved recipe sections into objects: data, network, optimizer, schedule."""

from __future__ import annotations

from typing import Any

from torch import nn

from zoo.registries import datasets, models, optimizers, schedules


def build_data(spec: dict[str, Any], seed: int = 0):
    """The recipe's data set as a zoo.data.DataModule."""
    dm = datasets.build(spec, "data")
    dm.seed = seed
    return dm


def build_network(spec: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The recipe's model (an nn.Module producing logits), not yet initialized."""
    return models.build(spec, "model", input_shape=tuple(input_shape), num_classes=num_classes)


def param_groups(net: nn.Module, decay_norm_and_bias: bool = False) -> list[dict[str, Any]]:
    """Parameters split so weight decay skips biases and norm scales (1-D tensors), which it only hurts."""
    if decay_norm_and_bias:
        return [{"params": [p for p in net.parameters() if p.requires_grad]}]
    decay, no_decay = [], []
    for p in net.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(spec: dict[str, Any], net: nn.Module, decay_norm_and_bias: bool = False):
    return optimizers.build(spec, "optimizer", params=param_groups(net, decay_norm_and_bias))


def build_schedule(spec: dict[str, Any], optimizer, total_steps: int, steps_per_epoch: int) -> dict[str, Any]:
    """A schedule in Lightning's lr_scheduler dict form."""
    return schedules.build(
        spec, "schedule", optimizer=optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch
    )
