"""Built-in activations, registered the way any third-party plugin would register its own."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from zoo import activations
from zoo.core.errors import RegistryError


@activations.register("relu")
def relu() -> nn.Module:
    """Rectified linear unit, the default nonlinearity.

    f(x) = max(0, x); range [0, inf).
    Use as the baseline for almost anything; units that go negative for every input stop learning.
    Nair & Hinton 2010, "Rectified Linear Units Improve Restricted Boltzmann Machines".
    """
    return nn.ReLU()


@activations.register("leaky_relu")
def leaky_relu(negative_slope: float = 0.01) -> nn.Module:
    """ReLU with a small fixed slope for negative inputs.

    f(x) = x if x > 0 else negative_slope * x; range (-inf, inf).
    Use when dead ReLU units are a problem; the slope keeps a gradient flowing everywhere.
    Maas, Hannun & Ng 2013, "Rectifier Nonlinearities Improve Neural Network Acoustic Models".
    """
    return nn.LeakyReLU(negative_slope)


@activations.register("prelu")
def prelu(num_parameters: Annotated[int, Field(ge=1)] = 1, init: float = 0.25) -> nn.Module:
    """Leaky ReLU whose negative slope is learned.

    f(x) = x if x > 0 else a * x, a learned (one shared slope, or one per channel); range (-inf, inf).
    Use when you want the network to choose its own leak; num_parameters > 1 must equal the channel count.
    He et al. 2015, "Delving Deep into Rectifiers".
    """
    return nn.PReLU(num_parameters=num_parameters, init=init)


@activations.register("elu")
def elu(alpha: float = 1.0) -> nn.Module:
    """Exponential linear unit: smooth, saturating to -alpha for negative inputs.

    f(x) = x if x > 0 else alpha * (exp(x) - 1); range (-alpha, inf).
    Use when mean activations near zero help (no batch norm); costs an exp per element.
    Clevert, Unterthiner & Hochreiter 2015, "Fast and Accurate Deep Network Learning by ELUs".
    """
    return nn.ELU(alpha=alpha)


@activations.register("gelu")
def gelu(approximate: Literal["none", "tanh"] = "none") -> nn.Module:
    """Gaussian error linear unit, the transformer default.

    f(x) = x * Phi(x), Phi the standard normal CDF ("tanh" uses the tanh approximation); range (~-0.17, inf).
    Use in transformers and modern CNNs; smooth near zero, behaves like ReLU far from it.
    Hendrycks & Gimpel 2016, "Gaussian Error Linear Units (GELUs)".
    """
    return nn.GELU(approximate=approximate)


@activations.register("silu")
def silu() -> nn.Module:
    """Sigmoid linear unit (swish): x gated by its own sigmoid.

    f(x) = x * sigmoid(x); range (~-0.28, inf).
    Use as a smooth drop-in for ReLU (EfficientNet, many vision and language models).
    Ramachandran, Zoph & Le 2017, "Searching for Activation Functions"; Elfwing et al. 2017.
    """
    return nn.SiLU()


# Two names for one function: papers and code use both, and neither is wrong.
activations.register(silu, name="swish")


@activations.register("sigmoid")
def sigmoid() -> nn.Module:
    """Logistic sigmoid.

    f(x) = 1 / (1 + exp(-x)); range (0, 1).
    Use for gates and probabilities; as a hidden activation it saturates and is not zero-centred.
    """
    return nn.Sigmoid()


@activations.register("tanh")
def tanh() -> nn.Module:
    """Hyperbolic tangent.

    f(x) = (exp(x) - exp(-x)) / (exp(x) + exp(-x)); range (-1, 1), odd.
    Use where a bounded, zero-centred output matters (RNNs, small MLPs); saturates for large |x|.
    """
    return nn.Tanh()


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
    Use to learn a piecewise-linear convex activation, at k times the cost of the layer in front.
    Goodfellow et al. 2013, "Maxout Networks".
    """
    if k < 1:
        raise RegistryError(f"activation 'maxout': k must be at least 1 (the number of pieces), got {k}")
    return Maxout(k)


@activations.register("identity")
def identity() -> nn.Module:
    """No nonlinearity: returns its input.

    f(x) = x; range (-inf, inf).
    Use for linear baselines, or to see how much the nonlinearity buys.
    """
    return nn.Identity()
