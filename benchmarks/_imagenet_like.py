"""ImageNet-like JPEG files for the decode and input-pipeline benchmarks, made here, seeded.

Not a benchmark itself (hence the underscore). Each image is about 500x375 (ImageNet's typical size; the
orientation and a few tens of pixels vary per image), saved at quality 90. The content is what makes a JPEG
cost what it costs to decode: colour noise with the 1/f amplitude spectrum of natural images (smooth areas,
edges and fine texture at every scale, so the files come out near ImageNet's 100-150 kB rather than the few
kB of a flat picture) under a few hard-edged shapes. Nothing is downloaded, so the GPU machine, which sees
only this repository, makes the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def image(rng: np.random.Generator) -> np.ndarray:
    """One uint8 (H, W, 3) picture: 1/f colour noise plus a few filled ellipses and rectangles."""
    long_side, short_side = int(rng.integers(470, 531)), int(rng.integers(340, 401))
    h, w = (short_side, long_side) if rng.random() < 0.75 else (long_side, short_side)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    amplitude = 1 / np.maximum(np.hypot(fy, fx), 1 / max(h, w))
    spectrum = amplitude * np.exp(2j * np.pi * rng.random((3, h, fx.shape[1])))
    field = np.fft.irfft2(spectrum, s=(h, w))
    field = (field - field.mean((1, 2), keepdims=True)) / field.std((1, 2), keepdims=True)
    # channels partly shared, as colours in photographs are correlated
    mixed = np.einsum("ij,jhw->hwi", 0.6 * np.eye(3) + 0.4 / 3, field)
    pixels = 128 + 45 * mixed
    rows, cols = np.ogrid[:h, :w]
    for _ in range(int(rng.integers(3, 8))):
        colour = rng.uniform(0, 255, 3)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(20, h / 2), rng.uniform(20, w / 2)
        if rng.random() < 0.5:
            inside = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 < 1
        else:
            inside = (abs(rows - cy) < ry / 2) & (abs(cols - cx) < rx / 2)
        pixels[inside] = 0.55 * pixels[inside] + 0.45 * colour  # the texture shows through the shape
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _save(job: tuple[Path, int, int, int]) -> None:
    from PIL import Image

    path, seed, index, quality = job
    # each image from its own seed, so the files are the same however many processes make them
    Image.fromarray(image(np.random.default_rng((seed, index)))).save(path, quality=quality)


def make_folder(dest: Path, count: int, classes: int = 10, seed: int = 0, quality: int = 90) -> Path:
    """``count`` JPEGs in ``dest``/class_<k>/ (an ImageFolder layout), ``count // classes`` a class, made by
    as many processes as there are CPUs (about 30 ms an image on one)."""
    from concurrent.futures import ProcessPoolExecutor

    for k in range(classes):
        (dest / f"class_{k}").mkdir(parents=True, exist_ok=True)
    jobs = [(dest / f"class_{i % classes}" / f"{i:05d}.jpg", seed, i, quality) for i in range(count)]
    with ProcessPoolExecutor(min(os.cpu_count() or 1, 16)) as pool:
        list(pool.map(_save, jobs, chunksize=16))
    return dest


def files(root: Path) -> list[Path]:
    return sorted(root.glob("*/*.jpg"))
