"""Prepared folders (``zoo data prepare``), streamed: images decoded and cropped in DataLoader workers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from typing_extensions import Annotated

from zoo import datasets

Positive = Annotated[int, Field(ge=1)]


# the conformance kit skips it (no such folder) unless given a root; tests give it one
@datasets.register("streaming", examples=[{"root": "data/prepared"}])
def streaming(
    *,
    root: str,
    image_size: Annotated[int, Field(ge=8)] = 224,
    eval_size: Annotated[int, Field(ge=8)] | None = None,
    crop_pct: Annotated[float, Field(gt=0, le=1)] = 0.875,
    batch_size: Positive = 128,
    eval_batch_size: Positive = 256,
    num_workers: Annotated[int, Field(ge=0)] = 2,
    on_bad_image: Literal["stop", "skip"] = "stop",
    cache_dir: str | None = None,
):
    """A folder ``zoo data prepare`` wrote, streamed: ``root``, its path or a URL litdata reads (s3://...).

    Images are decoded in ``num_workers`` DataLoader worker processes and cropped there to one size: training
    images by the recipe's first augmentation when it crops per image (``random_resized_crop``), else like
    evaluation images; evaluation images get timm's centre crop of ``crop_pct`` of the shorter side,
    resized to ``eval_size`` (default: ``image_size``). Only the batches in flight are held in memory.
    Per-channel mean and std come from up to 5,000 training images spread over the split, with the
    evaluation crop. A damaged image stops the run naming it (``on_bad_image: stop``), or is left out and
    counted (``skip``). ``batch_size`` and ``eval_batch_size`` are the training and evaluation batch sizes.
    A URL ``root``'s chunks are downloaded into ``cache_dir`` (default: litdata's, ~/.lightning/chunks).
    """
    from zoo.data.streaming import StreamingData, read_meta

    meta = read_meta(root)
    return StreamingData(
        root,
        meta,
        image_size=image_size,
        eval_size=eval_size or image_size,
        crop_pct=crop_pct,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        num_workers=num_workers,
        on_bad_image=on_bad_image,
        cache_dir=cache_dir,
    )
