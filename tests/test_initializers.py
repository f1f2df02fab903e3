"""The built-in initializers: the statistics each one promises, measured on real layers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from zoo import initializers
from zoo.core.errors import RegistryError

BUILTINS = [
    "zeros",
    "constant",
    "normal",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_normal",
    "kaiming_uniform",
    "orthogonal",
    "lsuv",
    "auto",
]
TANH_GAIN = 5.0 / 3.0


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def init(spec, model: nn.Module, **kwargs) -> nn.Module:
    initializers.build(spec).apply(model, **kwargs)
    return model


def var(t: torch.Tensor) -> float:
    return t.detach().double().var().item()


def mlp(widths: list[int], act: type[nn.Module] = nn.ReLU, head_linear: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(act())
    if head_linear:
        layers[-1].zoo_nonlinearity = "linear"
    return nn.Sequential(*layers)


def test_every_builtin_is_registered_with_a_bias_option():
    assert set(BUILTINS) <= set(initializers.names())
    for name in BUILTINS:
        entry = initializers.get(name)
        assert entry.summary
        bias = [p for p in entry.params if p.name == "bias"]
        assert bias and bias[0].default == 0.0, name


@pytest.mark.parametrize("spec, value", [("zeros", 0.0), ({"name": "constant", "value": 0.3}, 0.3)])
def test_constant_weights_keep_units_identical(spec, value):
    model = init(spec, mlp([5, 8, 8, 3]))
    first = model[0].weight
    assert torch.equal(first, torch.full_like(first, value))
    for layer in (model[0], model[2], model[4]):
        assert torch.equal(layer.weight, layer.weight[:1].expand_as(layer.weight))
    # identical rows mean identical hidden units, for any input: the symmetry never breaks
    hidden = model[:2](torch.randn(10, 5))
    assert torch.equal(hidden, hidden[:, :1].expand_as(hidden))


@pytest.mark.parametrize("std", [0.01, 0.05])
def test_normal_has_the_fixed_std(std):
    spec = "normal" if std == 0.01 else {"name": "normal", "std": std}
    layer = init(spec, nn.Linear(512, 256))
    w = layer.weight
    assert math.sqrt(var(w)) == pytest.approx(std, rel=0.02)
    assert abs(w.mean().item()) < std * 0.02


@pytest.mark.parametrize("name", ["xavier_uniform", "xavier_normal"])
@pytest.mark.parametrize("activation, gain", [("identity", 1.0), ("tanh", TANH_GAIN), ("relu", math.sqrt(2))])
def test_xavier_variance(name, activation, gain):
    layer = init(name, nn.Linear(400, 600), activation=activation)
    assert var(layer.weight) == pytest.approx(gain**2 * 2 / (400 + 600), rel=0.03)


@pytest.mark.parametrize("name", ["kaiming_normal", "kaiming_uniform"])
def test_kaiming_variance_for_relu(name):
    layer = init(name, nn.Linear(500, 400), activation="relu")
    assert var(layer.weight) == pytest.approx(2 / 500, rel=0.03)


@pytest.mark.parametrize(
    "activation, slope",
    [({"name": "leaky_relu", "negative_slope": 0.3}, 0.3), ("leaky_relu", 0.01), ("prelu", 0.25)],
)
def test_kaiming_uses_the_leaky_slope(activation, slope):
    layer = init("kaiming_normal", nn.Linear(500, 400), activation=activation)
    assert var(layer.weight) == pytest.approx(2 / (1 + slope**2) / 500, rel=0.03)


# g with E[f(g z)^2] = 1, z ~ N(0, 1), by scipy's quadrature and root finder (tests/test_activation_gains.py
# checks the activations declare these)
DECLARED_GAINS = {"gelu": 1.46801, "silu": 1.55876, "elu": 1.27796, "maxout": 1.0, "relu": math.sqrt(2)}


@pytest.mark.parametrize("activation", sorted(DECLARED_GAINS))
def test_kaiming_uses_the_gain_the_activation_declares(activation):
    layer = init("kaiming_normal", nn.Linear(500, 400), activation=activation)
    assert var(layer.weight) == pytest.approx(DECLARED_GAINS[activation] ** 2 / 500, rel=0.03)


def test_a_plugin_activation_is_initialized_with_its_own_gain_or_relus_with_a_warning():
    from zoo.core.errors import PluginWarning
    from zoo.core.registry import REGISTRIES

    def halved() -> nn.Module:
        """A ReLU at half height, declaring its gain: 1 / sqrt(E[(relu(z) / 2)^2]) = 2 sqrt(2)."""
        module = nn.ReLU()
        module.gain = 2 * math.sqrt(2)
        return module

    def silent() -> nn.Module:
        """A ReLU that declares no gain."""
        return nn.ReLU()

    zoo_activations = REGISTRIES["activations"]
    zoo_activations.register(halved, name="test_halved_relu")
    zoo_activations.register(silent, name="test_silent_relu")
    try:
        layer = init("kaiming_normal", nn.Linear(500, 400), activation="test_halved_relu")
        assert var(layer.weight) == pytest.approx(8 / 500, rel=0.03)
        with pytest.warns(PluginWarning, match="activation 'test_silent_relu' declares no gain"):
            layer = init("kaiming_normal", nn.Linear(500, 400), activation="test_silent_relu")
        assert var(layer.weight) == pytest.approx(2 / 500, rel=0.03)
    finally:
        zoo_activations.drop(zoo_activations.get("test_halved_relu").source)


def test_an_unknown_activation_is_named():
    with pytest.raises(RegistryError, match="unknown activations 'no_such_activation'"):
        init("kaiming_normal", nn.Linear(5, 4), activation="no_such_activation")


@pytest.mark.parametrize(
    "activation, reference",
    [("relu", {"nonlinearity": "relu"}), ({"name": "leaky_relu", "negative_slope": 0.2}, {"a": 0.2, "nonlinearity": "leaky_relu"})],
)
@pytest.mark.parametrize("uniform", [False, True])
def test_kaiming_draws_what_torch_draws_for_the_gains_torch_knows(activation, reference, uniform):
    conv = nn.Conv2d(20, 30, 3)
    expected = torch.empty_like(conv.weight)
    torch.manual_seed(0)
    (nn.init.kaiming_uniform_ if uniform else nn.init.kaiming_normal_)(expected, mode="fan_in", **reference)
    torch.manual_seed(0)
    init("kaiming_uniform" if uniform else "kaiming_normal", conv, activation=activation)
    assert torch.equal(conv.weight, expected)


def test_kaiming_on_convolutions_uses_the_kernel_fan_in():
    conv = init("kaiming_normal", nn.Conv2d(64, 64, 3))
    assert var(conv.weight) == pytest.approx(2 / (64 * 9), rel=0.04)


@pytest.mark.parametrize("shape", [(64, 64), (40, 100)])
def test_orthogonal_rows_are_orthonormal(shape):
    out_features, in_features = shape
    layer = init("orthogonal", nn.Linear(in_features, out_features), activation="identity")
    w = layer.weight
    torch.testing.assert_close(w @ w.T, torch.eye(out_features), atol=1e-5, rtol=0)


def test_orthogonal_carries_the_activation_gain():
    layer = init("orthogonal", nn.Linear(32, 32), activation="relu")
    w = layer.weight
    torch.testing.assert_close(w @ w.T, 2 * torch.eye(32), atol=1e-5, rtol=0)


def _layer_output_variances(model: nn.Module, sample: torch.Tensor) -> list[float]:
    variances: list[float] = []
    handles = [
        m.register_forward_hook(lambda mod, inp, out: variances.append(var(out)))
        for m in model.modules()
        if isinstance(m, nn.Linear)
    ]
    with torch.no_grad():
        model(sample)
    for h in handles:
        h.remove()
    return variances


@pytest.mark.parametrize("act, name", [(nn.Tanh, "tanh"), (nn.ReLU, "relu")])
def test_lsuv_gives_unit_output_variance_per_layer(act, name):
    model = mlp([20, 64, 64, 64, 10], act=act)
    sample = torch.randn(256, 20) * 3
    before = _layer_output_variances(init("normal", model), sample)
    assert all(abs(v - 1) > 0.5 for v in before)
    init("lsuv", model, activation=name, sample=sample)
    after = _layer_output_variances(model, sample)
    assert len(after) == 4
    for v in after:
        assert abs(v - 1) < 0.05


class _Backwards(nn.Module):
    """Layers registered in the opposite order to the one they run in."""

    def __init__(self) -> None:
        super().__init__()
        self.last = nn.Linear(32, 8)
        self.middle = nn.Linear(32, 32)
        self.first = nn.Linear(16, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(torch.tanh(self.middle(torch.tanh(self.first(x)))))


def test_lsuv_goes_in_forward_order():
    model = _Backwards()
    sample = torch.randn(128, 16) * 5
    init({"name": "lsuv", "tol": 0.01}, model, activation="tanh", sample=sample)
    for v in _layer_output_variances(model, sample):
        assert abs(v - 1) < 0.01


def test_lsuv_restores_train_and_eval_modes():
    model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    model.train()
    model[1].eval()
    init("lsuv", model, sample=torch.randn(32, 8))
    assert model.training and model[2].training and not model[1].training
    # measured in eval mode, so batch norm's running stats were left alone
    assert torch.equal(model[2].running_mean, torch.zeros(16))
    assert model[2].num_batches_tracked.item() == 0
    model.eval()
    init("lsuv", model, sample=torch.randn(32, 8))
    assert not any(m.training for m in model.modules())


def test_lsuv_without_a_sample_errors():
    with pytest.raises(RegistryError, match="needs a sample batch"):
        init("lsuv", mlp([4, 4, 2]))


def test_auto_is_kaiming_with_the_declared_gain_for_relu_like():
    for activation in ["relu", "gelu", "silu"]:
        layer = init("auto", nn.Linear(500, 300), activation=activation)
        assert var(layer.weight) == pytest.approx(DECLARED_GAINS[activation] ** 2 / 500, rel=0.03), activation


def test_auto_is_xavier_for_tanh():
    layer = init("auto", nn.Linear(500, 300), activation="tanh")
    assert var(layer.weight) == pytest.approx(TANH_GAIN**2 * 2 / 800, rel=0.03)


def test_auto_is_xavier_for_sigmoid():
    layer = init("auto", nn.Linear(500, 300), activation="sigmoid")
    assert var(layer.weight) == pytest.approx(2 / 800, rel=0.03)


@pytest.mark.parametrize("name", ["kaiming_normal", "xavier_uniform", "orthogonal", "auto", "normal"])
def test_bias_option_sets_every_bias(name):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 4))
    init({"name": name, "bias": 0.01}, model)
    assert torch.equal(model[0].bias, torch.full((8,), 0.01))
    assert torch.equal(model[3].bias, torch.full((4,), 0.01))
    init(name, model)
    assert torch.equal(model[3].bias, torch.zeros(4))


def test_every_layer_kind_is_touched_and_nothing_else():
    model = nn.Sequential(
        nn.Conv1d(2, 2, 3),
        nn.Conv2d(2, 2, 3),
        nn.Conv3d(2, 2, 3),
        nn.Linear(4, 4, bias=False),
        nn.BatchNorm1d(4),
    )
    init({"name": "constant", "value": 0.5, "bias": 0.1}, model)
    for layer in model[:4]:
        assert torch.equal(layer.weight, torch.full_like(layer.weight, 0.5))
    for layer in model[:3]:
        assert torch.equal(layer.bias, torch.full_like(layer.bias, 0.1))
    assert torch.equal(model[4].weight, torch.ones(4)) and torch.equal(model[4].bias, torch.zeros(4))


def test_zoo_nonlinearity_overrides_the_gain():
    model = mlp([400, 400, 100], head_linear=True)
    init("kaiming_normal", model, activation="relu")
    assert var(model[0].weight) == pytest.approx(2 / 400, rel=0.03)
    assert var(model[2].weight) == pytest.approx(1 / 400, rel=0.03)
    # auto: He on the ReLU layer, Glorot with gain 1 on the linear head
    init("auto", model, activation="relu")
    assert var(model[0].weight) == pytest.approx(2 / 400, rel=0.03)
    assert var(model[2].weight) == pytest.approx(2 / 500, rel=0.03)


def test_zoo_nonlinearity_may_be_a_spec():
    model = mlp([400, 400, 400])
    model[2].zoo_nonlinearity = {"name": "leaky_relu", "negative_slope": 0.5}
    init("kaiming_normal", model, activation="tanh")
    assert var(model[2].weight) == pytest.approx(2 / 1.25 / 400, rel=0.03)
    assert var(model[0].weight) == pytest.approx(TANH_GAIN**2 / 400, rel=0.03)


def test_bad_initializer_parameters_are_rejected():
    with pytest.raises(RegistryError, match="tol"):
        initializers.build({"name": "lsuv", "tol": "tight"})
    with pytest.raises(RegistryError, match="unknown parameter 'gain'"):
        initializers.build({"name": "xavier_normal", "gain": 2.0})
