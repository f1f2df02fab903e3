"""CIFAR-10, CIFAR-100, MNIST and Fashion-MNIST as in-memory uint8 tensors, read by torchvision.

The four differ only in what torchvision class reads them, so one factory maker registers all four
with the same parameters; nothing is fetched unless ``download`` is true.
"""

from __future__ import annotations

from typing import Literal

from zoo.plugins.datasets._torchvision import BatchSize, Fraction, load

from zoo import Seed, datasets

_DETAILS = """

    The official training split gives train and a stratified ``val_fraction`` held out with
    ``split_seed``; the official test split is the test set. Standardization statistics come from the
    train part only. Nothing is fetched unless ``download`` is true (the files then go under ``root``).
    ``batch_size`` and ``eval_batch_size`` are the training and evaluation batch sizes; ``standardize``
    takes statistics per pixel (feature), per channel, or none.
    """


def _register(name: str, summary: str) -> None:
    def factory(
        *,
        root: str = "data",
        download: bool = False,
        batch_size: BatchSize = 128,
        eval_batch_size: BatchSize = 1024,
        val_fraction: Fraction = 0.1,
        split_seed: Seed = 0,
        standardize: Literal["channel", "feature", "none"] = "channel",
    ):
        return load(
            name,
            root=root,
            download=download,
            val_fraction=val_fraction,
            split_seed=split_seed,
            standardize=standardize,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
        )

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = summary + _DETAILS
    datasets.register(factory, name=name)


_register("cifar10", "CIFAR-10 (Krizhevsky 2009): 60,000 3x32x32 colour images of 10 classes, through torchvision.")
_register("cifar100", "CIFAR-100 (Krizhevsky 2009): 60,000 3x32x32 colour images of 100 fine classes, through torchvision.")
_register("mnist", "MNIST (LeCun et al. 1998): 70,000 1x28x28 grey handwritten digits, through torchvision.")
_register(
    "fashion_mnist",
    "Fashion-MNIST (Xiao et al. 2017): 70,000 1x28x28 grey images of 10 kinds of clothing, through torchvision.",
)
