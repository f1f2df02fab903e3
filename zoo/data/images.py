"""Encoded image files to uint8 tensors: the one decoder every reader of image files goes through, and the
per-image crops that give images of any size one training or evaluation size.

``decode`` refuses a header that promises more than Pillow's ``Image.MAX_IMAGE_PIXELS`` before decoding
anything (a small file can decode to gigabytes), decodes with torchvision's decoders (JPEG, PNG, GIF, WebP)
and falls back to Pillow for the formats they do not read (BMP, TIFF, ...). Failures are ZooErrors naming
the file, so a data loader worker reports a damaged image by name instead of a traceback.

Size-changing work is "choose a box in the image, resize it to the output size": RandomResizedCrop for
training (``train_box``, torchvision's algorithm) and timm's resize-then-center-crop for evaluation
(``eval_box``: the centred square of ``crop_pct`` of the shorter side). Both run per image, in DataLoader
workers, before the fixed-size uint8 batches reach the on-device batch augmentation.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Callable

import torch

from zoo.core.errors import ZooError

Box = tuple[int, int, int, int]  # top, left, height, width


def check_pixels(data: bytes, where: str) -> tuple[int, int] | None:
    """(width, height) from the header, refused past Pillow's MAX_IMAGE_PIXELS; None if Pillow cannot read it."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # decided below, as an error
            with Image.open(io.BytesIO(data)) as pil:
                width, height = pil.size
    except Image.DecompressionBombError:
        width = height = None  # past twice the limit: Pillow would not even say the size
    except Exception:  # noqa: BLE001 - not a header Pillow knows: the decoders say what is wrong with it
        return None
    if limit and (width is None or width * height > limit):
        shape = f"{width}x{height} pixels" if width is not None else f"more than {2 * limit:,} pixels"
        raise ZooError(
            f"{where} is {shape}, past the {limit:,} an image may have (Pillow's MAX_IMAGE_PIXELS: "
            "a decompression bomb, or an image far larger than a network trains on); shrink it or remove it"
        )
    return width, height


def _without(message: str, where: str) -> str:
    """A decoder's message without the path it repeats (the error names the file already)."""
    short = message.replace(f" '{where}'", "").replace(f" {where}", "").strip()
    return short or "unknown format"


def decode(data: bytes, where: str, color: str = "rgb") -> torch.Tensor:
    """uint8 (C, H, W) pixels of one encoded image; C = 3 for ``rgb``, 1 for ``gray``. ``where`` names it in errors."""
    from torchvision.io import ImageReadMode, decode_image

    check_pixels(data, where)
    mode = ImageReadMode.RGB if color == "rgb" else ImageReadMode.GRAY
    try:
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
    except Exception:  # noqa: BLE001 - not a format torchvision reads (BMP, TIFF, ...): Pillow does
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as pil:
                pil = pil.convert("RGB" if color == "rgb" else "L")
                img = torch.frombuffer(bytearray(pil.tobytes()), dtype=torch.uint8)
                return img.view(pil.height, pil.width, -1).permute(2, 0, 1).contiguous()
        except Exception as exc:  # noqa: BLE001 - whatever the decoders say of a file that is no image
            raise ZooError(
                f"cannot decode {where}: {_without(str(exc), where)}; it is not an image or a damaged one: "
                "replace or remove it"
            ) from None


def resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``img`` resized to (H, W) with antialiasing, as torchvision's v2 transforms resize uint8 images."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    from torchvision.transforms.v2.functional import resize as tv_resize

    return tv_resize(img, list(size), antialias=True)


def train_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> Box:
    """A RandomResizedCrop box, drawn as torchvision's ``RandomResizedCrop.get_params`` draws it.

    Ten tries at an area fraction uniform in ``scale`` and an aspect ratio log-uniform in ``ratio``;
    when none fits, the centred crop of the whole image with the ratio clamped into ``ratio``.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        draw = torch.rand(2, generator=generator).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * draw[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * draw[1])
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    return whole_box(height, width, ratio)


def whole_box(height: int, width: int, ratio: tuple[float, float]) -> Box:
    """RandomResizedCrop's box when no draw fits: the centred crop of the whole image, ratio clamped into
    ``ratio``."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def eval_box(height: int, width: int, crop_pct: float) -> Box:
    """The centred square that timm's evaluation transform keeps: resize the shorter side to ``size / crop_pct``,
    then centre-crop ``size``, is this box of the original resized to ``size``."""
    side = max(1, int(round(min(height, width) * crop_pct)))
    return (height - side) // 2, (width - side) // 2, side, side


BoxChooser = Callable[[int, int], Box]  # (height, width) of a decoded image -> the box to keep


def decode_crop(data: bytes, where: str, size: int, choose: BoxChooser) -> torch.Tensor:
    """uint8 (3, size, size): the image decoded, the box ``choose`` picks for its (height, width), resized."""
    img = decode(data, where)
    top, left, h, w = choose(img.shape[1], img.shape[2])
    return resize(img[:, top : top + h, left : left + w], (size, size))


def train_chooser(scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator) -> BoxChooser:
    """RandomResizedCrop boxes drawn from ``generator``."""
    return lambda height, width: train_box(height, width, scale, ratio, generator)


def eval_chooser(crop_pct: float) -> BoxChooser:
    """timm's evaluation crop: the centred square of ``crop_pct`` of the shorter side."""
    return lambda height, width: eval_box(height, width, crop_pct)
