"""The built-in `timm` model: any timm architecture, built from scratch through the models registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from zoo.core.errors import RegistryError

CIFAR = (3, 32, 32)
DIGITS = (1, 8, 8)


def build(input_shape=CIFAR, num_classes=10, **params):
    return zoo.models.build({"name": "timm", **params}, input_shape=input_shape, num_classes=num_classes)


def has(model: nn.Module, kind: type) -> bool:
    return any(isinstance(m, kind) for m in model.modules())


def test_resnet18_maps_cifar_images_to_logits():
    model = build(arch="resnet18")
    model.initialize(torch.randn(2, *CIFAR))
    out = model(torch.randn(2, *CIFAR))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_channels_and_classes_come_from_the_data():
    model = build(DIGITS, num_classes=7, arch="test_resnet")
    assert model(torch.randn(3, *DIGITS)).shape == (3, 7)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == 1


def test_fixed_size_architectures_get_the_data_image_size():
    model = build(arch="test_vit")
    assert tuple(model.net.patch_embed.img_size) == (32, 32)  # timm's default is 160x160
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)
    explicit = build(arch="test_vit", img_size=64)  # a recipe's own choice wins
    assert tuple(explicit.net.patch_embed.img_size) == (64, 64)


def test_activation_comes_from_the_registry():
    plain = build(arch="test_resnet")
    assert has(plain, nn.ReLU) and not has(plain, nn.GELU)
    model = build(arch="test_resnet", activation="gelu")
    assert has(model, nn.GELU) and not has(model, nn.ReLU)
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)


def test_norm_comes_from_the_registry():
    model = build(arch="test_resnet", norm={"name": "group", "groups": 4})
    assert has(model, nn.GroupNorm) and not has(model, nn.BatchNorm2d)
    assert {m.num_groups for m in model.modules() if isinstance(m, nn.GroupNorm)} <= {1, 2, 4}
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)


def test_transformer_norms_use_the_last_dimension():
    model = build(arch="test_vit", activation="silu", norm={"name": "layer", "eps": 1e-3}, norm_dim=0)
    assert has(model, nn.SiLU) and not has(model, nn.GELU)
    assert {m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)} == {1e-3}
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)
    with pytest.raises(RegistryError, match="norm_dim: 0"):
        build(arch="test_vit", norm="batch")  # BatchNorm2d cannot take (B, tokens, C)


def test_unknown_arch_suggests_close_timm_names():
    with pytest.raises(RegistryError, match=r"unknown timm architecture 'resnet19'.*resnet18"):
        build(arch="resnet19")
    with pytest.raises(RegistryError, match=r"did you mean: test_vit"):
        build(arch="tst_vit")
    with pytest.raises(RegistryError, match=r"vit_tiny_patch16_224"):
        build(arch="vit_tiny")


def test_arch_without_act_layer_is_refused():
    with pytest.raises(RegistryError, match="'test_coatnet' does not take a custom activation"):
        build(arch="test_coatnet", activation="gelu")


def test_arch_without_norm_layer_is_refused():
    with pytest.raises(RegistryError, match="'test_nfnet' does not take a custom norm"):
        build(arch="test_nfnet", norm="group")


def test_arch_with_fused_norm_and_activation_refuses_a_custom_norm():
    # Building only the norm would silently drop EfficientNet's activations.
    with pytest.raises(RegistryError, match="fuses its norms with activations"):
        build(arch="test_efficientnet", norm="batch")


def test_widening_activations_are_refused():
    with pytest.raises(RegistryError, match="maxout"):
        build(arch="test_resnet", activation="maxout")


def test_arch_is_required():
    with pytest.raises(RegistryError, match=r"'timm'.*parameter 'arch'"):
        build()


def test_extra_parameters_go_to_timm():
    model = build(arch="test_resnet", drop_rate=0.25, drop_path_rate=0.1)
    assert model.net.drop_rate == 0.25
    with pytest.raises(RegistryError, match="rejected its arguments.*bogus"):
        build(arch="test_resnet", bogus=1)


@pytest.mark.parametrize("key", ["pretrained_cfg", "in_chans", "act_layer", "norm_layer"])
def test_arguments_zoo_sets_are_refused(key):
    with pytest.raises(RegistryError, match=f"'{key}' is set by zoo"):
        zoo.models.build({"name": "timm", "arch": "test_resnet", key: 1}, input_shape=CIFAR, num_classes=10)


def test_without_init_timm_weights_are_kept():
    torch.manual_seed(0)
    model = build(arch="test_resnet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.initialize(torch.randn(2, *CIFAR))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_init_spec_reinitializes_linear_and_conv_weights():
    model = build(arch="test_resnet", init={"name": "constant", "value": 0.25})
    model.initialize(torch.randn(2, *CIFAR))
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert weights and all(torch.all(w == 0.25) for w in weights)


def test_head_is_marked_linear_for_initializers():
    model = build(arch="test_resnet")
    assert model.net.get_classifier().zoo_nonlinearity == "linear"


def test_gradients_reach_every_parameter():
    model = build(DIGITS, arch="test_resnet", activation="silu", init="auto")
    model.initialize(torch.randn(4, *DIGITS))
    loss = nn.functional.cross_entropy(model(torch.randn(4, *DIGITS)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_listed_with_a_one_line_summary():
    entry = zoo.models["timm"]
    assert entry.summary.startswith("Any timm architecture")
    assert entry.accepts_extra
