"""Prepared folders in the format the `streaming` data set reads (zoo-data.json + litdata chunks per split),
written here with litdata's chunk writer so the tests need no other part of zoo to make them."""

from __future__ import annotations

import io
import json
from pathlib import Path

SIZES = [(20, 24), (31, 17), (16, 16), (40, 28)]  # (height, width): images of mixed sizes and shapes


def jpeg(height: int, width: int, seed: int) -> bytes:
    """A small JPEG whose mean colour depends on ``seed`` % 3, so a model can tell the classes apart."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = np.zeros(3)
    base[seed % 3] = 180
    pixels = np.clip(base + rng.normal(40, 30, (height, width, 3)), 0, 255).astype("uint8")
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def write_split(folder: Path, items: list[dict]) -> None:
    """One split's chunks: each item a dict of the image's bytes, its label and its path.

    litdata's own chunk writer, in this process: litdata.optimize writes the same files but starts
    worker processes by spawning, which costs seconds a test cannot spend.
    """
    from litdata.streaming.writer import BinaryWriter

    folder.mkdir(parents=True)
    writer = BinaryWriter(str(folder), chunk_size=16)
    for i, item in enumerate(items):
        writer[i] = item
    writer.done()
    writer.merge()


def prepared(
    dest: Path, counts: dict[str, int], classes=("a", "b", "c"), bad: dict | None = None, by_class=False
) -> Path:
    """A prepared folder with ``counts[split]`` images per split, labels cycling through ``classes``, or class
    after class (``by_class``, as zoo data prepare writes them: each chunk of 16 then holds one class or two).

    ``bad[split]``: indices of that split whose bytes are no image (a damaged file).
    """
    dest.mkdir(parents=True)
    for split, n in counts.items():
        items = []
        for i in range(n):
            label = i * len(classes) // n if by_class else i % len(classes)
            h, w = SIZES[i % len(SIZES)]
            damaged = i in (bad or {}).get(split, [])
            data = b"not an image at all" if damaged else jpeg(h, w, label + 3 * i)
            items.append({"image": data, "label": label, "path": f"{split}/{classes[label]}/{i:04d}.jpg"})
        write_split(dest / split, items)
    meta = {"format": 1, "classes": list(classes), "splits": counts, "source": str(dest / "source"),
            "settings": {}}
    (dest / "zoo-data.json").write_text(json.dumps(meta))
    return dest
