"""The gains activations declare: what theory says they are, and what they do to a deep network.

The gain g of an activation f is the one with E[(f(g z) - f(0))^2] = 1 for z ~ N(0, 1)
(zoo.plugins.activations.unit_gain); here it is computed independently with scipy's adaptive
quadrature and root finder. Then a 12x512 MLP without normalization, He-initialized with each
declared gain, must keep its pre-activations' mean square within a factor 2 from first layer to last.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, stats
from torch import nn
from zoo.plugins.activations import maxout_gain, unit_gain

import zoo


def scipy_gain(f) -> float:
    def moment(g: float) -> float:
        return integrate.quad(lambda z: (f(g * z) - f(0.0)) ** 2 * stats.norm.pdf(z), -30, 30, points=[0], limit=400)[0]

    return optimize.brentq(lambda g: moment(g) - 1, 0.2, 5.0, xtol=1e-13)


FUNCTIONS = {
    "elu": lambda z: z if z > 0 else math.expm1(z),
    "elu_half": lambda z: z if z > 0 else 0.5 * math.expm1(z),
    "gelu": lambda z: z * stats.norm.cdf(z),
    "gelu_tanh": lambda z: 0.5 * z * (1 + math.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3))),
    "silu": lambda z: z / (1 + math.exp(-z)) if z > -700 else 0.0,
}
SPECS = {
    "elu": "elu",
    "elu_half": {"name": "elu", "alpha": 0.5},
    "gelu": "gelu",
    "gelu_tanh": {"name": "gelu", "approximate": "tanh"},
    "silu": "silu",
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_smooth_activations_declare_the_gain_that_solves_the_equation(name):
    declared = zoo.activations.build(SPECS[name]).gain
    assert declared == pytest.approx(scipy_gain(FUNCTIONS[name]), rel=1e-8)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_maxout_gain_follows_the_order_statistics_of_k_normals(k):
    second_moment = integrate.quad(
        lambda x: x * x * k * stats.norm.pdf(x) * stats.norm.cdf(x) ** (k - 1), -30, 30, points=[0]
    )[0]
    assert maxout_gain(k) == pytest.approx(1 / math.sqrt(second_moment), rel=1e-8)
    assert zoo.activations.build({"name": "maxout", "k": k}).gain == maxout_gain(k)
    assert maxout_gain(2) == 1.0  # exactly: E[max(z1, z2)^2] = 1 by symmetry


def test_relu_family_keeps_torchs_gains_exactly():
    assert zoo.activations.build("relu").gain == nn.init.calculate_gain("relu")
    leaky = zoo.activations.build({"name": "leaky_relu", "negative_slope": 0.2})
    assert leaky.gain == nn.init.calculate_gain("leaky_relu", 0.2)
    assert zoo.activations.build({"name": "prelu", "init": 0.3}).gain == nn.init.calculate_gain("leaky_relu", 0.3)
    # homogeneous: the equation's answer is He's
    assert unit_gain(torch.relu) == pytest.approx(math.sqrt(2), rel=1e-9)


def test_a_bounded_activation_has_no_such_gain():
    with pytest.raises(ValueError, match="bounded"):
        unit_gain(torch.tanh)


def growth(activation, init_activation=None, depth: int = 12, width: int = 512) -> float:
    """Mean square of the last hidden layer's pre-activations over the first's, He-initialized."""
    torch.manual_seed(0)
    spec = {"name": "mlp", "depth": depth, "width": width, "activation": activation, "norm": "none"}
    net = zoo.models.build(spec, input_shape=(64,), num_classes=10)
    zoo.initializers.build("kaiming_normal").apply(net, activation=init_activation or activation)
    squares: list[float] = []
    hooks = [
        m.register_forward_hook(lambda m, i, out: squares.append(out.pow(2).mean().item()))
        for m in net.modules()
        if isinstance(m, nn.Linear)
    ]
    with torch.no_grad():
        net(torch.randn(512, 64, generator=torch.Generator().manual_seed(1)))
    for hook in hooks:
        hook.remove()
    return squares[depth - 1] / squares[0]


@pytest.mark.parametrize(
    "activation",
    ["relu", "leaky_relu", "prelu", "elu", "gelu", "silu", "identity",
     {"name": "maxout", "k": 2}, {"name": "maxout", "k": 3}, {"name": "maxout", "k": 4}],
    ids=str,
)
def test_a_deep_mlp_keeps_its_scale_with_the_declared_gain(activation):
    assert 0.5 < growth(activation) < 2


def test_maxout_with_relus_gain_blows_up_as_the_issue_measured():
    # what `auto`/`kaiming` gave maxout before activations declared gains: sqrt(2) doubles the mean
    # square per layer for k = 2
    before = growth({"name": "maxout", "k": 2}, init_activation="relu")
    assert 1e3 < before < 1e4
    assert np.isclose(math.log2(before), 11, atol=0.5)  # 11 layers between the first and the twelfth
