"""Ways to decode a JPEG and resize a box of it, timed on ImageNet-like files, for zoo.data.images to pick.

Each way turns the file's bytes into the uint8 (3, size, size) crop of one box (in the original's pixels),
all resized by zoo.data.images.resize (torchvision's antialiased resize) so that only the decoding differs:

- ``torchvision``: torchvision.io.decode_jpeg of the whole image (what zoo.data.images did first; the
  reference the others are compared with);
- ``pillow``: Pillow's decode of the whole image;
- ``pillow_draft``: Pillow after ``Image.draft``: libjpeg-turbo's DCT scaling to 1/2, 1/4 or 1/8, when the
  box is still at least ``size`` pixels on both sides at that scale (never an upsampling added);
- ``simplejpeg``: the same scaling through simplejpeg (installed separately), which decodes straight into
  a NumPy array; ``simplejpeg_eighths``: any of libjpeg-turbo's scales n/8 that keeps the box at least
  ``size``;
- ``box``: only the box decoded, at full scale, through zoo.data._jpeg_box (the system's libjpeg; built at
  install where its headers are);
- ``zoo``: zoo.data.images.decode_crop as it is now.

The box is mapped into the reduced image as the reduced pixels that cover it (at most one reduced pixel
more on each side).

Cases: ``eval`` is timm's centre crop (crop_pct 0.875), ``train`` RandomResizedCrop boxes (seeded), at
output sizes 224 and 128. One thread, as in a DataLoader worker. For each way: microseconds per image
(the fastest of --repeats passes over the files, the ways taking turns) and the max and mean absolute
pixel difference from ``torchvision``'s pixels for the same boxes.

    python benchmarks/decode_crop_speed.py --images 200
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _imagenet_like

from zoo.data import images


def _boxes(files: list[bytes], case: str, seed: int) -> list[images.Box]:
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    boxes = []
    for data in files:
        w, h = Image.open(io.BytesIO(data)).size
        if case == "eval":
            boxes.append(images.eval_box(h, w, 0.875))
        else:
            boxes.append(images.train_box(h, w, (0.08, 1.0), (3 / 4, 4 / 3), gen))
    return boxes


def way_torchvision(data: bytes, box: images.Box, size: int) -> torch.Tensor:
    from torchvision.io import decode_jpeg

    img = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    top, left, h, w = box
    return images.resize(img[:, top : top + h, left : left + w], (size, size))


_halvings = images._dct_scale  # the largest of 8, 4, 2, 1 that keeps the box at least size


def _resize_reduced(hwc: torch.Tensor, box: images.Box, size: int, eighths: int = 8) -> torch.Tensor:
    """The box (original pixels) of an (H, W, 3) image decoded at ``eighths``/8 of its size, resized: the
    reduced pixels covering it, at most one more on each side, never fewer than ``size``."""
    top, left, h, w = box
    rows = slice(top * eighths // 8, min(-(-(top + h) * eighths // 8), hwc.shape[0]))
    cols = slice(left * eighths // 8, min(-(-(left + w) * eighths // 8), hwc.shape[1]))
    return images.resize(hwc[rows, cols].permute(2, 0, 1), (size, size))


def way_pillow(data: bytes, box: images.Box, size: int, draft: bool = False) -> torch.Tensor:
    from PIL import Image

    pil = Image.open(io.BytesIO(data))
    k = _halvings(box, size) if draft else 1
    if k > 1:  # Pillow picks the largest scale 1/k that keeps at least the size asked for
        pil.draft("RGB", (pil.width // k, pil.height // k))
    return _resize_reduced(torch.from_numpy(np.asarray(pil.convert("RGB")).copy()), box, size, 8 // k)


def way_simplejpeg(data: bytes, box: images.Box, size: int, eighths: bool = False) -> torch.Tensor:
    import simplejpeg

    height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    if eighths:  # the smallest of libjpeg-turbo's scales n/8 that keeps the box at least size
        low = {"min_height": math.ceil(height * size / box[2]), "min_width": math.ceil(width * size / box[3])}
    else:
        k = _halvings(box, size)
        low = {"min_height": math.ceil(height / k), "min_width": math.ceil(width / k)}
    arr = simplejpeg.decode_jpeg(data, **low)
    return _resize_reduced(torch.from_numpy(arr), box, size, round(8 * arr.shape[1] / width))


def way_box(data: bytes, box: images.Box, size: int) -> torch.Tensor:
    region = images._decode_box(data, box)
    return images.resize(region.permute(2, 0, 1), (size, size))


def way_zoo(data: bytes, box: images.Box, size: int) -> torch.Tensor:
    return images.decode_crop(data, "bench", size, lambda h, w: box)


WAYS = {
    "torchvision": way_torchvision,
    "pillow": way_pillow,
    "pillow_draft": lambda data, box, size: way_pillow(data, box, size, draft=True),
    "simplejpeg": way_simplejpeg,
    "simplejpeg_eighths": lambda data, box, size: way_simplejpeg(data, box, size, eighths=True),
    "box": way_box,
    "zoo": way_zoo,
}


def measure(files: list[bytes], ways: list[str], repeats: int) -> dict:
    torch.set_num_threads(1)
    out = {}
    for size in (224, 128):
        for case in ("eval", "train"):
            boxes = _boxes(files, case, seed=0)
            reference = [way_torchvision(d, b, size).int() for d, b in zip(files, boxes)]
            times = {name: [] for name in ways}
            crops = {}
            # the ways take turns, in a rotated order each pass, so that a busy spell of the machine is
            # spread over all of them; the fastest pass of each counts (the least disturbed)
            for r in range(repeats):
                for name in ways[r % len(ways) :] + ways[: r % len(ways)]:
                    start = time.perf_counter()
                    crops[name] = [WAYS[name](d, b, size) for d, b in zip(files, boxes)]
                    times[name].append(time.perf_counter() - start)
            row = {}
            for name in ways:
                diff = torch.cat([(c.int() - r).abs().flatten() for c, r in zip(crops[name], reference)])
                row[name] = {
                    "us_per_image": round(1e6 * min(times[name]) / len(files)),
                    "max_abs_diff": int(diff.max()),
                    "mean_abs_diff": round(float(diff.float().mean()), 3),
                }
            out[f"{case}_{size}"] = row
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ways", nargs="+", help=f"of {', '.join(WAYS)} (default: all installed)")
    args = parser.parse_args(argv)
    ways = args.ways or [w for w in WAYS if not w.startswith("simplejpeg") or _installed("simplejpeg")]
    if images._jpeg_box is None:
        ways = [w for w in ways if w != "box"]
    with tempfile.TemporaryDirectory() as tmp:
        root = _imagenet_like.make_folder(Path(tmp), args.images)
        files = [p.read_bytes() for p in _imagenet_like.files(root)]
    result = measure(files, ways, args.repeats)
    print(json.dumps(result))
    return result


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    main()
