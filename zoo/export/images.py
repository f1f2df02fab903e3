"""Image files as the batch a model takes: decoded as zoo's image folders decode them (torchvision's
decoders, Pillow for the formats they do not read), in the model's channels and size."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from zoo.core.errors import ZooError
from zoo.core.io import MAX_IMAGE_BYTES, read_bytes


def decode_images(paths: Sequence[str | Path] | str | Path, input_shape: tuple[int, ...]) -> torch.Tensor:
    """uint8 (N, C, H, W): grey for a 1-channel model, RGB for a 3-channel one, resized (antialiased)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    rgb = takes_rgb(input_shape)
    if not paths:
        raise ZooError("no image files given")
    return torch.stack([decode(str(p), rgb, tuple(input_shape[1:])) for p in paths])


def takes_rgb(input_shape: tuple[int, ...]) -> bool:
    """Whether a model of ``input_shape`` takes RGB images (else grey ones); a ZooError if it takes none."""
    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise ZooError(f"the model takes inputs of shape {tuple(input_shape)}, not images: pass a tensor")
    return input_shape[0] == 3


def decode(path: str, rgb: bool, size: tuple[int, ...]) -> torch.Tensor:
    from zoo.data.images import decode as decode_bytes
    from zoo.data.images import resize

    data = read_bytes(path, MAX_IMAGE_BYTES, "image file")
    return resize(decode_bytes(data, path, "rgb" if rgb else "gray"), tuple(size))
