"""CIFAR-10 as in-memory uint8 tensors; read by torchvision from ``root``, downloaded only when asked."""

from __future__ import annotations

from typing import Literal

from zoo import datasets
from zoo.plugins.datasets._torchvision import BatchSize, Fraction, load


@datasets.register("cifar10")
def cifar10(
    *,
    root: str = "data",
    download: bool = False,
    batch_size: BatchSize = 128,
    eval_batch_size: BatchSize = 1024,
    val_fraction: Fraction = 0.1,
    split_seed: int = 0,
    standardize: Literal["channel", "feature", "none"] = "channel",
):
    """CIFAR-10 (Krizhevsky 2009): 60,000 32x32 colour images of 10 classes, through torchvision.

    Images are 3x32x32 uint8 (10 classes). The official training split gives train and a stratified
    ``val_fraction`` held out with ``split_seed``; the official test split is the test set.
    Standardization statistics come from the train part only. Nothing is fetched unless
    ``download`` is true.
    """
    return load(
        "cifar10",
        root=root,
        download=download,
        val_fraction=val_fraction,
        split_seed=split_seed,
        standardize=standardize,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
    )
