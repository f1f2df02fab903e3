"""Training monitors a recipe switches on under ``monitors:``; thin wrappers over zoo.monitoring.monitors' callbacks."""

from __future__ import annotations

from pydantic import Field
from typing_extensions import Annotated

from zoo.core.catalog import monitors

Every = Annotated[int, Field(ge=1)]


@monitors.register("activations")
def activations(*, every_n_steps: Every = 100, threshold: Annotated[float, Field(gt=0.5, lt=1)] = 0.99):
    """Per-layer activation mean/std, saturation (tanh, sigmoid) and dead-unit (ReLU family) fractions.

    Measured every ``every_n_steps`` steps; a unit counts as saturated where |tanh| or the sigmoid's
    distance from 0.5, scaled to 1, exceeds ``threshold``.
    """
    from zoo.monitoring.monitors import ActivationStats

    return ActivationStats(every_n_steps=every_n_steps, threshold=threshold)


@monitors.register("update_ratio")
def update_ratio(
    *,
    every_n_steps: Every = 100,
    low: Annotated[float, Field(gt=0)] = 1e-4,
    high: Annotated[float, Field(gt=0)] = 1e-2,
    patience: Annotated[int, Field(ge=1)] = 3,
):
    """Per-layer gradient norm and update/weight ratio (healthy: about 1e-3); warns outside [low, high].

    Measured every ``every_n_steps`` steps; the warning comes after ``patience`` measurements in a row outside.
    """
    from zoo.monitoring.monitors import UpdateRatio

    return UpdateRatio(every_n_steps=every_n_steps, band=(low, high), patience=patience)


@monitors.register("divergence")
def divergence(
    *,
    factor: Annotated[float, Field(gt=1)] = 3.0,
    check_every_n_steps: Every = 1,
    detect_anomaly: bool = False,
):
    """Stops training when the loss is NaN/inf or above ``factor`` x the initial loss, and says why.

    Looks every ``check_every_n_steps`` steps; ``detect_anomaly`` turns on torch's anomaly detection to
    name the operation that first produced a NaN (slow).
    """
    from zoo.monitoring.monitors import DivergenceGuard

    return DivergenceGuard(factor=factor, check_every_n_steps=check_every_n_steps, detect_anomaly=detect_anomaly)
