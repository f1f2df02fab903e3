"""Pre-flight checks from the babysitting advice: run them before spending hours training a recipe.

1. ``initial_loss``: with regularization off, the loss of an untrained model is about ln(C).
2. ``regularization``: turning the L2 penalty up raises that loss.
3. ``overfit``: with regularization off, 20 training examples are learnt to 100% accuracy by plain SGD.
4. ``gradients``: one backward pass reaches every parameter with a finite, non-zero gradient.

Every check builds the model through the recipe (the Classifier and its registries), so plugin
components and every model family take part the same way they would in training. Each check is a
function taking a :class:`Setup` and returning a :class:`CheckResult`; :func:`run` does all four.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.core.errors import ZooError
from zoo.core.recipe import Recipe, derive, load

# Regularization off, as the advice asks for the first three checks. Weight decay needs no entry:
# the overfit check drives its own optimizer, and the other checks never step one.
_PLAIN = ["regularization.l1=0", "regularization.l2=0", "regularization.label_smoothing=0"]

# Sampling noise in the mean loss of a few hundred examples is about 0.1 nat; an untrained model
# scoring well below ln(C) beyond that already knows the labels, which at initialization means a leak.
LOSS_BELOW = 0.25
# Random logits with std s raise the expected cross-entropy to about ln(C) + s^2 / 2 (Jensen: the
# log-sum-exp of zero-mean logits is at least ln C). Standard inits leave logits with std 1 to 2 on
# the zoo's models (the mlp's measure 1.2, resnet-20's 1.8), hence 2 nats of slack above: a logit
# std past 2 means the output layer starts overconfident, an init scale problem worth flagging.
LOSS_ABOVE = 2.0
# The checks draw on at most 256 training samples (overfit on --examples, 20 by default): of streamed data,
# this many are decoded
STREAMED_SAMPLES = 1024


@dataclass
class CheckResult:
    """One check's outcome, as a row of the report."""

    name: str
    passed: bool
    measured: str
    expected: str
    detail: str = ""

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


@dataclass
class Setup:
    """An initialized model with regularization off, and the training data the checks draw on."""

    recipe: Recipe  # regularization off, as the checks run it
    module: Any  # zoo.training.classifier.Classifier, initialized; checks work on copies
    x: torch.Tensor  # training inputs as the data set stores them (the model standardizes them)
    y: torch.Tensor
    num_classes: int
    init_sample: torch.Tensor  # what the model's initializer saw (data-dependent schemes need one)


def plain_recipe(recipe: Recipe, *, dropout: bool = True) -> Recipe:
    """``recipe`` with penalties, label smoothing and augmentation off (and dropout too when asked)."""
    overrides = list(_PLAIN)
    if not dropout and "dropout" in recipe.model:
        overrides.append("model.dropout=0")
    return derive(recipe, overrides, augment=[])


def _classifier(recipe: Recipe, input_shape, num_classes: int, mean, std):
    from zoo.training.classifier import Classifier

    module = Classifier(recipe.to_dict(), input_shape, num_classes)
    module.set_input_stats(mean, std)
    # Checks call the training step outside a Trainer, where logging has nowhere to go.
    module.log = lambda *args, **kwargs: None
    return module


def prepare(recipe: Recipe) -> Setup:
    """Build the data and an initialized model for ``recipe`` with regularization off, seeded by the recipe."""
    from zoo.core.build import build_data
    from zoo.data.datamodule import training_samples

    plain = plain_recipe(recipe)
    dm = build_data(plain.data, seed=plain.seed)
    sample = dm.sample()
    with torch.random.fork_rng(devices=[]):  # seeded like a run, without touching the caller's generator
        torch.manual_seed(plain.seed)
        module = _classifier(plain, dm.input_shape, dm.num_classes, dm.mean, dm.std)
        module.initialize(sample)
    train = training_samples(dm, STREAMED_SAMPLES)
    return Setup(plain, module, train.x, train.y, dm.num_classes, sample)


def without_dropout(setup: Setup) -> Setup:
    """The same setup with the model's dropout at 0 and, where the layout allows, the same weights."""
    if "dropout" not in setup.recipe.model or not setup.recipe.model["dropout"]:
        return setup
    recipe = plain_recipe(setup.recipe, dropout=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        module = _classifier(recipe, setup.module.input_shape, setup.num_classes,
                             setup.module.input_mean, setup.module.input_std)
        module.initialize(setup.init_sample)
    try:
        module.load_state_dict(setup.module.state_dict())
    except RuntimeError:
        pass  # dropout changed the parameter layout: keep the fresh, equally seeded initialization
    return Setup(recipe, module, setup.x, setup.y, setup.num_classes, setup.init_sample)


def _first_step_mode(module: nn.Module) -> nn.Module:
    """Train mode, so norm layers use batch statistics as the first training step does, but dropout off.

    In eval mode a fresh batch norm would apply its initial running statistics (mean 0, variance 1),
    which is no layer training ever sees; dropout off keeps the loss free of its noise.
    """
    module.train()
    for m in module.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    return module


def _train_loss(module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The loss the training step computes (penalties included), without changing any weight."""
    with torch.no_grad():
        return float(module._step((x, y), "train"))


def check_initial_loss(setup: Setup, batch: int = 256) -> CheckResult:
    """An untrained model with regularization off scores about ln(C) on a batch of training data."""
    module = _first_step_mode(copy.deepcopy(setup.module))
    loss = _train_loss(module, setup.x[:batch], setup.y[:batch])
    ln_c = math.log(setup.num_classes)
    low, high = ln_c - LOSS_BELOW, ln_c + LOSS_ABOVE
    passed = math.isfinite(loss) and low <= loss <= high
    detail = ""
    if not passed:
        if not math.isfinite(loss):
            detail = "the loss is not finite at initialization"
        elif loss > high:
            detail = "logits start too large: check the init scale of the last layers"
        else:
            detail = "the untrained model already predicts the labels: check for a label leak"
    return CheckResult(
        "initial_loss",
        passed,
        f"{loss:.3f}",
        f"ln({setup.num_classes}) = {ln_c:.3f}, within [{low:.2f}, {high:.2f}]",
        detail,
    )


def check_regularization(setup: Setup, batch: int = 256) -> CheckResult:
    """Raising the recipe's L2 penalty raises the initial training loss.

    The L2 strength is chosen so that the penalty on the model's own initial weights is ln(C), which
    should roughly double the loss; the check passes when at least half of that shows up.
    """
    module = _first_step_mode(copy.deepcopy(setup.module))
    x, y = setup.x[:batch], setup.y[:batch]
    weights = module.penalized()
    total = float(sum(w.detach().pow(2).sum() for w in weights)) if weights else 0.0
    if not weights:
        return CheckResult("regularization", False, "no penalized weights", "loss rises with l2",
                           "the model has no weights the L2 penalty applies to")
    if total <= 0:
        return CheckResult("regularization", False, "penalized weights all 0", "loss rises with l2",
                           "all-zero weights leave the L2 penalty nothing to grow on")
    target = math.log(setup.num_classes)
    l2 = target / total
    before = _train_loss(module, x, y)
    strong = _classifier(
        derive(setup.recipe, [f"regularization.l2={l2!r}"]),
        module.input_shape, setup.num_classes, module.input_mean, module.input_std,
    )
    strong.load_state_dict(module.state_dict())
    after = _train_loss(_first_step_mode(strong), x, y)
    rise = after - before
    passed = math.isfinite(rise) and rise >= 0.5 * target
    detail = "" if passed else "the training loss ignores regularization.l2"
    return CheckResult(
        "regularization",
        passed,
        f"{before:.3f} -> {after:.3f} (l2={l2:.2g})",
        f"rise >= {0.5 * target:.2f} (penalty {target:.2f})",
        detail,
    )


def check_overfit(setup: Setup, examples: int = 20, steps: int = 300, lr: float = 0.1) -> CheckResult:
    """Plain SGD on ``examples`` training examples, regularization off, reaches 100% training accuracy.

    Plain SGD (no momentum, no weight decay) as the advice says: a setup that needs an adaptive
    optimizer to memorize 20 examples has a problem worth knowing about. ``lr`` 0.1 memorizes the
    digits in a few steps with and without batch norm; should the loss blow up instead (a network
    without normalization, say) the run is retried at a tenth of the rate, then a hundredth. Runs in
    a plain loop, full batch, with the setup's dropout already set to 0.
    """
    x, y = setup.x[:examples], setup.y[:examples]
    tried = []
    for rate in (lr, lr / 10, lr / 100):
        # Dropout modules off too, in case a model has some its recipe cannot set to 0.
        module = _first_step_mode(copy.deepcopy(setup.module))
        inputs = module.standardize(x)
        optimizer = torch.optim.SGD(module.net.parameters(), lr=rate)
        acc, loss, step = 0.0, float("nan"), 0
        for step in range(steps + 1):
            logits = module(inputs)
            loss_t = F.cross_entropy(logits, y)
            loss = float(loss_t.detach())
            acc = float((logits.argmax(-1) == y).float().mean())
            if acc == 1.0 or not math.isfinite(loss) or step == steps:
                break
            optimizer.zero_grad(set_to_none=True)
            loss_t.backward()
            optimizer.step()
        tried.append(rate)
        if math.isfinite(loss):
            break
    passed = acc == 1.0
    measured = f"{acc:.0%} after {step} step{'' if step == 1 else 's'} (loss {loss:.3f})"
    detail = f"SGD lr={tried[-1]:g}"
    if len(tried) > 1:
        detail += f" (lr {', '.join(f'{r:g}' for r in tried[:-1])} diverged)"
    if not passed:
        detail += f"; a model that cannot memorize {len(y)} examples will not learn: check init symmetry, "
        detail += "gradient flow and the loss"
    return CheckResult("overfit", passed, measured, f"100% of {len(y)} within {steps} steps", detail)


def _names(names: list[str], limit: int = 5) -> str:
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _zero_gradients(module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    """The training loss on ``batch`` and each trainable parameter's gradient from it (None: not reached)."""
    module.zero_grad(set_to_none=True)
    loss = module._step(batch, "train")
    if loss.requires_grad:
        loss.backward()
    return loss, {n: p.grad for n, p in module.named_parameters() if p.requires_grad}


def check_gradients(setup: Setup, batch: int = 64) -> CheckResult:
    """One backward pass of the training loss gives every trainable parameter a finite, non-zero gradient.

    Some gradients are zero at initialization by design: a conv feeding a norm whose scale starts at
    zero (``zero_init_residual``) learns only once that scale has moved. So parameters with an
    all-zero gradient get a second look after one plain SGD step; those whose gradient then flows
    pass (and are named in the detail), those still at zero fail, as do missing and non-finite ones.
    """
    module = copy.deepcopy(setup.module).train()
    data = (setup.x[:batch], setup.y[:batch])
    loss, grads = _zero_gradients(module, data)
    if not grads:
        return CheckResult("gradients", False, "no trainable parameters", "all parameters", "")
    if not loss.requires_grad:
        return CheckResult("gradients", False, f"0/{len(grads)} reached", f"all {len(grads)} parameters",
                           "the loss does not depend on any parameter (is the model output detached?)")
    missing = [n for n, g in grads.items() if g is None]
    broken = [n for n, g in grads.items() if g is not None and not bool(torch.isfinite(g).all())]
    zero = [n for n, g in grads.items() if g is not None and n not in broken and not bool(g.any())]
    gated: list[str] = []
    if zero and not broken:
        torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1).step()
        _, later = _zero_gradients(module, data)
        gated = [n for n in zero if later[n] is not None and bool(later[n].any())]
        zero = [n for n in zero if n not in gated]
    bad = len(missing) + len(zero) + len(broken)
    notes = [
        f"{what}: {_names(names)}"
        for what, names in (("no gradient", missing), ("zero gradient", zero), ("non-finite gradient", broken))
        if names
    ]
    if gated:
        notes.append(f"zero at init, flowing after one step: {_names(gated)}")
    return CheckResult(
        "gradients",
        bad == 0,
        f"{len(grads) - bad}/{len(grads)} reached",
        f"all {len(grads)} parameters",
        "; ".join(notes),
    )


CHECKS: dict[str, Callable[..., CheckResult]] = {
    "initial_loss": check_initial_loss,
    "regularization": check_regularization,
    "overfit": check_overfit,
    "gradients": check_gradients,
}


def _guarded(name: str, fn: Callable[[], CheckResult]) -> CheckResult:
    # A model that breaks inside a check (a detached output, a shape error) is a failed check, not a
    # crash: the report should still show the others. Mistakes in the request itself propagate.
    try:
        return fn()
    except ZooError:
        raise
    except Exception as exc:  # noqa: BLE001
        return CheckResult(name, False, "error", "", f"{type(exc).__name__}: {exc}".splitlines()[0])


def run(
    recipe: str | Path | Recipe | None = None,
    overrides: Iterable[str] = (),
    *,
    steps: int = 300,
    lr: float = 0.1,
    examples: int = 20,
) -> list[CheckResult]:
    """All four checks on a recipe (path, name or resolved Recipe) with ``key=value`` overrides."""
    resolved = recipe if isinstance(recipe, Recipe) else load(recipe, overrides)
    if steps < 1 or not (math.isfinite(lr) and lr > 0) or examples < 1:
        raise ZooError(
            f"sanity: steps and examples must be at least 1 and lr above 0, got {steps}, {examples}, {lr}"
        )
    setup = prepare(resolved)
    results = [
        _guarded("initial_loss", lambda: check_initial_loss(setup)),
        _guarded("regularization", lambda: check_regularization(setup)),
    ]
    # The overfit check memorizes without dropout; the other checks keep the model as the recipe has it.
    bare = without_dropout(setup)
    results.append(_guarded("overfit", lambda: check_overfit(bare, examples=examples, steps=steps, lr=lr)))
    results.append(_guarded("gradients", lambda: check_gradients(setup)))
    return results


def format_table(results: list[CheckResult]) -> str:
    """The results as an aligned text table, details on indented lines under failing or notable rows."""
    header = ("check", "measured", "expected", "verdict")
    rows = [(r.name, r.measured, r.expected, r.verdict) for r in results]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(4)]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header]]
    lines.append("  ".join("-" * w for w in widths))
    for result, row in zip(results, rows):
        lines.append("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())
        if result.detail:
            lines.append(f"    {result.detail}")
    return "\n".join(lines)
