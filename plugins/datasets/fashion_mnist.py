"""Fashion-MNIST as in-memory uint8 tensors; read by torchvision from ``root``, downloaded only when asked."""

from __future__ import annotations

from typing import Literal

from zoo import datasets
from zoo.plugins.datasets._torchvision import BatchSize, Fraction, load


@datasets.register("fashion_mnist")
def fashion_mnist(
    *,
    root: str = "data",
    download: bool = False,
    batch_size: BatchSize = 128,
    eval_batch_size: BatchSize = 1024,
    val_fraction: Fraction = 0.1,
    split_seed: int = 0,
    standardize: Literal["channel", "feature", "none"] = "channel",
):
    """Fashion-MNIST (Xiao et al. 2017): 70,000 28x28 grey images of 10 kinds of clothing, through torchvision.

    Images are 1x28x28 uint8 (10 kinds of clothing). The official training split gives train and a stratified
    ``val_fraction`` held out with ``split_seed``; the official test split is the test set.
    Standardization statistics come from the train part only. Nothing is fetched unless
    ``download`` is true.
    """
    return load(
        "fashion_mnist",
        root=root,
        download=download,
        val_fraction=val_fraction,
        split_seed=split_seed,
        standardize=standardize,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
    )
