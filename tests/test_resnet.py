"""The built-in `resnet` model, built through the models registry as a recipe would build it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from zoo.core.errors import RegistryError

CIFAR = (3, 32, 32)
DIGITS = (1, 8, 8)
NORM_TYPES = (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)


def build(input_shape=CIFAR, num_classes=10, **params):
    return zoo.models.build({"name": "resnet", **params}, input_shape=input_shape, num_classes=num_classes)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def weighted_layers(model: nn.Module, *, shortcuts: bool) -> list[nn.Module]:
    return [
        m
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and (shortcuts or "shortcut" not in name)
    ]


def blocks(model: nn.Module) -> list[nn.Module]:
    return list(model.blocks)


def execution_order(module: nn.Module, x: torch.Tensor, types: tuple[type, ...]) -> list[nn.Module]:
    """The modules of the given types inside ``module`` in the order a forward pass calls them."""
    order: list[nn.Module] = []
    handles = [
        m.register_forward_pre_hook(lambda mod, inp: order.append(mod))
        for m in module.modules()
        if isinstance(m, types)
    ]
    try:
        module(x)
    finally:
        for h in handles:
            h.remove()
    return order


# --- shapes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("input_shape", [DIGITS, CIFAR])
@pytest.mark.parametrize("preact", [False, True])
def test_resnet20_maps_images_to_logits(input_shape, preact):
    model = build(input_shape, num_classes=10, depth=20, preact=preact)
    model.initialize(torch.randn(4, *input_shape))
    out = model(torch.randn(3, *input_shape))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("depth", [18, 50])
def test_imagenet_layout_works_on_8x8_inputs(depth):
    model = build(DIGITS, num_classes=7, depth=depth, width=4)
    assert model(torch.randn(2, *DIGITS)).shape == (2, 7)


def test_vector_inputs_are_refused_with_a_clear_message():
    with pytest.raises(RegistryError, match=r"\(channels, height, width\).*\(64,\)"):
        build((64,))


# --- layout and depth -----------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [8, 20, 32, 56])
def test_cifar_layer_count_is_the_depth(depth):
    model = build(depth=depth, width=4)
    layers = weighted_layers(model, shortcuts=True)
    assert len(layers) == depth  # pad shortcuts add no layers: stem + 6n convs + head
    n = (depth - 2) // 6
    assert len(blocks(model)) == 3 * n


@pytest.mark.parametrize(
    "depth, n_blocks, n_projections", [(18, 8, 3), (34, 16, 3), (50, 16, 4)]
)
def test_imagenet_layer_count_is_the_depth(depth, n_blocks, n_projections):
    model = build(depth=depth, width=4)
    assert len(weighted_layers(model, shortcuts=False)) == depth
    assert len(blocks(model)) == n_blocks
    # Projections where the shape changes: stages 2-4, plus stage 1 of the bottleneck net (w -> 4w).
    assert len(weighted_layers(model, shortcuts=True)) - depth == n_projections


def test_cifar_widths_and_strides_follow_the_paper():
    model = build(depth=20)
    convs = [m for m in weighted_layers(model, shortcuts=True) if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16] + [16] * 6 + [32] * 6 + [64] * 6
    assert [c.stride[0] for c in convs if c.stride[0] != 1] == [2, 2]
    assert model.head.in_features == 64


def test_bottleneck_expands_four_times():
    model = build(depth=50, width=8)
    assert model.head.in_features == 8 * 8 * 4
    first = blocks(model)[0]
    assert [c.kernel_size[0] for c in first.convs] == [1, 3, 1]


def test_depth_50_can_also_be_the_cifar_layout():
    model = build(depth=50, width=4, layout="cifar")
    assert len(blocks(model)) == 24  # 3 stages of n = 8 basic blocks
    assert len(weighted_layers(model, shortcuts=True)) == 50


def test_parameter_counts_match_the_published_ones():
    # He et al. 2016, table 6: ResNet-20 has 0.27M parameters; ResNet-18 with a 3x3 stem ~11.2M.
    assert n_params(build(depth=20)) == 269_722
    assert 11.1e6 < n_params(build(depth=18)) < 11.25e6


@pytest.mark.parametrize("depth, published", [(18, 11_689_512), (50, 25_557_032)])
def test_imagenet_stem_has_torchvision_parameter_counts(depth, published):
    import torchvision

    model = build((3, 224, 224), num_classes=1000, depth=depth, layout="imagenet", stem="imagenet")
    reference = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    assert n_params(model) == n_params(reference) == published
    x = torch.randn(2, 3, 64, 64)
    assert model.stem(x).shape == (2, 64, 16, 16)  # stride-2 conv, then stride-2 max-pool
    assert model(x).shape == (2, 1000)


def test_imagenet_stem_is_torchvisions_layers():
    conv, norm, act, pool = build(depth=18, stem="imagenet").stem
    assert (conv.kernel_size, conv.stride, conv.padding, conv.bias) == ((7, 7), (2, 2), (3, 3), None)
    assert isinstance(norm, nn.BatchNorm2d) and isinstance(act, nn.ReLU)
    assert (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 1)
    # pre-activation, the first block normalizes and activates what the stem's conv and pool give it
    assert [type(m) for m in build(depth=18, stem="imagenet", preact=True).stem] == [nn.Conv2d, nn.MaxPool2d]


@pytest.mark.parametrize("stem", ["auto", "small"])
def test_default_stem_keeps_small_images_whole(stem):
    model = build(DIGITS, depth=18, width=4, stem=stem)
    assert [type(m) for m in model.stem] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert model.stem[0].kernel_size == (3, 3) and model.stem(torch.randn(1, *DIGITS)).shape == (1, 4, 8, 8)


@pytest.mark.parametrize("depth", [0, 19, 21, 100])
def test_invalid_depth_lists_the_valid_ones(depth):
    with pytest.raises(RegistryError) as info:
        build(depth=depth)
    message = str(info.value)
    assert f"depth {depth} is not valid" in message
    assert "6n+2" in message and "20, 32, 44, 56, 110" in message
    assert "18, 34, 50" in message


def test_depth_that_does_not_fit_the_chosen_layout_is_refused():
    with pytest.raises(RegistryError, match="depth 18 is not valid for the cifar layout"):
        build(depth=18, layout="cifar")
    with pytest.raises(RegistryError, match="depth 20 is not valid for the imagenet layout"):
        build(depth=20, layout="imagenet")


def test_recipe_typos_are_caught_by_the_registry():
    with pytest.raises(RegistryError, match="shortcut"):
        build(shortcut="projection")
    with pytest.raises(RegistryError, match="unknown parameter 'dept'"):
        build(dept=20)
    with pytest.raises(RegistryError, match="unknown activations 'gleu'.*gelu"):
        build(activation="gleu")


def test_validate_fills_in_defaults_and_nested_specs():
    spec = zoo.models.validate("resnet")
    assert spec["depth"] == 20 and spec["shortcut"] == "auto" and spec["preact"] is False
    assert spec["activation"] == {"name": "relu"}
    assert spec["norm"]["name"] == "batch"


# --- block structure -------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [20, 18, 50])
def test_preact_blocks_start_with_a_norm_and_postact_blocks_with_a_conv(depth):
    x = torch.randn(2, 3, 8, 8)
    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU)
    for preact, first in ((True, nn.BatchNorm2d), (False, nn.Conv2d)):
        model = build(depth=depth, width=4, preact=preact)
        h = model.stem(x)
        for block in blocks(model):
            order = execution_order(block, h, kinds)
            in_shortcut = set(block.shortcut.modules()) if block.shortcut is not None else set()
            branch = [m for m in order if m not in in_shortcut]
            assert isinstance(branch[0], first)
            if preact:
                # norm -> act -> conv, repeated
                pattern = [type(m) for m in branch]
                assert pattern == [nn.BatchNorm2d, nn.ReLU, nn.Conv2d] * len(block.convs)
            h = block(h)


def test_preact_ends_with_norm_and_act_before_pooling():
    x = torch.randn(2, 3, 8, 8)
    pre = build(depth=20, width=4, preact=True)
    post = build(depth=20, width=4, preact=False)
    order = execution_order(pre, x, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Linear))
    assert [type(m) for m in order[-4:]] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Linear]
    assert order[-3] is pre.final[0] and order[-2] is pre.final[1]  # after the last addition
    # The pre-activation stem is a bare conv: the first block normalizes it.
    assert [type(m) for m in pre.stem] == [nn.Conv2d]
    assert [type(m) for m in post.stem] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert len(list(post.final.modules())) == 1  # nothing after the last post-activation block


def test_pad_shortcut_has_no_parameters_and_conv_shortcut_is_a_1x1_projection():
    pad = build(depth=20, shortcut="pad")
    conv = build(depth=20, shortcut="conv")
    pad_shortcuts = [b.shortcut for b in blocks(pad) if b.shortcut is not None]
    conv_shortcuts = [b.shortcut for b in blocks(conv) if b.shortcut is not None]
    assert len(pad_shortcuts) == len(conv_shortcuts) == 2  # the two downsampling blocks
    assert all(n_params(s) == 0 for s in pad_shortcuts)
    for s in conv_shortcuts:
        projections = [m for m in s.modules() if isinstance(m, nn.Conv2d)]
        assert len(projections) == 1
        assert projections[0].kernel_size == (1, 1) and projections[0].stride == (2, 2)
        assert any(isinstance(m, nn.BatchNorm2d) for m in s.modules())
    assert n_params(conv) > n_params(pad)


def test_pad_shortcut_keeps_the_input_and_zero_fills_new_channels():
    model = build(depth=20, width=4, shortcut="pad")
    shortcut = blocks(model)[3].shortcut  # first block of stage 2: 4 -> 8 channels, stride 2
    x = torch.randn(2, 4, 8, 8)
    y = shortcut(x)
    assert y.shape == (2, 8, 4, 4)
    assert torch.equal(y[:, :4], x[:, :, ::2, ::2])
    assert torch.equal(y[:, 4:], torch.zeros_like(y[:, 4:]))


def test_auto_shortcut_is_pad_for_cifar_and_conv_for_imagenet():
    cifar = build(depth=20, width=4)
    imagenet = build(depth=18, width=4)
    assert all(n_params(b.shortcut) == 0 for b in blocks(cifar) if b.shortcut is not None)
    assert all(n_params(b.shortcut) > 0 for b in blocks(imagenet) if b.shortcut is not None)


def test_default_widths_depend_on_the_layout():
    assert build(depth=20).stem[0].out_channels == 16
    assert build(depth=18).stem[0].out_channels == 64
    assert build(depth=20, width=8).stem[0].out_channels == 8


# --- registry components ---------------------------------------------------------------------------


def test_activation_comes_from_the_registry():
    model = build(depth=20, width=4, activation="gelu")
    assert any(isinstance(m, nn.GELU) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())


def test_activation_parameters_are_passed_on():
    model = build(depth=8, width=4, activation={"name": "leaky_relu", "negative_slope": 0.2})
    slopes = {m.negative_slope for m in model.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.2}


def test_norm_comes_from_the_registry():
    model = build(depth=20, width=4, norm="group")
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_without_norm_the_convs_get_biases():
    plain = build(depth=8, width=4, norm="none")
    assert not any(isinstance(m, NORM_TYPES) for m in plain.modules())
    assert all(c.bias is not None for c in plain.modules() if isinstance(c, nn.Conv2d))
    normed = build(depth=8, width=4)
    assert all(c.bias is None for c in normed.modules() if isinstance(c, nn.Conv2d))
    assert plain(torch.randn(2, 3, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("preact", [False, True])
@pytest.mark.parametrize("depth", [20, 50])
def test_maxout_widens_every_conv_and_still_trains(preact, depth):
    width = 4
    model = build(DIGITS, depth=depth, width=width, preact=preact, activation={"name": "maxout", "k": 3})
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.out_channels % 3 == 0 for c in convs)
    assert model.stem[0].out_channels == width * 3
    # The head reads the nominal width: maxout has folded the k pieces back together.
    assert model.head.in_features == (width * 4 if depth == 20 else width * 8 * 4)
    out = model(torch.randn(4, *DIGITS))
    assert out.shape == (4, 10)
    out.sum().backward()
    assert model.stem[0].weight.grad is not None


def test_maxout_keeps_preact_identity_shortcuts():
    model = build(depth=20, width=4, preact=True, activation="maxout")
    identities = [b for b in blocks(model) if b.shortcut is None]
    assert len(identities) == 7  # all but the two downsampling blocks


# --- training behaviour ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"depth": 20},
        {"depth": 20, "preact": True, "shortcut": "conv"},
        {"depth": 18, "width": 4},
        {"depth": 50, "width": 4, "preact": True},
        {"depth": 8, "activation": "prelu", "norm": "group"},
    ],
    ids=["cifar20", "preact-conv", "imagenet18", "preact50", "prelu-group"],
)
def test_gradients_reach_every_parameter(params):
    model = build(DIGITS, **params)
    model.initialize(torch.randn(4, *DIGITS))
    model.train()
    loss = nn.functional.cross_entropy(model(torch.randn(4, *DIGITS)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("preact", [False, True])
def test_zero_init_residual_makes_blocks_start_as_their_shortcut(preact):
    model = build(depth=20, width=4, preact=preact, zero_init_residual=True)
    model.initialize(torch.randn(4, *CIFAR))
    for block in blocks(model):
        if preact:
            assert torch.count_nonzero(block.convs[-1].weight) == 0
        else:
            assert torch.count_nonzero(block.norms[-1].weight) == 0
            assert torch.count_nonzero(block.norms[0].weight) > 0
    model.eval()
    identity = blocks(model)[1]  # stride 1, same width
    x = torch.rand(2, 4, 8, 8)  # non-negative, as after a ReLU
    assert torch.allclose(identity(x), x)


@pytest.mark.parametrize("preact", [False, True])
def test_without_zero_init_residual_the_last_layer_is_not_zero(preact):
    model = build(depth=20, width=4, preact=preact)
    model.initialize(torch.randn(4, *CIFAR))
    for block in blocks(model):
        assert torch.count_nonzero(block.convs[-1].weight) > 0
        assert torch.count_nonzero(block.norms[-1].weight) > 0


def test_initialize_applies_the_init_spec():
    model = build(depth=8, width=4, init={"name": "constant", "value": 0.5})
    model.initialize()
    assert all(torch.all(m.weight == 0.5) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert model.head.zoo_nonlinearity == "linear"


def test_lsuv_init_uses_the_sample():
    model = build(depth=8, width=4, init="lsuv")
    with pytest.raises(RegistryError, match="sample"):
        model.initialize()
    model.initialize(torch.randn(8, *CIFAR))
    assert torch.isfinite(model(torch.randn(2, *CIFAR))).all()


def test_dropout_before_the_head():
    assert isinstance(build(depth=8, width=4, dropout=0.3).dropout, nn.Dropout)
    assert not any(isinstance(m, nn.Dropout) for m in build(depth=8, width=4).modules())
    with pytest.raises(RegistryError, match="dropout"):
        build(dropout=1.5)
    with pytest.raises(RegistryError, match="width"):
        build(width=0)


def test_listed_with_a_one_line_summary():
    entry = zoo.models["resnet"]
    assert entry.summary.startswith("Residual network: CIFAR-style ResNet-20")
    assert "depth: int = 20" in entry.signature_text()
