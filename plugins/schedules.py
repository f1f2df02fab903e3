"""Learning-rate schedules, stepped once per optimizer step, with their times given in epochs.

Every factory returns Lightning's lr_scheduler dict with ``interval: step``, so the rate changes
smoothly within an epoch rather than in jumps at epoch boundaries. Recipes say *when* in epochs,
which is how people reason about a run; epochs become optimizer steps through the caller's
``steps_per_epoch`` (rounded to whole steps).

Warmup. Every schedule but onecycle (whose first phase already is a warmup) takes
``warmup_epochs``: the rate rises linearly over that many epochs, evenly spaced from
``base/(W+1)`` to the base rate ``base`` reached on step ``W``, and then the schedule proper
runs on what is left of the run. Durations and rates in the schedule proper (step_size, the
restart cycle, decay per epoch, the span of cosine and linear) are counted from the end of the
warmup; ``milestones`` of multistep are points of the whole run, as a paper's "divide by 10 at
epochs 30 and 60" means.

Decays that reach an end value (cosine, linear, onecycle) reach it on the run's last step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import AfterValidator, Field
from torch.optim import lr_scheduler as sched
from typing_extensions import Annotated

from zoo import schedules
from zoo.core.errors import ZooError


def _positive_increasing(values: list[float]) -> list[float]:
    if values[0] <= 0 or any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"milestones must be positive and strictly increasing, got {values}")
    return values


Epochs = Annotated[float, Field(gt=0, description="a duration in epochs (may be fractional)")]
Warmup = Annotated[float, Field(ge=0, description="epochs of linear warmup")]
Ratio = Annotated[float, Field(ge=0, le=1)]
Decay = Annotated[float, Field(gt=0, le=1, description="multiplier applied to the rate")]
# Checked as a whole rather than per item so that `zoo list` shows a plain list[float].
Milestones = Annotated[list[float], Field(min_length=1), AfterValidator(_positive_increasing)]


# --- epochs to steps ---------------------------------------------------------------------------


def _steps(epochs: float, steps_per_epoch: int) -> int:
    """A duration in optimizer steps; never zero, since a zero-length period means nothing."""
    return max(1, round(epochs * steps_per_epoch))


def _warmup_steps(warmup_epochs: float, total_steps: int, steps_per_epoch: int) -> int:
    if warmup_epochs <= 0:
        return 0
    warmup = _steps(warmup_epochs, steps_per_epoch)
    if warmup >= total_steps:
        raise ZooError(
            f"schedule.warmup_epochs: a warmup of {warmup_epochs:g} epochs ({warmup} steps) leaves nothing "
            f"of the run's {total_steps} steps for the schedule; shorten it or train longer"
        )
    return warmup


def _base_lr(optimizer) -> float:
    """The one rate every group starts at; torch's eta_min is absolute, so a ratio needs a single base."""
    rates = {group.get("initial_lr", group["lr"]) for group in optimizer.param_groups}
    if len(rates) != 1:
        raise ValueError(
            "min_ratio is relative to one base rate, but the optimizer's groups have several: "
            f"{sorted(rates)}"
        )
    return rates.pop()


def _eta_min(optimizer, min_ratio: float) -> float:
    return min_ratio * _base_lr(optimizer) if min_ratio else 0.0


def _lightning(scheduler) -> dict[str, Any]:
    return {"scheduler": scheduler, "interval": "step"}


def _warmed(optimizer, main, warmup: int) -> dict[str, Any]:
    """``main`` with a linear warmup of ``warmup`` steps in front (``main`` already sized for the rest)."""
    if warmup == 0:
        return _lightning(main)
    # start_factor 1/(W+1) makes step i run at (i+1)/(W+1) of the base, and step W at the base itself,
    # so the ramp has no jump into the main schedule and never trains a step at rate zero.
    ramp = sched.LinearLR(optimizer, start_factor=1 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    return _lightning(sched.SequentialLR(optimizer, [ramp, main], milestones=[warmup]))


# --- the schedules -----------------------------------------------------------------------------


@schedules.register("constant")
def constant(optimizer, total_steps, steps_per_epoch, *, warmup_epochs: Warmup = 0.0):
    """The same learning rate throughout, after an optional linear warmup."""
    warmup = _warmup_steps(warmup_epochs, total_steps, steps_per_epoch)
    return _warmed(optimizer, sched.ConstantLR(optimizer, factor=1.0, total_iters=0), warmup)


@schedules.register("step", examples=[{"step_size": 2}])
def step_decay(
    optimizer,
    total_steps,
    steps_per_epoch,
    *,
    step_size: Epochs,
    gamma: Decay = 0.1,
    warmup_epochs: Warmup = 0.0,
):
    """Step decay: multiply the rate by gamma every step_size epochs (divide by 10 by default)."""
    warmup = _warmup_steps(warmup_epochs, total_steps, steps_per_epoch)
    main = sched.StepLR(optimizer, step_size=_steps(step_size, steps_per_epoch), gamma=gamma)
    return _warmed(optimizer, main, warmup)


@schedules.register("multistep", examples=[{"milestones": [1, 3]}])
def multistep(
    optimizer,
    total_steps,
    steps_per_epoch,
    *,
    milestones: Milestones,
    gamma: Decay = 0.1,
    warmup_epochs: Warmup = 0.0,
):
    """Multiply the rate by gamma at each epoch listed in milestones (He et al. 2016 used 2 drops by 10)."""
    warmup = _warmup_steps(warmup_epochs, total_steps, steps_per_epoch)
    at = [round(m * steps_per_epoch) for m in milestones]
    if at[0] <= warmup:
        raise ZooError(
            f"schedule.milestones: the first milestone (epoch {milestones[0]:g}) must come after the "
            f"warmup of {warmup_epochs:g} epochs"
        )
    if len(set(at)) < len(at):
        raise ZooError(
            f"schedule.milestones: {milestones} fall on the same step at {steps_per_epoch} steps per epoch"
        )
    # The main scheduler's clock starts when the warmup ends; the milestones are on the run's clock.
    main = sched.MultiStepLR(optimizer, milestones=[a - warmup for a in at], gamma=gamma)
    return _warmed(optimizer, main, warmup)


@schedules.register("exponential")
def exponential(optimizer, total_steps, steps_per_epoch, *, gamma: Decay = 0.95, warmup_epochs: Warmup = 0.0):
    """Exponential decay: the rate shrinks by a factor gamma per epoch, smoothly from step to step."""
    warmup = _warmup_steps(warmup_epochs, total_steps, steps_per_epoch)
    main = sched.ExponentialLR(optimizer, gamma=gamma ** (1 / steps_per_epoch))
    return _warmed(optimizer, main, warmup)


@schedules.register("cosine")
def cosine(optimizer, total_steps, steps_per_epoch, *, min_ratio: Ratio = 0.0, warmup_epochs: Warmup = 0.0):
    """Cosine decay from the base rate to min_ratio of it over the run (Loshchilov & Hutter 2017, SGDR)."""
    warmup = _warmup_steps(warmup_epochs, total_steps, steps_per_epoch)
    # T_max is one less than the steps left so that the last step runs at the minimum.
    span = max(1, total_steps - warmup - 1)
    main = sched.CosineAnnealingLR(optimizer, T_max=span, eta_min=_eta_min(optimizer, min_ratio))
    return _warmed(optimizer, main, warmup)


@schedules.register("cosine_restarts")
def cosine_restarts(
    optimizer,
    total_steps,
    steps_per_epoch,
    *,
    cycle_epochs: Epochs = 10,
    t_mult: Annotated[int, Field(ge=1)] = 1,
    min_ratio: Ratio = 0.0,
    warmup_epochs: Warmup = 0.0,
):
    """Cosine decay with warm restarts, each cycle t_mult times longer (SGDR, Loshchilov & Hutter 2017).

    Each cycle decays from the base rate to min_ratio of it over cycle_epochs (times t_mult per restart).
    """
    warmup = _warmup_steps(warmup_epochs, total_steps, steps_per_epoch)
    main = sched.CosineAnnealingWarmRestarts(
        optimizer,
        T_0=_steps(cycle_epochs, steps_per_epoch),
        T_mult=t_mult,
        eta_min=_eta_min(optimizer, min_ratio),
    )
    return _warmed(optimizer, main, warmup)


@schedules.register("onecycle")
def onecycle(
    optimizer,
    total_steps,
    steps_per_epoch,
    *,
    pct_start: Annotated[float, Field(gt=0, lt=1)] = 0.3,
    div_factor: Annotated[float, Field(ge=1)] = 25.0,
    final_div_factor: Annotated[float, Field(ge=1)] = 1e4,
    cycle_momentum: bool = False,
):
    """One cycle (Smith & Topin 2019): up to the optimizer's lr over pct_start of the run, then far below it.

    The rate starts at lr/div_factor, peaks at the optimizer's lr, and ends at
    lr/(div_factor*final_div_factor), cosine-shaped both ways. Momentum is cycled the other way
    (0.95 to 0.85 and back) only if ``cycle_momentum`` is set: by default the optimizer keeps the
    momentum its recipe gave it, and optimizers without momentum work too.
    """
    if cycle_momentum and not {"momentum", "betas"} & set(optimizer.defaults):
        raise ZooError(f"schedule.cycle_momentum: {type(optimizer).__name__} has no momentum to cycle")
    main = sched.OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],
        total_steps=total_steps,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        cycle_momentum=cycle_momentum,
    )
    return _lightning(main)


@schedules.register("linear")
def linear(optimizer, total_steps, steps_per_epoch, *, end_ratio: Ratio = 0.0, warmup_epochs: Warmup = 0.0):
    """Linear decay from the base rate to end_ratio of it over the run."""
    warmup = _warmup_steps(warmup_epochs, total_steps, steps_per_epoch)
    span = max(1, total_steps - warmup - 1)
    main = sched.LinearLR(optimizer, start_factor=1.0, end_factor=end_ratio, total_iters=span)
    return _warmed(optimizer, main, warmup)


# --- restart bookkeeping -----------------------------------------------------------------------


def cycle_ends(spec: Any, total_steps: int, steps_per_epoch: int) -> list[int]:
    """How many optimizer steps have been taken when each complete cosine_restarts cycle ends.

    ``spec`` is the recipe's schedule spec (a mapping without ``name`` is read as cosine_restarts
    parameters). The values are ``trainer.global_step`` at a cycle's end: the moment to take a
    snapshot, since the next step already runs at the restarted rate. A cycle cut short by the end
    of the run is not listed.
    """
    if isinstance(spec, Mapping) and "name" not in spec:
        spec = {"name": "cosine_restarts", **spec}
    params = schedules.validate(spec, "schedule")
    if params["name"] != "cosine_restarts":
        raise ZooError(f"schedule: cycle ends exist only for cosine_restarts, not for {params['name']!r}")
    # The same conversions the factory uses, so the two cannot disagree.
    end = _warmup_steps(params["warmup_epochs"], total_steps, steps_per_epoch)
    length = _steps(params["cycle_epochs"], steps_per_epoch)
    ends = []
    while end + length <= total_steps:
        end += length
        ends.append(end)
        length *= params["t_mult"]
    return ends


# A schedule with restarts says where its cycles end; snapshot ensembles take a member at each one.
cosine_restarts.cycle_ends = cycle_ends
