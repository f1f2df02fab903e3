"""Batch augmentation on the training device: a recipe's ``augment:`` list, applied in order to whole batches.

Each registered augmentation returns a :class:`BatchAugmentation`: it takes a float image batch
(B, C, H, W) in [0, 1] and soft targets (B, K), draws its random parameters per sample from the
pipeline's generator, applies itself to each sample with probability ``p``, and returns both. Mixing
augmentations (CutMix, ...) change the targets; the others pass them through.

Before training, each augmentation is tried on a sample batch of the data set's shape
(:func:`contract_problem`): it must return ``(x, y)`` of the shapes and dtypes it was given, with target
rows that still sum to 1. A plugin that breaks this is refused naming it, instead of failing mid-run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from zoo.core.errors import ComponentError, ZooError


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
        self.specs = list(specs)
        self.num_classes = num_classes
        self.seed = seed
        self._generator: torch.Generator | None = None

    def __bool__(self) -> bool:
        return bool(self.steps)

    def check_input_shape(self, input_shape: tuple[int, ...]) -> None:
        """Refuse, before any training, an image augmentation on inputs that are not (C, H, W) images, and
        an augmentation that breaks its contract on a sample batch of these inputs."""
        from zoo.core.catalog import augmentations
        from zoo.core.registry import split_spec

        for i, step in enumerate(self.steps):
            if getattr(step, "images_only", True) and len(input_shape) != 3:
                raise ZooError(
                    f"augment[{i}]: {type(step).__name__} works on images (channels, height, width), but this "
                    f"data set's inputs have shape {tuple(input_shape)}; drop it from augment"
                )
            problem = contract_problem(step, tuple(input_shape), self.num_classes)
            if problem:
                name, _ = split_spec(self.specs[i], f"augment[{i}]")
                raise ComponentError(f"augment[{i}]: {augmentations.get(name).title} {problem}")

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


def contract_problem(step, input_shape: tuple[int, ...], num_classes: int, batch: int = 4) -> str | None:
    """Try ``step`` on a random batch of ``input_shape`` inputs in [0, 1] with one-hot targets.

    None when it returns ``(x, y)`` of the shapes and dtypes it was given, finite, with target rows that
    are non-negative and sum to 1; otherwise the end of a sentence saying what it did instead. The batch
    and generator are the check's own and the global random state is put back, so a seeded run is
    unchanged by the check.
    """
    from zoo.core.errors import raised_at

    gen = torch.Generator().manual_seed(0)
    x = torch.rand((batch, *input_shape), generator=gen)
    y = F.one_hot(torch.arange(batch) % num_classes, num_classes).float()
    shape = f"a sample batch x of shape {tuple(x.shape)} with targets y of shape {tuple(y.shape)}"
    try:
        with torch.random.fork_rng(devices=[]):
            out = step(x.clone(), y.clone(), gen)
    except Exception as exc:  # noqa: BLE001 - whatever the augmentation raises is its plugin's to fix
        return f"failed on {shape}: {type(exc).__name__}: {exc}{raised_at(exc)}"
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
        got = type(out).__name__ if not isinstance(out, (tuple, list)) else f"a {type(out).__name__} of {len(out)}"
        return f"returned {got} for {shape}; an augmentation returns the pair (x, y)"
    new_x, new_y = out
    for label, old, new in (("x", x, new_x), ("y", y, new_y)):
        if new.shape != old.shape:
            return f"changed the shape of {label} from {tuple(old.shape)} to {tuple(new.shape)}; it must keep it"
        if new.dtype != old.dtype:
            return f"changed the dtype of {label} from {old.dtype} to {new.dtype}; it must keep it"
        if not torch.isfinite(new).all():
            return f"returned non-finite values in {label} for {shape}"
    sums = new_y.sum(-1)
    if (new_y < -1e-6).any() or not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        return f"returned targets whose rows sum to {sums.tolist()}, not 1 (mix targets by the same weights as inputs)"
    return None
