"""Learning-rate schedules, stepped once per optimizer step."""

from __future__ import annotations

import math

import torch
from pydantic import Field
from typing_extensions import Annotated

from zoo import schedules

Steps = Annotated[int, Field(ge=0)]
Ratio = Annotated[float, Field(ge=0, le=1)]


def _per_step(optimizer, factor, total_steps: int):
    """Lightning's scheduler dict for a LambdaLR stepped every optimizer step."""
    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "interval": "step"}


def _with_warmup(factor, warmup_steps: int):
    if warmup_steps <= 0:
        return factor
    return lambda step: (step + 1) / warmup_steps if step < warmup_steps else factor(step - warmup_steps)


@schedules.register("constant")
def constant(optimizer, total_steps, steps_per_epoch, *, warmup_steps: Steps = 0):
    """The same learning rate throughout, after an optional linear warmup."""
    return _per_step(optimizer, _with_warmup(lambda step: 1.0, warmup_steps), total_steps)


@schedules.register("cosine")
def cosine(optimizer, total_steps, steps_per_epoch, *, warmup_steps: Steps = 0, min_ratio: Ratio = 0.0):
    """Cosine decay from the base rate to ``min_ratio`` of it over the run (Loshchilov & Hutter 2017)."""
    span = max(1, total_steps - warmup_steps)

    def factor(step: int) -> float:
        t = min(step, span) / span
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return _per_step(optimizer, _with_warmup(factor, warmup_steps), total_steps)
