"""Batch augmentation on the training device: a recipe's ``augment:`` list, applied in order to whole batches.

Each registered augmentation returns a :class:`BatchAugmentation`: it takes an image batch (B, C, H, W)
(floats in [0, 1]; uint8 pixels too where ``keeps_uint8`` says so) and soft targets (B, K), draws its
random parameters per sample from the pipeline's generator, applies itself to each sample with probability
``p``, and returns both. Mixing augmentations (CutMix, ...) change the targets; the others pass them through.

The pipeline runs the steps in the recipe's order but fuses what it can, without changing a single
output value:

- geometric steps that read every output pixel from one pixel of the same image (flips, shifts) declare it
  through :meth:`BatchAugmentation.pixel_map`; consecutive ones compose into one map, applied as a single
  gather, instead of one pass over the batch each;
- uint8 batches stay uint8 through steps that only move or mask pixels (``keeps_uint8``), a quarter of the
  bytes of float32, and become floats at the first step that computes with them, or inside it for a step
  that reads uint8 itself (``reads_uint8``).

Before training, each augmentation is tried on a sample batch of the data set's shape
(:func:`contract_problem`): it must return ``(x, y)`` of the shapes and dtypes it was given, with target
rows that still sum to 1. A plugin that breaks this is refused naming it, instead of failing mid-run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from zoo.core.errors import ComponentError, ZooError
from zoo.data.scratch import KERNEL_THREADS, LENDING, Scratch

# The CPU fast paths (zoo.data.augment_cpu) are compiled by numba on their first use: about 10 s once, then
# 1-2 s per process to load from the disk cache. They pay for that on real image batches; a smaller batch
# takes the torch-op path, so that small jobs (the digits recipes, most tests) never wait for the compiler.
CPU_KERNEL_MIN_VALUES = 1 << 16


def use_cpu_kernels(x: torch.Tensor) -> bool:
    """Whether ``x`` goes through the compiled CPU loops rather than torch ops."""
    return x.device.type == "cpu" and x.numel() >= CPU_KERNEL_MIN_VALUES


def unit_float(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 pixels as floats in [0, 1] as zoo.data.datamodule.to_unit_float does; floats as ``dtype``."""
    return x.to(dtype).div_(255) if x.dtype == torch.uint8 else x.to(dtype)


def _compose(first: torch.Tensor | None, then: torch.Tensor | None, then_fills: bool) -> torch.Tensor | None:
    """Index maps (B, N), None for "unchanged": first[b, then[b, i]], outside where either is outside."""
    if first is None or then is None:
        return then if first is None else first
    n = first.shape[1]
    if not then_fills:
        return first.gather(1, then)
    # every index of then outside [0, n), clamped to -1 or n and taken modulo n + 1, reads an appended -1
    return F.pad(first, (0, 1), value=-1).gather(1, then.clamp(-1, n).remainder(n + 1))


@dataclass(frozen=True)
class PixelMap:
    """Where a geometric augmentation reads each pixel: ``out[b, c, i, j] = x[b, c, rows[b, i], cols[b, j]]``.

    ``rows`` (B, H) and ``cols`` (B, W) hold source indices; an index outside the image (a shift's border)
    makes the output pixel 0, and None leaves that axis as it is. Flips, shifts and pad-and-crop are all
    separable like this, and a chain of them is again one such map: :meth:`then` composes two, :meth:`apply`
    runs the result as one gather. ``fills`` says whether any index may be outside (a static fact of the
    augmentation, so no device sync is needed to find out).
    """

    rows: torch.Tensor | None
    cols: torch.Tensor | None
    fills: bool = False

    def then(self, later: PixelMap) -> PixelMap:
        """This map followed by ``later``: one map reading straight from the original images."""
        return PixelMap(
            _compose(self.rows, later.rows, later.fills),
            _compose(self.cols, later.cols, later.fills),
            self.fills or later.fills,
        )

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The batch ``x`` (B, C, H, W; any dtype) remapped; values are copied, never computed."""
        b, _, h, w = x.shape
        rows = torch.arange(h, device=x.device).expand(b, h) if self.rows is None else self.rows
        cols = torch.arange(w, device=x.device).expand(b, w) if self.cols is None else self.cols
        if use_cpu_kernels(x):
            from zoo.data import augment_cpu

            return augment_cpu.apply_pixel_map(x, rows, cols)
        return gather_pixels(x, rows, cols, self.fills)


def gather_pixels(
    x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, fills: bool = True
) -> torch.Tensor:
    """PixelMap.apply in torch ops (zoo.data.augment_cpu does it faster on the CPU): one gather per batch."""
    b, c, h, w = x.shape
    flat = rows[:, :, None] * w + cols[:, None, :]  # (B, H, W) positions in the flat image
    src = x.flatten(2)
    if fills:
        outside = ((rows < 0) | (rows >= h))[:, :, None] | ((cols < 0) | (cols >= w))[:, None, :]
        flat = flat.masked_fill(outside, h * w)  # reads the zero pixel appended next
        src = F.pad(src, (0, 1))
    return src.gather(2, flat.view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)


class BatchAugmentation:
    """Base class: per-sample randomness from ``generator``; ``p`` is each sample's chance of being changed.

    ``images_only``: the augmentation needs (B, C, H, W) batches (a mix of whole samples such as mixup works
    on any shape and says False).
    ``keeps_uint8``: it only moves, masks or pastes pixels, so on uint8 pixels it gives exactly the uint8
    version of its float result, and returns uint8; the pipeline then defers the conversion to floats.
    ``reads_uint8``: it computes in float32 but also takes uint8 pixels, read as value / 255, converting as
    it goes instead of in a pass of its own; it returns float32 either way.
    ``compiled_on_cpu``: on the CPU its per-pixel work runs in zoo.data.augment_cpu's compiled loops, so the
    pipeline runs its torch ops (small ones) on one thread and lends the loops the others.
    A geometric augmentation can instead implement :meth:`pixel_map` alone: ``__call__`` then applies it.
    """

    images_only = True
    keeps_uint8 = False
    reads_uint8 = False
    compiled_on_cpu = False

    def __init__(self, p: float = 1.0) -> None:
        self.p = p

    def chosen(self, batch: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """A (B,) bool mask: which samples this augmentation changes."""
        if self.p >= 1:
            return torch.ones(batch, dtype=torch.bool, device=device)
        return torch.rand(batch, generator=generator, device=device) < self.p

    def pixel_map(self, shape: torch.Size, generator: torch.Generator, device: torch.device) -> PixelMap:
        """For augmentations that move pixels within each image: where each output pixel comes from.

        Draws from ``generator`` exactly what ``__call__`` would, so fusing never changes a result.
        """
        raise NotImplementedError

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pixel_map(x.shape, generator, x.device).apply(x), y

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


def declared(step, flag: str) -> bool:
    """A step's ``keeps_uint8``/``reads_uint8``/``compiled_on_cpu``; a plugin's step need not subclass
    BatchAugmentation, and what it does not declare takes BatchAugmentation's default."""
    return getattr(step, flag, getattr(BatchAugmentation, flag))


def has_pixel_map(step: BatchAugmentation) -> bool:
    return getattr(type(step), "pixel_map", BatchAugmentation.pixel_map) is not BatchAugmentation.pixel_map


class AugmentPipeline:
    """The recipe's augmentations in order, with their own seeded generator on the batch's device."""

    def __init__(self, specs: Sequence[dict[str, Any]], num_classes: int, seed: int = 0) -> None:
        from zoo.core.catalog import augmentations

        self.steps = [augmentations.build(spec, f"augment[{i}]") for i, spec in enumerate(specs)]
        self.specs = list(specs)
        self.num_classes = num_classes
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._scratch = Scratch()
        # runs of consecutive geometric steps become one stage: a list, composed into one pixel map
        self._stages: list[BatchAugmentation | list[BatchAugmentation]] = []
        for step in self.steps:
            last = self._stages[-1] if self._stages else None
            if has_pixel_map(step) and isinstance(last, list):
                last.append(step)
            else:
                self._stages.append([step] if has_pixel_map(step) else step)

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

    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Tell the steps that fill pixels in the model's standardized space (random erasing's noise) the
        ``mean`` and ``std`` the model standardizes by after augmentation."""
        for step in self.steps:
            if hasattr(step, "set_input_stats"):
                step.set_input_stats(mean, std)

    def generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def __call__(
        self, x: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented inputs as ``dtype`` (uint8 pixels scaled to [0, 1]) and soft targets (B, num_classes).

        Target rows sum to 1. The result is the same, value for value, as converting ``x`` first and
        running the steps one by one.
        """
        gen = self.generator(x.device)
        y = labels if labels.is_floating_point() else F.one_hot(labels, self.num_classes).to(dtype)
        if x.dtype != torch.uint8:
            x = x.to(dtype)
        cpu, threads = x.device.type == "cpu", torch.get_num_threads()
        threads_token = KERNEL_THREADS.set(threads if cpu else None)
        try:
            for i, stage in enumerate(self._stages):
                # On the CPU the torch ops of a stage whose pixels go through compiled loops work on a few
                # thousand values (random draws, index maps), where a second thread costs more than it gives
                # (a log of 4,096 values: 6 us on one thread, 58 us on two, mostly waking the other); the
                # loops get the threads instead (KERNEL_THREADS).
                compiled = isinstance(stage, list) or declared(stage, "compiled_on_cpu")
                single = cpu and threads > 1 and compiled
                # every stage but the last may put its result in scratch: the next stage reads it, nobody
                # keeps it
                lend = cpu and i < len(self._stages) - 1
                token = LENDING.set(self._scratch.lend_for(i) if lend else None)
                if single:
                    torch.set_num_threads(1)
                try:
                    x, y = self._run(stage, x, y, gen, dtype)
                finally:
                    LENDING.reset(token)
                    if torch.get_num_threads() != threads:
                        torch.set_num_threads(threads)
        finally:
            KERNEL_THREADS.reset(threads_token)
        x = unit_float(x, dtype)
        # a last step that returns its input unchanged would hand out scratch, which the next batch overwrites
        return (x.clone() if self._scratch.holds(x) else x), y

    @staticmethod
    def _run(stage, x, y, gen, dtype):
        if isinstance(stage, list):
            pixel_map = stage[0].pixel_map(x.shape, gen, x.device)
            for step in stage[1:]:
                pixel_map = pixel_map.then(step.pixel_map(x.shape, gen, x.device))
            return pixel_map.apply(x), y
        reads_uint8 = declared(stage, "keeps_uint8") or (declared(stage, "reads_uint8") and dtype == torch.float32)
        if x.dtype == torch.uint8 and not reads_uint8:
            x = unit_float(x, dtype)
        return stage(x, y, gen)


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
