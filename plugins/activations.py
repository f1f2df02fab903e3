"""Built-in activations, registered the way any third-party plugin would register its own.

Each module carries ``gain``: the factor by which initializers scale the weights of the layer in front
of it (zoo's initializers read it; see docs/plugins.md). The gain g that keeps signals steady through
a deep stack from standardized inputs solves E[f(g z)^2] = 1 for z ~ N(0, 1) (:func:`unit_gain`; every
built-in has f(0) = 0):
sqrt(2) for ReLU, the value He et al. derived. ReLU, leaky ReLU, tanh, sigmoid and identity keep
torch.nn.init.calculate_gain's values (for tanh and sigmoid, which never reach second moment 1, those
are conventions). ELU, GELU and SiLU get the solution of that equation, found numerically; maxout's
follows from the order statistics of k Gaussians.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from zoo import activations
from zoo.core.errors import RegistryError


def with_gain(module: nn.Module, gain: float) -> nn.Module:
    """``module`` with ``gain`` set on it: what initializers scale the layer in front of it by."""
    module.gain = float(gain)
    return module


def unit_gain(fn: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """The gain g with E[(fn(g z) - fn(0))^2] = 1 for z ~ N(0, 1): what keeps an elementwise activation's layers at unit scale.

    A He-initialized layer (Var(W) = g^2 / fan_in) fed inputs of second moment 1 gives pre-activations of
    variance g^2; this g makes the activation hand the next layer second moment 1 again, from the first
    layer on (the data are standardized). For a positively homogeneous fn (ReLU, leaky ReLU, maxout) it is
    1 / sqrt(E[fn(z)^2]); for ELU, GELU and SiLU the two differ, and this one is the fixed point a stack
    starting from standardized inputs actually sits at. A constant offset fn(0) (softplus, squareplus) is
    left out: it carries no signal, and counting it would let tiny weights pass for a healthy scale.
    Found by bisection on log g, each expectation by the trapezoid rule on a float64 grid over [-12, 12]
    (24,001 points): it agrees with scipy's adaptive quadrature and root finder to 1e-9
    (tests/test_activation_gains.py). ``fn`` must accept float64 tensors; a bounded fn (tanh, sigmoid)
    never reaches 1 and raises ValueError.
    """
    z = torch.linspace(-12.0, 12.0, 24_001, dtype=torch.float64)
    density = torch.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    with torch.no_grad():
        offset = fn(torch.zeros(1, dtype=torch.float64))

    def second_moment(gain: float) -> float:
        with torch.no_grad():
            return torch.trapezoid((fn(gain * z) - offset).pow(2) * density, z).item()

    low, high = -10.0, 10.0  # log gains
    if second_moment(math.exp(high)) < 1:
        raise ValueError("no gain gives this activation unit second moment: it is bounded")
    for _ in range(80):
        mid = (low + high) / 2
        low, high = (mid, high) if second_moment(math.exp(mid)) < 1 else (low, mid)
    return math.exp((low + high) / 2)


@functools.cache
def _measured_gain(kind: str, *args) -> float:
    """unit_gain of an nn activation class built with ``args``, once per process: models build one per layer."""
    return unit_gain(getattr(nn, kind)(*args))


@functools.cache
def maxout_gain(k: int) -> float:
    """1 / sqrt(E[max(z_1..z_k)^2]) for k independent standard normals.

    k = 1 is the identity and k = 2 is exactly 1: max^2 + min^2 = z_1^2 + z_2^2 and, z being symmetric,
    max and -min have one distribution, so E[max^2] = 1. Beyond, the density of the maximum,
    k phi(z) Phi(z)^(k-1), is integrated numerically: k = 3 gives 0.885, k = 4 0.803.
    """
    if k <= 2:
        return 1.0
    z = torch.linspace(-12.0, 12.0, 24_001, dtype=torch.float64)
    density = torch.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    second_moment = torch.trapezoid(z * z * k * density * cdf ** (k - 1), z).item()
    return 1.0 / math.sqrt(second_moment)


@activations.register("relu")
def relu() -> nn.Module:
    """Rectified linear unit, the default nonlinearity.

    f(x) = max(0, x); range [0, inf); gain sqrt(2).
    Use as the baseline for almost anything; units that go negative for every input stop learning.
    Nair & Hinton 2010, "Rectified Linear Units Improve Restricted Boltzmann Machines".
    """
    return with_gain(nn.ReLU(), nn.init.calculate_gain("relu"))


@activations.register("leaky_relu")
def leaky_relu(negative_slope: float = 0.01) -> nn.Module:
    """ReLU with a small fixed slope for negative inputs.

    f(x) = x if x > 0 else negative_slope * x; range (-inf, inf); gain sqrt(2 / (1 + negative_slope^2)).
    Use when dead ReLU units are a problem; the slope keeps a gradient flowing everywhere.
    Maas, Hannun & Ng 2013, "Rectifier Nonlinearities Improve Neural Network Acoustic Models".
    """
    return with_gain(nn.LeakyReLU(negative_slope), nn.init.calculate_gain("leaky_relu", negative_slope))


@activations.register("prelu")
def prelu(num_parameters: Annotated[int, Field(ge=1)] = 1, init: float = 0.25) -> nn.Module:
    """Leaky ReLU whose negative slope is learned.

    f(x) = x if x > 0 else a * x, a learned (one shared slope, or one per channel); range (-inf, inf).
    Gain sqrt(2 / (1 + init^2)), leaky ReLU's at the slope training starts from (the paper's choice);
    the slope then moves, and the gain with it.
    Use when you want the network to choose its own leak; num_parameters > 1 must equal the channel count.
    He et al. 2015, "Delving Deep into Rectifiers".
    """
    module = nn.PReLU(num_parameters=num_parameters, init=init)
    return with_gain(module, nn.init.calculate_gain("leaky_relu", init))


@activations.register("elu")
def elu(alpha: float = 1.0) -> nn.Module:
    """Exponential linear unit: smooth, saturating to -alpha for negative inputs.

    f(x) = x if x > 0 else alpha * (exp(x) - 1); range (-alpha, inf); gain g with E[f(g z)^2] = 1,
    1.278 for alpha = 1 (with ReLU's sqrt(2), a 12x512 MLP's last pre-activations had 3.9x the first's
    mean square; with this, 1.0x).
    Use when mean activations near zero help (no batch norm); costs an exp per element.
    Clevert, Unterthiner & Hochreiter 2015, "Fast and Accurate Deep Network Learning by ELUs".
    """
    return with_gain(nn.ELU(alpha=alpha), _measured_gain("ELU", alpha))


@activations.register("gelu")
def gelu(approximate: Literal["none", "tanh"] = "none") -> nn.Module:
    """Gaussian error linear unit, the transformer default.

    f(x) = x * Phi(x), Phi the standard normal CDF (``approximate: tanh`` uses the tanh approximation);
    range (~-0.17, inf).
    Gain g with E[f(g z)^2] = 1: 1.468 (a 12x512 MLP's last pre-activations had 0.28x the first's mean
    square with ReLU's sqrt(2); 1.25x with this).
    Use in transformers and modern CNNs; smooth near zero, behaves like ReLU far from it.
    Hendrycks & Gimpel 2016, "Gaussian Error Linear Units (GELUs)".
    """
    return with_gain(nn.GELU(approximate=approximate), _measured_gain("GELU", approximate))


@activations.register("silu")
def silu() -> nn.Module:
    """Sigmoid linear unit (swish): x gated by its own sigmoid.

    f(x) = x * sigmoid(x); range (~-0.28, inf); gain g with E[f(g z)^2] = 1: 1.559 (a 12x512 MLP's last
    pre-activations had 0.008x the first's mean square with ReLU's sqrt(2); 1.5x with this).
    Use as a smooth drop-in for ReLU (EfficientNet, many vision and language models).
    Ramachandran, Zoph & Le 2017, "Searching for Activation Functions"; Elfwing et al. 2017.
    """
    return with_gain(nn.SiLU(), _measured_gain("SiLU"))


# Two names for one function: papers and code use both, and neither is wrong.
activations.register(silu, name="swish")


@activations.register("sigmoid")
def sigmoid() -> nn.Module:
    """Logistic sigmoid.

    f(x) = 1 / (1 + exp(-x)); range (0, 1); gain 1 (torch's convention).
    Use for gates and probabilities; as a hidden activation it saturates and is not zero-centred.
    """
    return with_gain(nn.Sigmoid(), nn.init.calculate_gain("sigmoid"))


@activations.register("tanh")
def tanh() -> nn.Module:
    """Hyperbolic tangent.

    f(x) = (exp(x) - exp(-x)) / (exp(x) + exp(-x)); range (-1, 1), odd; gain 5/3 (torch's convention,
    close to the 1.59 of 1 / sqrt(E[tanh(z)^2])).
    Use where a bounded, zero-centred output matters (RNNs, small MLPs); saturates for large |x|.
    """
    return with_gain(nn.Tanh(), nn.init.calculate_gain("tanh"))


class Maxout(nn.Module):
    """Max over ``k`` consecutive channels of dim 1: (B, k*n, ...) -> (B, n, ...).

    Output unit j takes the max of input channels j*k ... j*k + k - 1, the grouping of the
    original paper's implementation.
    """

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        # Read by the model: the layer in front of this one must be k times wider.
        self.width_factor = k
        # Read by initializers. ReLU's sqrt(2) would double the mean square per layer for k = 2.
        self.gain = maxout_gain(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        if channels % self.k:
            raise ValueError(
                f"maxout with k={self.k} needs a width on dim 1 divisible by {self.k}, got {channels} "
                f"(input shape {tuple(x.shape)}); build the layer in front {self.k} times wider"
            )
        pieces = x.reshape(x.shape[0], channels // self.k, self.k, *x.shape[2:])
        return pieces.amax(dim=2)

    def extra_repr(self) -> str:
        return f"k={self.k}"


@activations.register("maxout")
def maxout(k: int = 2) -> nn.Module:
    """Maxout: the max of k linear pieces per unit; makes the layer before it k times wider.

    f(x)_j = max_i x_{j*k + i}, i < k, over dim 1 (features or channels); range (-inf, inf).
    Gain 1 / sqrt(E[max of k standard normals ^2]): exactly 1 for k = 2, 0.885 for 3, 0.803 for 4 (a
    12x512 MLP's last pre-activations had 1.7e3x the first's mean square with ReLU's sqrt(2) for k = 2,
    2.8e5x for k = 4; 0.84x and 1.09x with these).
    Use to learn a piecewise-linear convex activation, at k times the cost of the layer in front.
    Goodfellow et al. 2013, "Maxout Networks".
    """
    if k < 1:
        raise RegistryError(f"activation 'maxout': k must be at least 1 (the number of pieces), got {k}")
    return Maxout(k)


@activations.register("identity")
def identity() -> nn.Module:
    """No nonlinearity: returns its input.

    f(x) = x; range (-inf, inf); gain 1.
    Use for linear baselines, or to see how much the nonlinearity buys.
    """
    return with_gain(nn.Identity(), 1.0)
