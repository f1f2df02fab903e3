"""Synthetic data: seeded random uint8 images whose class shifts their mean; for tests and benchmarks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from typing_extensions import Annotated

from zoo import Seed, datasets

Count = Annotated[int, Field(ge=1)]


@datasets.register("synthetic")
def synthetic(
    *,
    shape: list[int] = [3, 32, 32],  # noqa: B006 (validated into a fresh list; never mutated)
    num_classes: Annotated[int, Field(ge=2)] = 10,
    n_train: Count = 1000,
    n_val: Count = 200,
    n_test: Count = 200,
    signal: Annotated[float, Field(ge=0)] = 0.25,
    seed: Seed = 0,
    batch_size: Count = 64,
    eval_batch_size: Count = 1024,
    standardize: Literal["channel", "feature", "none"] = "channel",
):
    """Random uint8 images of any ``shape`` whose class sets a mean pattern, so a model can beat chance.

    Every class has a fixed random pattern; a sample is mid-grey plus ``signal`` times its class's
    pattern plus unit noise (in units of 64 grey levels), clipped to 0..255. Classes are balanced and
    every split is drawn from ``seed``. Larger ``signal`` is easier; 0 leaves nothing to learn.
    ``num_classes`` classes; ``n_train``, ``n_val`` and ``n_test`` samples per split; ``batch_size`` and
    ``eval_batch_size`` are the training and evaluation batch sizes; ``standardize`` picks the statistics.
    """
    import torch

    from zoo.core.errors import ZooError
    from zoo.data.datamodule import DataModule, Split

    if not shape or min(shape) < 1:
        raise ZooError(f"synthetic: shape must be a non-empty list of positive sizes, got {shape}")

    gen = torch.Generator().manual_seed(seed)
    patterns = torch.randn((num_classes, *shape), generator=gen)

    def draw(n: int) -> Split:
        y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
        noise = torch.randn((n, *shape), generator=gen)
        x = 128 + 64 * (signal * patterns[y] + noise)
        return Split(x.round().clamp(0, 255).to(torch.uint8), y)

    train, val, test = draw(n_train), draw(n_val), draw(n_test)
    return DataModule.standardized(
        train,
        val,
        test,
        classes=[f"class{i}" for i in range(num_classes)],
        standardize=standardize,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
    )
