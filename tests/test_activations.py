"""The built-in activations, built through the real registry the way a recipe builds them."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from zoo import activations
from zoo.core.errors import RegistryError

BUILTINS = [
    "relu", "leaky_relu", "prelu", "elu", "gelu", "silu", "swish", "sigmoid", "tanh", "maxout", "identity",
]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_every_builtin_is_registered_with_a_summary():
    assert set(BUILTINS) <= set(activations.names())
    for name in BUILTINS:
        summary = activations.get(name).summary
        assert summary and len(summary) < 110, name


@pytest.mark.parametrize("name", BUILTINS)
def test_builds_from_a_bare_name_and_passes_gradient(name):
    act = activations.build(name)
    assert isinstance(act, nn.Module)
    x = torch.randn(4, 6, requires_grad=True)
    out = act(x)
    width = 6 // getattr(act, "width_factor", 1)
    assert out.shape == (4, width)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", [n for n in BUILTINS if n != "maxout"])
def test_only_maxout_widens(name):
    assert getattr(activations.build(name), "width_factor", 1) == 1


def test_relu_zeros_negatives():
    x = torch.tensor([-3.0, -0.5, 0.0, 0.5, 3.0])
    assert torch.equal(activations.build("relu")(x), torch.tensor([0.0, 0.0, 0.0, 0.5, 3.0]))


@pytest.mark.parametrize("slope", [0.01, 0.2])
def test_leaky_relu_slope_on_negatives(slope):
    spec = "leaky_relu" if slope == 0.01 else {"name": "leaky_relu", "negative_slope": slope}
    act = activations.build(spec)
    neg = -torch.rand(100) - 0.1
    pos = torch.rand(100) + 0.1
    torch.testing.assert_close(act(neg) / neg, torch.full_like(neg, slope))
    assert torch.equal(act(pos), pos)


def test_prelu_slope_is_learned():
    act = activations.build({"name": "prelu", "init": 0.3})
    (slope,) = list(act.parameters())
    assert slope.requires_grad and slope.item() == pytest.approx(0.3)
    x = -torch.rand(16) - 0.5
    torch.testing.assert_close(act(x), 0.3 * x)
    opt = torch.optim.SGD(act.parameters(), lr=0.1)
    act(x).sum().backward()
    opt.step()
    # d/da sum(a * x) = sum(x) over the negatives, so the step moves the slope by -lr * sum(x).
    assert slope.item() == pytest.approx(0.3 - 0.1 * x.sum().item(), rel=1e-5)
    assert slope.item() != pytest.approx(0.3)


def test_prelu_per_channel():
    act = activations.build({"name": "prelu", "num_parameters": 3})
    assert act.weight.shape == (3,)
    assert act(torch.randn(2, 3, 4, 4)).shape == (2, 3, 4, 4)


@pytest.mark.parametrize("alpha", [1.0, 1.5])
def test_elu_negative_limit_is_minus_alpha(alpha):
    act = activations.build({"name": "elu", "alpha": alpha})
    assert act(torch.tensor([-50.0])).item() == pytest.approx(-alpha)
    assert act(torch.tensor([-1.0])).item() == pytest.approx(alpha * (math.exp(-1) - 1))
    assert act(torch.tensor([2.0])).item() == pytest.approx(2.0)


def test_gelu_matches_its_formula():
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    phi = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    torch.testing.assert_close(activations.build("gelu")(x), x * phi)
    approx = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    torch.testing.assert_close(activations.build({"name": "gelu", "approximate": "tanh"})(x), approx)


@pytest.mark.parametrize("name", ["silu", "swish"])
def test_silu_and_swish_match_their_formula(name):
    x = torch.linspace(-8, 8, 101, dtype=torch.float64)
    torch.testing.assert_close(activations.build(name)(x), x * torch.sigmoid(x))


def test_swish_is_silu():
    assert activations.get("swish").obj is activations.get("silu").obj


def test_sigmoid_range():
    x = torch.linspace(-10, 10, 201)
    y = activations.build("sigmoid")(x)
    assert (y > 0).all() and (y < 1).all()
    assert y[100].item() == pytest.approx(0.5)
    assert (y.diff() > 0).all()


def test_tanh_is_odd_and_bounded():
    x = torch.linspace(0.1, 10, 50)
    act = activations.build("tanh")
    torch.testing.assert_close(act(-x), -act(x))
    assert (act(x).abs() <= 1).all()
    assert act(torch.tensor([1.0])).item() == pytest.approx(math.tanh(1.0))


def test_identity_returns_input():
    x = torch.randn(4, 6)
    assert torch.equal(activations.build("identity")(x), x)


@pytest.mark.parametrize("k", [2, 3])
def test_maxout_features(k):
    act = activations.build({"name": "maxout", "k": k})
    assert act.width_factor == k
    x = torch.randn(5, 4 * k)
    out = act(x)
    assert out.shape == (5, 4)
    expected = torch.stack([x[:, j * k : (j + 1) * k].max(dim=1).values for j in range(4)], dim=1)
    assert torch.equal(out, expected)


def test_maxout_images():
    act = activations.build("maxout")
    x = torch.randn(2, 6, 3, 3)
    out = act(x)
    assert out.shape == (2, 3, 3, 3)
    for j in range(3):
        assert torch.equal(out[:, j], torch.maximum(x[:, 2 * j], x[:, 2 * j + 1]))


def test_maxout_rejects_an_indivisible_width():
    with pytest.raises(ValueError, match="divisible by 3"):
        activations.build({"name": "maxout", "k": 3})(torch.randn(2, 7))


def test_maxout_needs_a_piece():
    with pytest.raises(RegistryError, match="k must be at least 1"):
        activations.build({"name": "maxout", "k": 0})


def test_unknown_parameter_lists_the_accepted_ones():
    with pytest.raises(RegistryError) as info:
        activations.build({"name": "leaky_relu", "slope": 0.1})
    message = str(info.value)
    assert "unknown parameter 'slope'" in message
    assert "negative_slope: float = 0.01" in message


def test_wrong_type_names_the_parameter():
    with pytest.raises(RegistryError, match="negative_slope") as info:
        activations.build({"name": "leaky_relu", "negative_slope": "abc"})
    assert "'abc'" in str(info.value)


def test_literal_choices_are_enforced():
    with pytest.raises(RegistryError, match="approximate"):
        activations.build({"name": "gelu", "approximate": "fast"})


def test_unknown_activation_suggests_a_name():
    with pytest.raises(RegistryError, match="did you mean: leaky_relu"):
        activations.build("leaky_rlu")
