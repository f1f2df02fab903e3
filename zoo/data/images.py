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
import re
import warnings
from collections.abc import Callable

import torch

from zoo.core.errors import ZooError

try:
    from zoo.data import _jpeg_box  # built at install where libjpeg's headers are; see _decode_box
except ImportError:
    _jpeg_box = None

Box = tuple[int, int, int, int]  # top, left, height, width
_JPEG_START = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"


def check_pixels(data: bytes, where: str) -> tuple[int, int] | None:
    """(width, height) from the header, refused past Pillow's MAX_IMAGE_PIXELS; None if Pillow cannot read it."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    size = _jpeg_size(data)
    if size is not None:
        width, height = size
    else:
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


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG as libjpeg-turbo reads its header; None for another format or a header it
    cannot read (Pillow then has its say).

    1.7 us an image against 17 us for Pillow's open (which parses every marker segment) on the 500x375 files
    of benchmarks/input_pipeline.py."""
    if data[:3] != _JPEG_START:
        return None
    try:
        import simplejpeg

        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except Exception:  # noqa: BLE001 - not installed, or a header it cannot read: Pillow's reading decides
        return None
    return width, height


def _without(message: str, where: str) -> str:
    """A decoder's message without the path it repeats (the error names the file already)."""
    short = message.replace(f" '{where}'", "").replace(f" {where}", "").strip()
    return short or "unknown format"


def decode(data: bytes, where: str, color: str = "rgb") -> torch.Tensor:
    """uint8 (C, H, W) pixels of one encoded image; C = 3 for ``rgb``, 1 for ``gray``. ``where`` names it in errors."""
    check_pixels(data, where)
    return _decode_checked(data, where, color)


def _decode_checked(data: bytes, where: str, color: str = "rgb") -> torch.Tensor:
    """``decode`` once the header's size has passed check_pixels."""
    from torchvision.io import ImageReadMode, decode_image

    # torchvision's WebP and GIF decoders ignore a grey request (answering RGB, the WebP one with a warning),
    # so those are read in RGB and made grey here
    gif_or_webp = data[:4] == b"GIF8" or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
    grey_later = color != "rgb" and gif_or_webp
    mode = ImageReadMode.RGB if color == "rgb" or grey_later else ImageReadMode.GRAY
    try:
        img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
    except Exception:  # noqa: BLE001 - not a format torchvision reads (BMP, TIFF, ...): Pillow does
        return _decode_with_pillow(data, where, color)
    if img.ndim == 4:  # an animated GIF or WebP: its first frame, as Pillow reads one
        img = img[0]
    if color != "rgb" and img.shape[0] != 1:
        from torchvision.transforms.v2.functional import rgb_to_grayscale

        img = rgb_to_grayscale(img[:3])
    return img


def _decode_with_pillow(data: bytes, where: str, color: str) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as pil:
            pil = pil.convert("RGB" if color == "rgb" else "L")
            img = torch.frombuffer(bytearray(pil.tobytes()), dtype=torch.uint8)
            return img.view(pil.height, pil.width, -1).permute(2, 0, 1).contiguous()
    except UnidentifiedImageError:  # its message is about the in-memory file object, not the file
        problem = "not in an image format torchvision or Pillow reads"
    except Exception as exc:  # noqa: BLE001 - whatever the decoders say of a file that is no image
        problem = _without(_OBJECT_REPR.sub("the file", str(exc)), where)
    raise ZooError(
        f"cannot decode {where}: {problem}; it is not an image or a damaged one: replace or remove it"
    ) from None


_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")  # "<_io.BytesIO object at 0x7f...>" in a message


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


# Decoding is most of decode_crop's time, and libjpeg-turbo can decode a JPEG straight to 1/2, 1/4 or 1/8 of
# its size by scaling the DCT, which skips most of the inverse transform and the colour conversion of the
# pixels the resize would average away. Measured on one thread on 500x375 quality-90 JPEGs
# (benchmarks/decode_crop_speed.py; us per image, fastest of 40 passes on a busy 2-core machine):
#   full size:  torchvision.io.decode_jpeg 778, simplejpeg 763, Pillow 956 (its RGBX image to a tensor)
#   scale 1/2:  simplejpeg 667, Pillow with draft() 790
#   scale 1/4:  simplejpeg 629, Pillow with draft() 710
#   scale 1/8:  simplejpeg 575, Pillow with draft() 639
# So a JPEG is decoded at a reduced scale, through simplejpeg (straight into a NumPy array, faster than
# Pillow's draft at every scale), only when the box is still at least ``size`` pixels high and wide at that
# scale, so no upsampling is added; otherwise at full size, through simplejpeg too: the same libjpeg-turbo
# pixels as torchvision's decode_jpeg (identical on 300 of 300 benchmark files; CMYK ones a level of 255 apart
# at most, a rounding of the ink conversion) at 1-2% less time, and one path for every JPEG. (libjpeg-turbo's
# other scales, 7/8 to 5/8, took 15-50% longer than a full decode.) With 224-pixel outputs 500x375 images
# never reach 1/2 (the box would need 448 pixels a side); smaller outputs and larger photos do. Reduced-scale
# pixels differ from a full decode plus the antialiased resize of the same box: DCT scaling is a different
# low-pass filter. On those files, noise-rich (1/f spectra) and so a hard case, the 128-pixel centre crops
# (all at 1/2) differed by 2.8 levels of 255 on average, 43 at most.
#
# At full scale only the box is decoded where zoo.data._jpeg_box was built (the system's libjpeg, see its
# source): rows below the box are never decoded, rows above are entropy-decoded only, columns outside skip
# the inverse DCT and colour conversion. The same benchmark, decode and resize to 224 (us per image):
# RandomResizedCrop boxes 759 against simplejpeg's whole decode 930 (torchvision 954), centre crops 827
# against 981 (971); the pixels equal the whole decode's (max difference 0; decoding alone, 600 of 600 boxes
# equal at 567-580 us against 754-757). A JPEG it cannot take (CMYK, damaged: it fails on libjpeg's warnings
# too) goes the whole-decode way, which names a damaged file; damage below a box is not seen, as those rows
# are not read.


def _dct_scale(box: Box, size: int) -> int:
    """The largest of 8, 4, 2, 1 that divides the box into one still at least ``size`` on both sides."""
    return next(k for k in (8, 4, 2, 1) if k == 1 or min(box[2], box[3]) // k >= size)


def _ends_whole(data: memoryview) -> bool:
    """Whether a JPEG ends with its end marker (zero padding after it allowed)."""
    end = len(data)
    while end > 2 and data[end - 1] == 0:
        end -= 1
    return data[end - 2 : end] == _JPEG_END


def _decode_box(data: bytes, box: Box) -> torch.Tensor | None:
    """(h, w, 3) uint8 pixels of the box of a JPEG, decoded alone (see above); None where the module was not
    built or libjpeg declines, for the whole decode to read or name as damaged."""
    if _jpeg_box is None or not _ends_whole(memoryview(data)):  # a cut-off file: the whole decode says so
        return None
    top, left, h, w = box
    try:
        pixels, x, columns = _jpeg_box.decode(data, top, left, h, w)
    except ValueError:
        return None
    return torch.frombuffer(pixels, dtype=torch.uint8).view(h, columns, 3)[:, left - x : left - x + w]


def _decode_scaled(data: bytes, height: int, width: int, k: int) -> torch.Tensor | None:
    """(H/k, W/k, 3) uint8 pixels of a JPEG decoded at scale 1/k (k = 1: full size); None if simplejpeg
    cannot (a damaged file), for the general decoder to read or to name as damaged."""
    try:
        import simplejpeg
    except ImportError:  # an environment installed before it joined the dependencies: torchvision decodes
        return None

    shape = (-(-height // k), -(-width // k))  # libjpeg-turbo rounds scaled sides up
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=shape[0], min_width=shape[1])
    except Exception:  # noqa: BLE001 - whatever it is, the full decoder below reads or reports it
        return None
    return torch.from_numpy(pixels) if pixels.shape[:2] == shape else None


def decode_crop(data: bytes, where: str, size: int, choose: BoxChooser) -> torch.Tensor:
    """uint8 (3, size, size): the image decoded, the box ``choose`` picks for its (height, width), resized.

    A JPEG whose box is at least 2 ``size`` on both sides is decoded at 1/2, 1/4 or 1/8 scale (see above)
    and the reduced pixels covering the box (at most one more on each side) are resized; at full size,
    exactly the box, decoded alone where zoo.data._jpeg_box was built.
    """
    dims = check_pixels(data, where)
    if dims is not None and data[:3] == _JPEG_START:
        width, height = dims
        top, left, h, w = box = choose(height, width)
        k = _dct_scale(box, size)
        region = _decode_box(data, box) if k == 1 else None
        if region is not None:
            return resize(region.permute(2, 0, 1), (size, size)).contiguous()
        scaled = _decode_scaled(data, height, width, k)
        if scaled is not None:
            # the (H, W, 3) array resized through a (3, H, W) view, without a copy: torch's uint8 antialiased
            # resize reads interleaved channels as fast (133 against 137 us a box on the benchmark files)
            rows = slice(top // k, min(-(-(top + h) // k), scaled.shape[0]))
            cols = slice(left // k, min(-(-(left + w) // k), scaled.shape[1]))
            return resize(scaled[rows, cols].permute(2, 0, 1), (size, size)).contiguous()
        img = _decode_checked(data, where)
    else:
        img = _decode_checked(data, where)
        top, left, h, w = choose(img.shape[1], img.shape[2])
    return resize(img[:, top : top + h, left : left + w], (size, size))


def train_chooser(scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator) -> BoxChooser:
    """RandomResizedCrop boxes drawn from ``generator``."""
    return lambda height, width: train_box(height, width, scale, ratio, generator)


def eval_chooser(crop_pct: float) -> BoxChooser:
    """timm's evaluation crop: the centred square of ``crop_pct`` of the shorter side."""
    return lambda height, width: eval_box(height, width, crop_pct)
