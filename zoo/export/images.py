"""Image files as the batch a model takes: decoded as zoo's image folders decode them (torchvision's
decoders, Pillow for the formats they do not read), in the model's channels and size."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from zoo.core.errors import ZooError
from zoo.core.io import MAX_IMAGE_BYTES, read_bytes


def decode_images(paths: Sequence[str | Path] | str | Path, input_shape: tuple[int, ...]) -> torch.Tensor:
    """uint8 (N, C, H, W): grey for a 1-channel model, RGB for a 3-channel one, resized (antialiased)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise ZooError(f"the model takes inputs of shape {input_shape}, not images: pass a tensor")
    if not paths:
        raise ZooError("no image files given")
    return torch.stack([decode(str(p), input_shape[0] == 3, tuple(input_shape[1:])) for p in paths])


def decode(path: str, rgb: bool, size: tuple[int, ...]) -> torch.Tensor:
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import resize

    data = read_bytes(path, MAX_IMAGE_BYTES, "image file")
    try:
        with warnings.catch_warnings():
            # an image past Pillow's MAX_IMAGE_PIXELS (a decompression bomb) is refused, not decoded
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as pil:
                pil.size  # noqa: B018 - reading the header is what checks the pixel count
            try:
                img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                                   mode=ImageReadMode.RGB if rgb else ImageReadMode.GRAY)
            except Exception:  # noqa: BLE001 - not a format torchvision reads (BMP, TIFF, ...): Pillow does
                with Image.open(io.BytesIO(data)) as pil:
                    pil = pil.convert("RGB" if rgb else "L")
                    img = torch.frombuffer(bytearray(pil.tobytes()), dtype=torch.uint8)
                    img = img.view(pil.height, pil.width, -1).permute(2, 0, 1).contiguous()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ZooError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - whatever the decoders say of a file that is no image
        raise ZooError(f"{path}: cannot decode it as an image ({type(exc).__name__}: {exc})") from None
    if tuple(img.shape[1:]) != size:
        img = resize(img, list(size), antialias=True)
    return img
