"""Batch augmentation on the training device: a recipe's ``augment:`` list, applied in order to whole batches.

Each registered augmentation returns a :class:`BatchAugmentation`: it takes a float image batch
(B, C, H, W) in [0, 1] and soft targets (B, K), draws its random parameters per sample from the
pipeline's generator, applies itself to each sample with probability ``p``, and returns both. Mixing
augmentations (CutMix, ...) change the targets; the others pass them through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from zoo.core.errors import ZooError


class BatchAugmentation:
    """Base class: per-sample randomness from ``generator``; ``p`` is each sample's chance of being changed.

    ``images_only``: the augmentation needs (B, C, H, W) batches (a mix of whole samples such as mixup works
    on any shape and says False).
    """

    images_only = True

    def __init__(self, p: float = 1.0) -> None:
        self.p = p

    def chosen(self, batch: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """A (B,) bool mask: which samples this augmentation changes."""
        if self.p >= 1:
            return torch.ones(batch, dtype=torch.bool, device=device)
        return torch.rand(batch, generator=generator, device=device) < self.p

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class AugmentPipeline:
    """The recipe's augmentations in order, with their own seeded generator on the batch's device."""

    def __init__(self, specs: Sequence[dict[str, Any]], num_classes: int, seed: int = 0) -> None:
        from zoo.core.catalog import augmentations

        self.steps = [augmentations.build(spec, f"augment[{i}]") for i, spec in enumerate(specs)]
        self.num_classes = num_classes
        self.seed = seed
        self._generator: torch.Generator | None = None

    def __bool__(self) -> bool:
        return bool(self.steps)

    def check_input_shape(self, input_shape: tuple[int, ...]) -> None:
        """Refuse, before any training, an image augmentation on inputs that are not (C, H, W) images."""
        for i, step in enumerate(self.steps):
            if getattr(step, "images_only", True) and len(input_shape) != 3:
                raise ZooError(
                    f"augment[{i}]: {type(step).__name__} works on images (channels, height, width), but this "
                    f"data set's inputs have shape {tuple(input_shape)}; drop it from augment"
                )

    def generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented inputs and soft targets (B, num_classes), rows summing to 1."""
        gen = self.generator(x.device)
        y = labels if labels.is_floating_point() else F.one_hot(labels, self.num_classes).to(x.dtype)
        for step in self.steps:
            x, y = step(x, y, gen)
        return x, y
