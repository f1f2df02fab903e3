"""The classic initialization experiment: watch activations and gradients through a deep, plain network.

Unit-Gaussian inputs (batch x width) go through ``depth`` linear layers of ``width`` units, each
followed by a registered activation, the weights set by a registered initializer (plugins' too).
Per layer it records the mean and std of the activations in the forward pass and of the gradients
in the backward pass, the saturated fraction (tanh, sigmoid) and the dead fraction (units at exactly
zero for the whole batch), and a histogram of the activations for the picture.

The loss for the backward pass is a random projection of the last layer, sum(out * g) with g
~ N(0, 1): its gradient at the output has unit std and no preferred sign, so what reaches the
earlier layers is what the layers themselves do to a gradient signal.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.core.errors import ZooError
from zoo.core.io import save_figure
from zoo.core.registry import Spec, split_spec

# The most numbers (weights and activations) the explorer holds: 1 GiB of float32.
MAX_NUMBERS = 2**28
# The thresholds of the saturation fraction, by activation name: how close to an asymptote counts.
SATURATION = {"tanh": "|a| > 0.99", "sigmoid": "a < 0.01 or a > 0.99"}


def saturated_fraction(name: str, a: torch.Tensor) -> float | None:
    """Fraction of activations pressed against an asymptote, where the local gradient is ~0 (None: no asymptote)."""
    if name == "tanh":
        return float((a.abs() > 0.99).float().mean())
    if name == "sigmoid":
        return float(((a < 0.01) | (a > 0.99)).float().mean())
    return None


def dead_fraction(a: torch.Tensor) -> float:
    """Fraction of units (dim 1) that are exactly zero for every sample: they pass no gradient at all."""
    per_unit = a.transpose(0, 1).reshape(a.shape[1], -1)
    return float((per_unit == 0).all(dim=1).float().mean())


@dataclass
class LayerStats:
    layer: int
    act_mean: float
    act_std: float
    saturated: float | None  # only for activations with asymptotes (tanh, sigmoid)
    dead: float
    grad_mean: float  # of d loss / d activation
    grad_std: float
    weight_grad_std: float


@dataclass
class Exploration:
    """One run of the experiment: the set-up and what each layer did."""

    activation: dict[str, Any]
    init: dict[str, Any]
    init_activation: dict[str, Any]
    depth: int
    width: int
    batch: int
    seed: int
    layers: list[LayerStats]
    histograms: list[tuple[list[float], list[float]]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("histograms")
        return out

    def column(self, key: str) -> list[float]:
        return [getattr(s, key) for s in self.layers]


def parse_spec(text: str | Spec, what: str) -> Spec:
    """A component spec from the command line: a bare name, or a YAML mapping (``{name: normal, std: 1.0}``)."""
    if not isinstance(text, str):
        return text
    import yaml

    from zoo.core.recipe import load_yaml

    try:
        value = load_yaml(text)
    except yaml.YAMLError:
        raise ZooError(
            f"--{what}: {text!r} is neither a name nor a YAML mapping like '{{name: normal, std: 1.0}}'"
        ) from None
    if isinstance(value, dict) and any(isinstance(k, str) and ":" in k for k in value):
        # '{name:normal}' is YAML for a key 'name:normal' with no value: flow mappings need ': '
        raise ZooError(f"--{what}: {text!r}: put a space after each colon, e.g. '{{name: normal, std: 1.0}}'")
    if isinstance(value, str | dict):
        return value
    raise ZooError(f"--{what}: expected a name or a mapping like '{{name: normal, std: 1.0}}', got {text!r}")


def explore(
    activation: Spec = "tanh",
    init: Spec = "xavier_normal",
    *,
    init_activation: Spec | None = None,
    depth: int = 10,
    width: int = 500,
    batch: int = 1000,
    seed: int = 0,
    bins: int = 50,
) -> Exploration:
    """Run the experiment and return per-layer statistics.

    ``init_activation`` is the activation the initializer computes its gain for (default: the
    network's). zoo's xavier and kaiming initializers scale by the activation's gain, so xavier
    before a ReLU is already He's init; the textbook Glorot (gain 1) that halves a ReLU net's
    variance at every layer is ``init_activation="identity"``.
    """
    from zoo.core.catalog import activations, initializers

    if depth < 1 or width < 1 or batch < 2:
        raise ZooError(
            f"init-explorer: depth and width must be at least 1 and batch at least 2, got {depth}, {width}, {batch}"
        )
    # every layer's weights and activations, each with its gradient, are held at once
    numbers = depth * width * (width + batch)
    if numbers > MAX_NUMBERS:
        raise ZooError(
            f"init-explorer: depth x width x (width + batch) = {numbers:,} numbers, more than the {MAX_NUMBERS:,} "
            "(1 GiB of float32, twice that with gradients) it may hold; make the net or the batch smaller"
        )
    act_spec = activations.validate(activation, "activation")
    init_spec = initializers.validate(init, "init")
    init_act_spec = activations.validate(activation if init_activation is None else init_activation, "init-activation")
    act_name, _ = split_spec(act_spec, "activation")

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, width, generator=gen)
    layers: list[nn.Module] = []
    linears: list[nn.Linear] = []
    # Initializers draw from the global generator: seed it for them, and leave the caller's as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(depth):
            act = activations.build(act_spec, "activation")
            # An activation that folds k units into one (maxout) needs k times the units in front of it.
            linear = nn.Linear(width, width * int(getattr(act, "width_factor", 1)))
            linears.append(linear)
            layers += [linear, act]
        net = nn.Sequential(*layers)
        initializers.build(init_spec, "init").apply(net, activation=init_act_spec, sample=x)

    outputs: list[torch.Tensor] = []
    h = x
    for i in range(0, len(layers), 2):
        h = layers[i + 1](layers[i](h))
        h.retain_grad()
        outputs.append(h)
    g = torch.randn(h.shape, generator=gen)
    (h * g).sum().backward()

    stats, histograms = [], []
    with torch.no_grad():
        for i, (a, linear) in enumerate(zip(outputs, linears), start=1):
            grad = a.grad
            stats.append(
                LayerStats(
                    layer=i,
                    act_mean=float(a.mean()),
                    act_std=float(a.std()),
                    saturated=saturated_fraction(act_name, a),
                    dead=dead_fraction(a),
                    grad_mean=float(grad.mean()),
                    grad_std=float(grad.std()),
                    weight_grad_std=float(linear.weight.grad.std()),
                )
            )
            lo, hi = _histogram_range(act_name, a)
            counts = torch.histc(a.float(), bins=bins, min=lo, max=hi)
            edges = torch.linspace(lo, hi, bins + 1)
            histograms.append((counts.tolist(), edges.tolist()))
    return Exploration(act_spec, init_spec, init_act_spec, depth, width, batch, seed, stats, histograms)


def _histogram_range(act_name: str, a: torch.Tensor) -> tuple[float, float]:
    # Bounded activations get their whole range, so a collapse shows as a spike at 0 and saturation
    # as two walls; unbounded ones get their own extent.
    if act_name == "tanh":
        return -1.0, 1.0
    if act_name == "sigmoid":
        return 0.0, 1.0
    lo, hi = float(a.min()), float(a.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi - lo < 1e-12:
        mid = lo if math.isfinite(lo) else 0.0
        return mid - 1e-6, mid + 1e-6
    return lo, hi


def format_table(result: Exploration) -> str:
    """Per-layer numbers as an aligned text table."""
    act = split_spec(result.activation, "activation")[0]
    sat_rule = SATURATION.get(act)
    head = (
        f"layer  {'act mean':>10}  {'act std':>10}  {'saturated':>9}  {'dead':>6}  "
        f"{'grad mean':>10}  {'grad std':>10}  {'dW std':>10}"
    )
    lines = [head, "-" * len(head)]
    for s in result.layers:
        sat = "-" if s.saturated is None else f"{s.saturated:.3f}"
        lines.append(
            f"{s.layer:>5}  {s.act_mean:>10.3e}  {s.act_std:>10.3e}  {sat:>9}  {s.dead:>6.3f}  "
            f"{s.grad_mean:>10.3e}  {s.grad_std:>10.3e}  {s.weight_grad_std:>10.3e}"
        )
    notes = ["grad: d loss / d activation for loss = sum(output * g), g ~ N(0, 1); dW: the layer's weight gradient"]
    if sat_rule:
        notes.append(f"saturated: {sat_rule}")
    notes.append("dead: units exactly 0 for the whole batch")
    return "\n".join(lines + notes)


def describe(result: Exploration) -> str:
    """A one-line summary of the set-up, used as the table's and the figure's title."""

    def short(spec: dict[str, Any]) -> str:
        name, params = split_spec(spec, "spec")
        args = ", ".join(f"{k}={v}" for k, v in params.items() if k != "bias" or v)
        return f"{name}({args})" if args else name

    gain = "" if result.init_activation == result.activation else f", gain for {short(result.init_activation)}"
    return (
        f"{result.depth} layers x {result.width} units, {short(result.activation)}, "
        f"init {short(result.init)}{gain}, "
        f"batch {result.batch}, seed {result.seed}"
    )


def plot(result: Exploration, path: str | Path, max_histograms: int = 10) -> Path:
    """Write a PNG: activation mean/std and gradient std per layer on top, activation histograms below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth = result.depth
    panels = min(depth, max_histograms)  # evenly spaced layers, first and last included
    shown = sorted({round(i * (depth - 1) / max(1, panels - 1)) for i in range(panels)})
    fig = plt.figure(figsize=(max(10, 1.6 * len(shown)), 6.5))
    grid = fig.add_gridspec(2, len(shown), height_ratios=[1.3, 1])
    half = max(1, len(shown) // 2)
    layers = [s.layer for s in result.layers]

    ax = fig.add_subplot(grid[0, :half])
    ax.plot(layers, result.column("act_mean"), "o-", label="mean")
    ax.plot(layers, result.column("act_std"), "s-", label="std")
    ax.set_xlabel("layer")
    ax.set_title("activations")
    ax.legend()
    ax.grid(alpha=0.3)

    ax = fig.add_subplot(grid[0, half:])
    grad_std = [max(v, 1e-30) for v in result.column("grad_std")]
    weight_std = [max(v, 1e-30) for v in result.column("weight_grad_std")]
    ax.semilogy(layers, grad_std, "o-", label="d loss / d activation")
    ax.semilogy(layers, weight_std, "s-", label="d loss / d weight")
    ax.set_xlabel("layer")
    ax.set_title("gradient std (log scale)")
    ax.legend()
    ax.grid(alpha=0.3)

    for col, index in enumerate(shown):
        counts, edges = result.histograms[index]
        ax = fig.add_subplot(grid[1, col])
        ax.stairs(counts, edges, fill=True)
        ax.set_title(f"layer {index + 1}\nstd {result.layers[index].act_std:.2g}", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    fig.suptitle(describe(result), fontsize=10)
    fig.tight_layout()
    try:
        return save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
