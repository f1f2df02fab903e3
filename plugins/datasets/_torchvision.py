"""Shared loading for the data sets torchvision knows how to read (and, if asked, download)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pydantic import Field
from typing_extensions import Annotated

from zoo.core.errors import ZooError

Fraction = Annotated[float, Field(gt=0, lt=1)]
BatchSize = Annotated[int, Field(ge=1)]


@dataclass(frozen=True)
class Source:
    """Where torchvision keeps one data set under ``root``, and what a user would have to put there."""

    title: str
    cls: str
    folder: str
    files: str
    size: str


IDX_FILES = "the four unpacked idx files (train-images-idx3-ubyte, ...)"
SOURCES = {
    "cifar10": Source("CIFAR-10", "CIFAR10", "cifar-10-batches-py", "the unpacked cifar-10-python.tar.gz", "163 MB"),
    "cifar100": Source("CIFAR-100", "CIFAR100", "cifar-100-python", "the unpacked cifar-100-python.tar.gz", "161 MB"),
    "mnist": Source("MNIST", "MNIST", "MNIST/raw", IDX_FILES, "11 MB"),
    "fashion_mnist": Source("Fashion-MNIST", "FashionMNIST", "FashionMNIST/raw", IDX_FILES, "30 MB"),
}


def load(
    name: str,
    *,
    root: str,
    download: bool,
    val_fraction: float,
    split_seed: int,
    standardize: str,
    batch_size: int,
    eval_batch_size: int,
):
    """The named set as a DataModule: val carved (stratified) from the official train split, test as is."""
    import torch
    import torchvision.datasets

    from zoo.data.datamodule import DataModule, Split, stratified_split

    source = SOURCES[name]
    top = os.path.abspath(root)
    where = os.path.join(top, source.folder)
    cls = getattr(torchvision.datasets, source.cls)
    try:
        official = [cls(root, train=train, download=download) for train in (True, False)]
    except (RuntimeError, OSError) as exc:
        # torchvision says "Dataset not found or corrupted" without naming a path; say which and what to do.
        if download:  # no network, a full disk, a checksum that does not match
            raise ZooError(f"{name}: could not fetch {source.title} into {top}: {exc}") from None
        raise ZooError(
            f"{name}: {source.title} not found (or incomplete) in {where}; run with data.download=true to "
            f"fetch it ({source.size}), set data.root to where it is, or put {source.files} there"
        ) from None

    def pixels(ds) -> torch.Tensor:
        x = torch.as_tensor(ds.data)  # CIFAR: numpy (N, H, W, C); MNIST: tensor (N, H, W)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        return x.contiguous().to(torch.uint8)

    (x, test_x), (y, test_y) = (
        [pixels(ds) for ds in official],
        [torch.as_tensor(ds.targets, dtype=torch.long) for ds in official],
    )
    train_idx, val_idx = stratified_split(y, [val_fraction], split_seed)
    if len(val_idx) == 0 or len(train_idx) < 2:
        raise ZooError(
            f"{name}: val_fraction={val_fraction} of {len(y)} training images leaves {len(train_idx)} for "
            f"train and {len(val_idx)} for val (each class's share is rounded); choose one that leaves both"
        )
    train = Split(x[train_idx], y[train_idx])
    classes = list(official[0].classes)
    return DataModule.standardized(
        train,
        Split(x[val_idx], y[val_idx]),
        Split(test_x, test_y),
        classes=classes,
        standardize=standardize,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
    )
