"""scikit-learn's handwritten digits: 1797 8x8 grey images of 0-9, shipped inside scikit-learn (no download)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from typing_extensions import Annotated

from zoo import Seed, datasets

Fraction = Annotated[float, Field(gt=0, lt=1)]


@datasets.register("digits")
def digits(
    *,
    batch_size: Annotated[int, Field(ge=1)] = 64,
    eval_batch_size: Annotated[int, Field(ge=1)] = 1024,
    val_fraction: Fraction = 0.1,
    test_fraction: Fraction = 0.2,
    split_seed: Seed = 0,
    standardize: Literal["feature", "channel", "none"] = "feature",
):
    """Handwritten digits 0-9 as 1x8x8 images (scikit-learn), with a fixed stratified train/val/test split.

    Pixels are scaled to [0, 1]. Standardization statistics come from the training split only: per
    pixel (``feature``, what scikit-learn's StandardScaler does) or one mean and std for the image
    (``channel``); the model applies them after augmentation. ``val_fraction`` and ``test_fraction`` of
    the images, stratified and drawn with ``split_seed``, are held out; ``batch_size`` and
    ``eval_batch_size`` are the training and evaluation batch sizes; ``standardize`` picks the statistics.
    """
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from zoo.core.errors import ZooError
    from zoo.data.datamodule import DataModule, Split

    if val_fraction + test_fraction >= 1:
        raise ZooError(f"digits: val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction}")
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8), values 0..16
    y = torch.tensor(bunch.target, dtype=torch.long)
    _check_sizes(len(y), 10, val_fraction, test_fraction)
    idx = list(range(len(y)))
    rest, test_idx = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=split_seed)
    train_idx, val_idx = train_test_split(
        rest, test_size=val_fraction / (1 - test_fraction), stratify=y[rest], random_state=split_seed
    )
    train_idx, val_idx, test_idx = (torch.tensor(sorted(i)) for i in (train_idx, val_idx, test_idx))

    x = x / 16.0  # pixels to [0, 1], like every other image data set
    return DataModule.standardized(
        Split(x[train_idx], y[train_idx]),
        Split(x[val_idx], y[val_idx]),
        Split(x[test_idx], y[test_idx]),
        classes=[str(i) for i in range(10)],
        standardize=standardize,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
    )


def _check_sizes(n: int, classes: int, val_fraction: float, test_fraction: float) -> None:
    """Refuse fractions leaving a part fewer images than classes: a stratified split cannot make it.

    The counts follow scikit-learn's train_test_split: a test share is rounded up, the rest remains.
    """
    import math

    from zoo.core.errors import ZooError

    test = math.ceil(test_fraction * n)
    rest = n - test
    val = math.ceil(val_fraction / (1 - test_fraction) * rest)
    sizes = {"train": rest - val, "val": val, "test": test}
    fix = {
        "train": "lower data.val_fraction or data.test_fraction",
        "val": "raise data.val_fraction",
        "test": "raise data.test_fraction",
    }
    for part, size in sizes.items():
        if size < classes:
            raise ZooError(
                f"digits: val_fraction={val_fraction}, test_fraction={test_fraction} leave {size} of the "
                f"{n} images for {part}; a stratified split needs one per class ({classes}): {fix[part]}"
            )
