"""The built-in normalizers: each one normalizes over its own axes, in training mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo import normalizers
from zoo.core.errors import RegistryError

BUILTINS = ["batch", "layer", "group", "instance", "none"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def skewed(*shape: int) -> torch.Tensor:
    """Data far from normalized, with a different offset and scale per channel (dim 1)."""
    channels = shape[1]
    view = (1, channels) + (1,) * (len(shape) - 2)
    offset = torch.arange(channels, dtype=torch.float32).view(view) * 2 + 3
    scale = torch.arange(1, channels + 1, dtype=torch.float32).view(view)
    return torch.randn(*shape) * scale + offset


def assert_normalized(y: torch.Tensor, dims: tuple[int, ...]) -> None:
    mean = y.mean(dim=dims)
    std = y.var(dim=dims, unbiased=False).sqrt()
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-4, rtol=0)
    torch.testing.assert_close(std, torch.ones_like(std), atol=1e-3, rtol=0)


def build(spec, num_features: int, dim: int) -> nn.Module:
    norm = normalizers.build(spec, num_features=num_features, dim=dim)
    norm.train()
    return norm


def test_every_builtin_is_registered():
    assert set(BUILTINS) <= set(normalizers.names())
    for name in BUILTINS:
        assert normalizers.get(name).summary


SHAPES = {0: (8, 6), 1: (8, 6, 10), 2: (8, 6, 5, 5)}


# instance norm has no feature-vector form; that case has its own test below
@pytest.mark.parametrize(
    "name, dim", [(n, d) for n in BUILTINS for d in SHAPES if not (n == "instance" and d == 0)]
)
def test_builds_and_keeps_the_shape(name, dim):
    shape = SHAPES[dim]
    y = build(name, 6, dim)(skewed(*shape))
    assert y.shape == shape
    assert torch.isfinite(y).all()


def test_batch_per_feature_over_the_batch():
    norm = build("batch", 5, 0)
    assert isinstance(norm, nn.BatchNorm1d)
    assert_normalized(norm(skewed(64, 5)), dims=(0,))


@pytest.mark.parametrize("dim, shape", [(1, (16, 4, 12)), (2, (16, 4, 5, 5))])
def test_batch_per_channel_over_batch_and_positions(dim, shape):
    norm = build({"name": "batch", "momentum": 0.5, "eps": 1e-6}, 4, dim)
    assert isinstance(norm, nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d)
    assert norm.momentum == 0.5 and norm.eps == 1e-6
    x = skewed(*shape)
    assert_normalized(norm(x), dims=(0,) + tuple(range(2, len(shape))))
    # momentum 0.5 from a zero start: the running mean is half the batch mean
    batch_mean = x.mean(dim=(0,) + tuple(range(2, len(shape))))
    torch.testing.assert_close(norm.running_mean, 0.5 * batch_mean)


def test_layer_per_sample_for_features():
    norm = build("layer", 6, 0)
    assert isinstance(norm, nn.LayerNorm)
    x = skewed(4, 6)
    assert_normalized(norm(x), dims=(1,))
    # one sample on its own gets the same answer: nothing is shared across the batch
    torch.testing.assert_close(norm(x[:1]), norm(x)[:1])


@pytest.mark.parametrize("dim, shape", [(1, (4, 6, 12)), (2, (4, 6, 5, 5))])
def test_layer_per_sample_over_channels_and_positions(dim, shape):
    norm = build("layer", 6, dim)
    y = norm(skewed(*shape))
    assert_normalized(y, dims=tuple(range(1, len(shape))))
    # the channels keep their relative offsets: it is not a per-channel norm
    per_channel = y.mean(dim=(0,) + tuple(range(2, len(shape))))
    assert per_channel[-1] - per_channel[0] > 0.5


def test_group_per_sample_per_group():
    norm = build({"name": "group", "groups": 2}, 8, 2)
    assert norm.num_groups == 2
    y = norm(skewed(4, 8, 5, 5))
    assert_normalized(y.view(4, 2, 4 * 25), dims=(2,))
    # within a group the channels are not normalized one by one
    assert y[:, 3].mean().item() - y[:, 0].mean().item() > 0.5


def test_group_for_feature_vectors_treats_features_as_channels():
    norm = build({"name": "group", "groups": 4}, 16, 0)
    y = norm(skewed(16, 16))
    assert_normalized(y.view(16, 4, 4), dims=(2,))


@pytest.mark.parametrize("num_features, groups, expected", [(6, 32, 6), (12, 8, 6), (64, 32, 32), (7, 4, 1)])
def test_group_count_is_clipped_to_a_divisor(num_features, groups, expected):
    norm = build({"name": "group", "groups": groups}, num_features, 2)
    assert norm.num_groups == expected
    assert norm(skewed(2, num_features, 3, 3)).shape == (2, num_features, 3, 3)


def test_group_with_default_groups_on_six_channels():
    norm = build("group", 6, 2)
    assert norm.num_groups == 6
    assert_normalized(norm(skewed(4, 6, 5, 5)), dims=(2, 3))


@pytest.mark.parametrize("dim, shape", [(1, (4, 3, 20)), (2, (4, 3, 6, 6))])
def test_instance_per_sample_per_channel(dim, shape):
    norm = build("instance", 3, dim)
    assert norm.affine and norm.weight.shape == (3,)
    assert_normalized(norm(skewed(*shape)), dims=tuple(range(2, len(shape))))


def test_instance_for_feature_vectors_errors_clearly():
    with pytest.raises(RegistryError, match="needs spatial dimensions"):
        normalizers.build("instance", num_features=6, dim=0)


@pytest.mark.parametrize("dim, shape", [(0, (4, 6)), (2, (4, 6, 3, 3))])
def test_none_is_identity(dim, shape):
    x = skewed(*shape)
    norm = build("none", 6, dim)
    assert torch.equal(norm(x), x)
    assert not list(norm.parameters())


def test_context_is_not_the_recipe_s_to_set():
    with pytest.raises(RegistryError, match="set by the caller"):
        normalizers.build({"name": "batch", "num_features": 3}, num_features=3, dim=0)


def test_bad_dim_is_reported():
    with pytest.raises(RegistryError, match="dim must be 0"):
        normalizers.build("batch", num_features=3, dim=3)
