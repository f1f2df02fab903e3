"""Learning-rate range test (Smith 2017): train a few steps while the lr grows exponentially, watch the loss.

The test runs the recipe's own model and optimizer (built through the registries, weight decay and
parameter groups as in training) in a plain loop without a Lightning Trainer: step ``i`` of
``steps`` uses ``lr = min_lr * (max_lr / min_lr) ** (i / (steps - 1))``, set on every parameter
group before the step. Batches of the recipe's batch size are drawn in a seeded random order from
the recipe's training split, cycling through it as often as needed. Augmentation is *off* (the
test measures how fast the optimizer can descend, and augmentation only adds noise to that); the
recipe's penalties (l1/l2, label smoothing) and dropout stay on, as the training loss has them.
The schedule is not used: the sweep is the schedule.

The loss is smoothed by an exponential moving average with bias correction
(``avg = beta * avg + (1 - beta) * loss``; ``smoothed = avg / (1 - beta ** (i + 1))``), with
``beta = 1 - 10 / steps`` (clipped to [0.7, 0.98]; 0.9 for 100 steps) so the average spans about a
tenth of the sweep and does not lag behind the loss by decades of lr; the
test stops early once the smoothed loss exceeds ``diverge`` (4) x the best smoothed loss so far, or
turns NaN/inf.

Suggestion: the lr at the **steepest negative slope** of the smoothed loss against log10(lr),
searched between the first tenth of the sweep (where the average is still settling) and the
minimum of the smoothed loss. The lr at the minimum divided by 10 is reported too
(``min_lr_div10``), as the other common rule.

With ``lr_scaling.reference_batch_size`` the rate applied is the recipe's ``optimizer.lr`` times
``batch_size / reference_batch_size`` (one process, as measured here); the suggestion is given as
the ``optimizer.lr`` to write, i.e. divided by that factor again.

Under DDP this runs on one process only: the test is cheap and its answer does not depend on the
number of devices beyond the lr scaling above.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from zoo.core.errors import ZooError
from zoo.core.io import save_figure
from zoo.core.recipe import Recipe, apply_override, derive, load, parse_override


# Averaging over about a tenth of the sweep: fastai's fixed 0.98 averages over 50 steps, which on a
# 100-step sweep lags the raw loss by three decades of lr (the suggestion lands far too late).
def default_beta(steps: int) -> float:
    return min(0.98, max(0.7, 1 - 10 / steps))


DIVERGE = 4.0


@dataclass
class LRFindResult:
    """The sweep as measured, and the suggested ``optimizer.lr``."""

    suggestion: float  # steepest descent of the smoothed loss, as the recipe's optimizer.lr
    min_lr_div10: float  # lr at the minimum smoothed loss / 10, as the recipe's optimizer.lr
    lrs: list[float] = field(default_factory=list)  # rates applied, one per step taken
    losses: list[float] = field(default_factory=list)  # raw training losses
    smoothed: list[float] = field(default_factory=list)  # bias-corrected EMA of the losses
    stopped_early: bool = False
    steps_run: int = 0
    optimizer: str = ""
    scale: float = 1.0  # lr applied / optimizer.lr (lr_scaling)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _lr_factor(recipe: Recipe) -> float:
    reference = recipe.lr_scaling.reference_batch_size
    if not reference:
        return 1.0
    accumulate = int((recipe.trainer.model_extra or {}).get("accumulate_grad_batches", 1) or 1)
    return int(recipe.data.get("batch_size", 1)) * accumulate / reference


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float, float]:
    """(lr at the steepest negative slope of ``smoothed`` vs log10(lr), lr at the minimum / 10)."""
    finite = [i for i, v in enumerate(smoothed) if math.isfinite(v)]
    if len(finite) < 3:
        raise ZooError("lr-find: too few finite losses to suggest a rate; lower --min or raise --steps")
    n = finite[-1] + 1
    best = min(range(n), key=lambda i: smoothed[i] if math.isfinite(smoothed[i]) else math.inf)
    start = max(1, n // 10)
    logs = [math.log10(v) for v in lrs[:n]]
    slope_at = None
    steepest = 0.0
    for i in range(start, max(start + 1, best + 1)):
        if i + 1 >= n:
            break
        slope = (smoothed[i + 1] - smoothed[i - 1]) / (logs[i + 1] - logs[i - 1])
        if math.isfinite(slope) and slope < steepest:
            steepest, slope_at = slope, i
    if slope_at is None:  # the loss never went down: the best we can say is where it was lowest
        slope_at = best
    return lrs[slope_at], lrs[best] / 10


def lr_find(
    recipe: str | Path | Recipe | None = None,
    overrides: Iterable[str] = (),
    *,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    steps: int = 100,
    beta: float | None = None,
    diverge: float = DIVERGE,
) -> LRFindResult:
    """Run the range test on a recipe; see the module docstring for what exactly it does."""
    from zoo.core.build import build_data, build_optimizer
    from zoo.data.datamodule import training_samples
    from zoo.training.classifier import Classifier

    if not (0 < min_lr < max_lr):
        raise ZooError(f"lr-find: need 0 < --min < --max, got {min_lr:g} and {max_lr:g}")
    if steps < 3:
        raise ZooError(f"lr-find: --steps must be at least 3, got {steps}")
    resolved = recipe if isinstance(recipe, Recipe) else load(recipe, overrides)
    resolved = derive(resolved, [], augment=[])
    beta = default_beta(steps) if beta is None else beta
    factor = _lr_factor(resolved)
    dm = build_data(resolved.data, seed=resolved.seed)
    batch = int(resolved.data.get("batch_size", 64))
    # of streamed data, samples spread over it, decoded: fresh batches for the whole sweep where that stays
    # within 4,096 (at 224x224, 600 MB of pixels), else the sweep goes over them more than once
    train = training_samples(dm, min(steps * batch, 4096))
    x, y = train.x, train.y
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(resolved.seed)
        module = Classifier(resolved.to_dict(), dm.input_shape, dm.num_classes)
        module.set_input_stats(dm.mean, dm.std)
        module.initialize(dm.sample())
        module.log = lambda *args, **kwargs: None  # no Trainer to log to
        module.train()
        optimizer = build_optimizer(
            resolved.optimizer, module.net, resolved.regularization.decay_norm_and_bias,
            resolved.lr_scaling.norm_and_bias,
        )
        gen = torch.Generator().manual_seed(resolved.seed)
        order = torch.randperm(len(x), generator=gen)
        pos = 0
        result = LRFindResult(0.0, 0.0, optimizer=resolved.optimizer["name"], scale=factor)
        avg, best = 0.0, math.inf
        for i in range(steps):
            lr = min_lr * (max_lr / min_lr) ** (i / (steps - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            if pos + batch > len(order):
                order, pos = torch.randperm(len(x), generator=gen), 0
            idx = order[pos : pos + batch]
            pos += batch
            loss_t = module._step((x[idx], y[idx]), "train")
            loss = float(loss_t.detach())
            avg = beta * avg + (1 - beta) * loss
            smooth = avg / (1 - beta ** (i + 1))
            result.lrs.append(lr)
            result.losses.append(loss)
            result.smoothed.append(smooth)
            if not math.isfinite(smooth) or (i > 0 and smooth > diverge * best):
                result.stopped_early = True
                break
            best = min(best, smooth)
            optimizer.zero_grad(set_to_none=True)
            loss_t.backward()
            optimizer.step()
    result.steps_run = len(result.lrs)
    steep, at_min = suggest(result.lrs, result.smoothed)
    result.suggestion, result.min_lr_div10 = steep / factor, at_min / factor
    return result


def plot(result: LRFindResult, out: str | Path, title: str = "") -> Path:
    """Loss (raw and smoothed) against lr on a log axis, with the suggestion marked, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    applied = [v / result.scale for v in result.lrs]  # as optimizer.lr, like the suggestion
    finite = [v for v in result.smoothed if math.isfinite(v)]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(applied, result.losses, color="0.75", lw=0.8, label="loss")
    ax.plot(applied, result.smoothed, color="C0", label="smoothed loss")
    ax.axvline(result.suggestion, color="C3", ls="--", label=f"suggestion {result.suggestion:.2g}")
    ax.set_xscale("log")
    if finite:
        ax.set_ylim(min(finite) * 0.9, max(finite[: max(1, len(finite) // 10)]) * 1.2)
    ax.set_xlabel("optimizer.lr")
    ax.set_ylabel("training loss")
    ax.set_title(title or f"lr range test ({result.optimizer})")
    ax.legend()
    fig.tight_layout()
    try:
        return save_figure(fig, out, dpi=100)
    finally:
        plt.close(fig)


def lr_recipe_path(recipe_path: str | Path) -> Path:
    """Where ``--write`` puts the recipe with the suggested learning rate: ``<name>.lr.yaml`` beside it."""
    path = Path(recipe_path)
    return path.with_name(f"{path.stem}.lr.yaml")


def write_recipe(recipe_path: str | Path, lr: float, overrides: Iterable[str] = (), overwrite: bool = False) -> Path:
    """Write ``<name>.lr.yaml`` next to the recipe: ``base:`` the original, the overrides, and ``optimizer.lr``.

    The original file is never edited (its comments and layout stay as they are); an existing
    ``<name>.lr.yaml`` is replaced only with ``overwrite``.
    """
    import yaml

    from zoo.core.io import atomic_write_text

    path = Path(recipe_path)
    out = lr_recipe_path(path)
    if out.exists() and not overwrite:
        raise ZooError(f"{out} exists already; pass --overwrite to replace it")
    data: dict[str, Any] = {"base": path.name}
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(data, keys, value)
    apply_override(data, ["optimizer", "lr"], float(f"{lr:.3g}"))
    header = f"# {path.name} with the learning rate suggested by `zoo lr-find {path.name}`\n"
    try:
        atomic_write_text(out, header + yaml.safe_dump(data, sort_keys=False))
    except OSError as exc:
        raise ZooError(f"{out}: cannot write: {exc.strerror or exc}") from None
    return out
