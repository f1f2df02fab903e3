"""decode_crop: reduced-scale JPEG decoding when the box allows, full-size pixels otherwise (the box alone
decoded where zoo.data._jpeg_box was built), errors named."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from zoo.core.errors import ZooError
from zoo.data import images
from zoo.data.images import decode, decode_crop, eval_chooser, resize


def jpeg(height: int, width: int, mode: str = "RGB", seed: int = 0, **options) -> bytes:
    """A photo-like JPEG: smooth colour gradients with a little fine texture."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:height, :width] / max(height, width)
    base = np.stack([np.sin(6 * rows + 1), np.cos(5 * cols), np.sin(4 * (rows + cols))], -1)
    pixels = np.clip(128 + 90 * base + rng.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **options)
    return buffer.getvalue()


def full_decode_crop(data: bytes, size: int, box) -> torch.Tensor:
    top, left, h, w = box
    return resize(decode(data, "x")[:, top : top + h, left : left + w], (size, size))


def differences(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    diff = (a.int() - b.int()).abs().float()
    return float(diff.mean()), float(diff.max())


def test_a_box_too_small_to_reduce_gets_the_full_decodes_pixels_and_the_header_size():
    data = jpeg(200, 300)
    seen = []

    def choose(height, width):
        seen.append((height, width))
        return 10, 20, 150, 190

    out = decode_crop(data, "a.jpg", 100, choose)  # 150 // 2 < 100: no reduction
    assert seen == [(200, 300)]
    assert out.shape == (3, 100, 100) and out.dtype == torch.uint8 and out.is_contiguous()
    assert torch.equal(out, full_decode_crop(data, 100, (10, 20, 150, 190)))


@pytest.mark.parametrize("mode, most", [("L", 0), ("CMYK", 1)])
def test_a_full_size_decode_has_the_general_decoders_pixels_in_other_colour_modes(mode, most):
    data = jpeg(200, 300, mode)
    box = (10, 20, 150, 190)
    out = decode_crop(data, "a.jpg", 100, lambda h, w: box)
    # simplejpeg rounds the CMYK to RGB conversion a level apart from torchvision's, nowhere more
    assert differences(out, full_decode_crop(data, 100, box))[1] <= most


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_large_box_is_decoded_at_reduced_scale_close_to_the_full_decode(mode):
    data = jpeg(320, 400, mode)
    box = (5, 30, 300, 340)  # 300 // 8 >= 32: decoded at 1/8
    out = decode_crop(data, "a.jpg", 32, lambda h, w: box)
    full = full_decode_crop(data, 32, box)
    mean, most = differences(out, full)
    assert out.shape == (3, 32, 32) and out.is_contiguous()
    assert not torch.equal(out, full)  # another filter: the reduced decode was used
    # the fine texture (std 6 levels) is what the two low-pass filters treat differently
    assert mean < 3.0 and most < 24, (mean, most)


def test_reduced_scale_keeps_the_box_where_it_is():
    # a box in one corner of an image whose quadrants differ: the crop shows that corner's colour only
    pixels = np.zeros((256, 256, 3), np.uint8)
    pixels[:128, :128] = (200, 30, 30)
    pixels[:128, 128:] = (30, 200, 30)
    pixels[128:, :128] = (30, 30, 200)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    for box, colour in (((0, 128, 128, 128), (30, 200, 30)), ((128, 0, 128, 128), (30, 30, 200))):
        out = decode_crop(buffer.getvalue(), "q.jpg", 16, lambda h, w: box)  # 128 // 8 >= 16: at 1/8
        centre = out[:, 2:14, 2:14].float().mean((1, 2))
        assert torch.allclose(centre, torch.tensor(colour, dtype=torch.float32), atol=12), centre


def test_a_cmyk_jpeg_at_reduced_scale_has_the_full_decoders_colours():
    data = jpeg(256, 256, "CMYK")
    box = eval_chooser(0.875)(256, 256)  # 224 // 4 >= 32: at 1/4
    out = decode_crop(data, "c.jpg", 32, eval_chooser(0.875))
    mean, most = differences(out, full_decode_crop(data, 32, box))
    assert mean < 2.0 and most < 8, (mean, most)  # inverted or unconverted inks would be off by ~100


def test_a_damaged_jpeg_is_named():
    data = jpeg(256, 256)
    with pytest.raises(ZooError, match="cannot decode cat/7.jpg"):
        decode_crop(data[: len(data) // 3] + b"\x00" * 50, "cat/7.jpg", 32, eval_chooser(0.875))


def encoded(pixels: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["WEBP", "GIF", "PNG", "JPEG", "BMP"])
def test_a_grey_request_gets_one_channel_in_every_format(fmt):
    pixels = np.zeros((12, 16, 3), np.uint8)
    pixels[:, :8] = (40, 200, 40)  # green and blue halves: distinct luma, so the grey is the image's own
    pixels[:, 8:] = (40, 40, 200)
    options = {"lossless": True} if fmt == "WEBP" else {}
    grey = decode(encoded(pixels, fmt, **options), f"a.{fmt.lower()}", color="gray")
    assert grey.shape == (1, 12, 16) and grey.dtype == torch.uint8
    expected = Image.fromarray(pixels).convert("L")  # ITU-R 601-2 luma, as every decoder weighs it
    left, right = int(grey[0, 6, 2]), int(grey[0, 6, 13])
    assert abs(left - expected.getpixel((2, 6))) <= 12 and abs(right - expected.getpixel((13, 6))) <= 12
    assert abs(left - right) > 40


def test_an_animated_gif_decodes_to_its_first_frame():
    frames = [np.full((8, 10, 3), value, np.uint8) for value in (30, 220)]
    data = encoded(frames[0], "GIF", save_all=True, append_images=[Image.fromarray(frames[1])])
    img = decode(data, "anim.gif")
    assert img.shape == (3, 8, 10) and abs(int(img[0, 4, 5]) - 30) <= 2


UNREADABLE = [b"not an image at all", b"GIF89a" + b"\x00" * 30, b"\x89PNG\r\n\x1a\n" + b"\x00" * 40]


@pytest.mark.parametrize("data", UNREADABLE, ids=["text", "gif-header", "png-header"])
def test_an_unreadable_file_is_named_without_object_reprs(data):
    with pytest.raises(ZooError) as caught:
        decode(data, "cat/1.jpg")
    message = str(caught.value)
    assert message.startswith("cannot decode cat/1.jpg: ") and "\n" not in message
    assert " at 0x" not in message and "BytesIO" not in message and "<" not in message


def test_a_jpeg_header_past_the_pixel_limit_is_refused_before_decoding():
    data = bytearray(jpeg(16, 16))
    sof = data.index(b"\xff\xc0")  # baseline frame header: length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = (20000).to_bytes(2, "big") * 2
    chosen = []
    with pytest.raises(ZooError, match=r"big\.jpg is 20000x20000 pixels, past the 89,478,485"):
        decode_crop(bytes(data), "big.jpg", 32, lambda h, w: chosen.append((h, w)) or (0, 0, h, w))
    assert chosen == []


needs_box_decoder = pytest.mark.skipif(images._jpeg_box is None, reason="zoo.data._jpeg_box was not built")


def test_the_box_decoder_is_built_where_libjpegs_headers_are():
    headers = [Path(p) / "jpeglib.h" for p in ("/usr/include", "/usr/local/include")]
    if not any(h.exists() for h in headers):
        pytest.skip("no libjpeg headers here: the optional extension is left out, whole images are decoded")
    assert images._jpeg_box is not None  # its build failed where it should not have


# odd sides, every chroma subsampling, grey, progressive and restart-marked files
KINDS = {
    "420": dict(height=203, width=317, subsampling=2),
    "422": dict(height=120, width=161, subsampling=1),
    "444": dict(height=97, width=130, subsampling=0),
    "grey": dict(height=75, width=91, mode="L"),
    "progressive": dict(height=150, width=210, progressive=True),
    "restarts": dict(height=140, width=190, restart_marker_rows=1),
}
FILES = {kind: jpeg(**spec) for kind, spec in KINDS.items()}
WHOLE = {kind: decode(data, kind) for kind, data in FILES.items()}


@needs_box_decoder
@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(sorted(KINDS)), corners=st.tuples(*[st.floats(0, 1)] * 4))
def test_a_box_decoded_alone_has_the_whole_decodes_pixels(kind, corners):
    whole = WHOLE[kind]
    _, height, width = whole.shape
    rows = sorted(round(c * height) for c in corners[:2])
    cols = sorted(round(c * width) for c in corners[2:])
    top, left = min(rows[0], height - 1), min(cols[0], width - 1)
    box = (top, left, max(rows[1] - top, 1), max(cols[1] - left, 1))
    region = images._decode_box(FILES[kind], box)
    assert region is not None and region.shape == (box[2], box[3], 3)
    expected = whole[:, top : top + box[2], left : left + box[3]].permute(1, 2, 0)
    assert torch.equal(region, expected), (kind, box)


@needs_box_decoder
def test_files_the_box_decoder_cannot_take_go_to_the_whole_decode():
    box = (10, 20, 100, 120)
    cmyk = jpeg(200, 300, "CMYK")
    assert images._decode_box(cmyk, box) is None  # libjpeg has no CMYK to RGB
    data = jpeg(200, 300)
    middle = len(data) // 2
    spliced = data[:middle] + b"\xff\xd3" + data[middle + 2 :]  # a marker inside the entropy-coded data
    assert images._decode_box(spliced, (0, 0, 200, 300)) is None  # libjpeg's warning fails it
    assert images._decode_box(data[:-2], box) is None  # no end marker: cut off
    assert images._decode_box(data + b"\x00" * 7, box) is not None  # padding after the end marker is fine
    assert images._decode_box(data, (150, 20, 60, 10)) is None  # rows past the image
