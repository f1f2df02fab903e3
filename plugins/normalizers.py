"""Built-in normalization layers.

The model that asks for a normalizer supplies ``num_features`` (features or channels) and ``dim``:
0 for feature vectors (B, F), 1 for sequences (B, C, L), 2 for images (B, C, H, W).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from torch import nn

from zoo import normalizers
from zoo.core.errors import RegistryError

Eps = Annotated[float, Field(gt=0)]  # added to the variance before its square root

_LAYOUTS = {0: "feature vectors (B, F)", 1: "sequences (B, C, L)", 2: "images (B, C, H, W)"}


def _check(name: str, num_features: int, dim: int) -> None:
    # The model passes these, not the user, so a bad value is a model bug; still say it plainly.
    if dim not in _LAYOUTS:
        raise RegistryError(
            f"normalizer '{name}': dim must be 0 (feature vectors), 1 (sequences) or 2 (images), got {dim!r}"
        )
    if num_features < 1:
        raise RegistryError(f"normalizer '{name}': num_features must be positive, got {num_features}")


def _divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of ``n`` that is no bigger than ``limit`` (and at least 1)."""
    for d in range(max(1, min(n, limit)), 0, -1):
        if n % d == 0:
            return d
    return 1


@normalizers.register("batch")
def batch(num_features: int, dim: int, *, momentum: Annotated[float, Field(ge=0, le=1)] = 0.1, eps: Eps = 1e-5) -> nn.Module:
    """Batch norm: each feature/channel normalized over the batch (and positions), running stats for eval.

    Ioffe & Szegedy 2015. Needs batches of more than one sample in training. ``momentum`` is the weight
    of each batch in the running statistics, ``eps`` is added to the variance.
    """
    _check("batch", num_features, dim)
    cls = nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d
    return cls(num_features, eps=eps, momentum=momentum)


@normalizers.register("layer")
def layer(num_features: int, dim: int, *, eps: Eps = 1e-5) -> nn.Module:
    """Layer norm: each sample normalized over all its features (and positions); same in train and eval.

    Ba, Kiros & Hinton 2016. For feature vectors this is nn.LayerNorm over F. For sequences and
    images it is GroupNorm with one group, which normalizes each sample over (C, *positions) with a
    per-channel affine: the usual "layer norm" of conv nets, which keeps the layer independent of the
    input's spatial size (nn.LayerNorm over (C, H, W) would fix H and W at build time). ``eps`` is
    added to the variance.
    """
    _check("layer", num_features, dim)
    if dim == 0:
        return nn.LayerNorm(num_features, eps=eps)
    return nn.GroupNorm(1, num_features, eps=eps)


@normalizers.register("group")
def group(num_features: int, dim: int, *, groups: Annotated[int, Field(ge=1)] = 32, eps: Eps = 1e-5) -> nn.Module:
    """Group norm: each sample's channels split into groups, each group normalized on its own.

    Wu & He 2018. ``groups`` is lowered to the largest divisor of num_features that fits, so the
    default of 32 also works for narrow layers (6 channels -> 6 groups). Feature vectors are treated
    as channels with no positions. ``eps`` is added to the variance.
    """
    _check("group", num_features, dim)
    if groups < 1:
        raise RegistryError(f"normalizer 'group': groups must be at least 1, got {groups}")
    return nn.GroupNorm(_divisor_at_most(num_features, groups), num_features, eps=eps)


@normalizers.register("instance")
def instance(num_features: int, dim: int, *, eps: Eps = 1e-5) -> nn.Module:
    """Instance norm: each channel of each sample normalized over its own positions (with affine).

    Ulyanov, Vedaldi & Lempitsky 2016. Only for sequences and images. ``eps`` is added to the variance.
    """
    _check("instance", num_features, dim)
    if dim == 0:
        raise RegistryError(
            "normalizer 'instance' needs spatial dimensions (a sequence or an image): it normalizes each "
            "channel over its own positions, and a feature vector (dim 0) has none; use 'layer' or "
            "'batch' for an MLP"
        )
    cls = nn.InstanceNorm2d if dim == 2 else nn.InstanceNorm1d
    return cls(num_features, eps=eps, affine=True)


@normalizers.register("none")
def none(num_features: int, dim: int) -> nn.Module:
    """No normalization (identity)."""
    _check("none", num_features, dim)
    return nn.Identity()
