"""Policy augmentations (RandAugment, TrivialAugment, AutoAugment) and timm's random erasing, per sample
on whole batches.

The three policies run torchvision's own operations (``transforms.v2``: its classes' operation lists,
magnitude tables and ``_apply_image_or_video_transform``), so an operation at a magnitude gives
torchvision's pixels exactly. Each sample draws its own operations and magnitudes from the pipeline's
generator; the samples that drew the same operation at the same magnitude go through it together, as one
sub-batch. torchvision defines these operations on 8-bit pixels, and they run on them here: uint8 batches
stay uint8, and the float pixels of an image an operation runs on are read on the 8-bit grid
(round(255 x) / 255, which leaves pixels that came from uint8 as they are).

Grouping measured faster than calling the operation image by image: on 2 shared CPU cores RandAugment
did 4,184 images/s against 1,815 on 256 images of 32x32, 133 against 109 on 64 of 224x224 (README has
all four).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field
from typing_extensions import Annotated

from zoo import augmentations
from zoo.core.errors import ZooError
from zoo.data.augment import BatchAugmentation, unit_float
from zoo.plugins.augmentations import Probability, box_mask

if TYPE_CHECKING:
    from torchvision.transforms import v2 as tv

Interpolation = Annotated[
    Literal["nearest", "bilinear"],
    Field(description="how shears, translations and rotations read pixels between grid points"),
]
NO_OP = -1  # a sample's operation index when it takes none this round


# --- the policies' operations ------------------------------------------------------------------------


def apply_ops(
    x: torch.Tensor,
    op: torch.Tensor,
    magnitude: torch.Tensor,
    names: Sequence[str],
    policy: tv.Transform,
    interpolation: str = "nearest",
) -> torch.Tensor:
    """uint8 images ``x`` (B, C, H, W), sample b put through operation ``names[op[b]]`` at ``magnitude[b]``.

    ``op`` (B,) holds indices into ``names`` (NO_OP: left alone), ``magnitude`` (B,) the signed magnitudes
    torchvision's policies pass on; ``policy`` is a torchvision policy instance whose
    ``_apply_image_or_video_transform`` does the work. Samples sharing an (operation, magnitude) pair go
    through it as one sub-batch, which gives each the pixels it would get alone.
    """
    out = x.clone()
    pairs = torch.stack([op.to(torch.float64), magnitude.to(torch.float64)], 1).cpu()
    groups, which = pairs.unique(dim=0, return_inverse=True)
    for k, (index, value) in enumerate(groups.tolist()):
        if index == NO_OP:
            continue
        members = (which == k).nonzero()[:, 0].to(x.device)
        out[members] = policy._apply_image_or_video_transform(
            x.index_select(0, members), names[int(index)], value, interpolation=interpolation,
            fill=policy._fill,
        )
    return out


@dataclass(frozen=True)
class OpTable:
    """A policy's operations for one image size: names, magnitudes (ops, bins; 0 for an operation
    without one) and which are signed (a draw flips their sign half the time), from the torchvision
    class's ``_AUGMENTATION_SPACE``."""

    names: list[str]
    magnitudes: torch.Tensor
    signed: torch.Tensor

    @classmethod
    def of(cls, space: dict, bins: int, height: int, width: int) -> OpTable:
        names = list(space)
        rows = []
        for name in names:
            values = space[name][0](bins, height, width)
            values = torch.zeros(bins) if values is None else values
            rows.append(values.to(torch.float64))
        signed = torch.tensor([space[name][1] for name in names])
        return cls(names, torch.stack(rows), signed)

    def signed_magnitude(self, op, bin_index, flip, device) -> torch.Tensor:
        """Magnitudes of operations ``op`` at ``bin_index`` (both (B,)), negated where ``flip`` and signed."""
        value = self.magnitudes.to(device)[op.clamp_min(0), bin_index]
        return torch.where(flip & self.signed.to(device)[op.clamp_min(0)], -value, value)


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as they are; floats in [0, 1] on the 8-bit grid, as torchvision's policies read images."""
    return x if x.dtype == torch.uint8 else x.float().mul(255).round_().clamp_(0, 255).to(torch.uint8)


class PolicyAugmentation(BatchAugmentation):
    """A torchvision policy applied per sample: ``rounds`` draws an operation and magnitude per sample per
    round; the rounds run in order."""

    # it computes on 8-bit pixels whatever it is given, so its uint8 result is its float result times 255
    # exactly, and the pipeline may keep uint8 batches as they are until a later step needs floats
    keeps_uint8 = True

    def __init__(self, bins: int, interpolation: str, p: float) -> None:
        super().__init__(p)
        self.bins, self.interpolation = bins, interpolation
        self._policy: tv.Transform | None = None
        self._tables: dict[tuple[int, int], OpTable] = {}

    def make_policy(self, transforms) -> tv.Transform:
        """The torchvision policy instance, made from ``transforms`` (torchvision.transforms.v2)."""
        raise NotImplementedError

    @property
    def policy(self) -> tv.Transform:
        # made at first use rather than when the recipe is built: a first import of torchvision sets an
        # environment variable (TORCHINDUCTOR_CACHE_DIR) and a warnings filter, which zoo's build check
        # reports as the component's doing; a training process has imported it already, through Lightning
        if self._policy is None:
            from torchvision.transforms import v2

            self._policy = self.make_policy(v2)
        return self._policy

    def table(self, height: int, width: int) -> OpTable:
        if (height, width) not in self._tables:
            space = self.policy._AUGMENTATION_SPACE
            self._tables[height, width] = OpTable.of(space, self.bins, height, width)
        return self._tables[height, width]

    def rounds(self, b: int, table: OpTable, generator: torch.Generator, device: torch.device):
        """[(op, magnitude), ...] per round, each (B,): what every sample takes, before ``p`` is applied."""
        raise NotImplementedError

    def draws(self, shape: torch.Size, generator: torch.Generator, device: torch.device):
        """The rounds each sample of a batch of ``shape`` takes, with NO_OP for the samples ``p`` left out."""
        b, _, h, w = shape
        table = self.table(h, w)
        chosen = self.chosen(b, generator, device)
        rounds = self.rounds(b, table, generator, device)
        return table, [(torch.where(chosen, op, NO_OP), magnitude) for op, magnitude in rounds]

    def __call__(self, x, y, generator):
        table, rounds = self.draws(x.shape, generator, x.device)
        out = to_pixels(x)
        for op, magnitude in rounds:
            out = apply_ops(out, op, magnitude, table.names, self.policy, self.interpolation)
        if x.dtype == torch.uint8 or not rounds:
            return (out if rounds else x), y
        # the samples no operation ran on keep their float pixels, on the 8-bit grid or not
        touched = torch.stack([op != NO_OP for op, _ in rounds]).any(0)
        return torch.where(touched.view(-1, 1, 1, 1), unit_float(out, x.dtype), x), y

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


def _coin(b, generator, device) -> torch.Tensor:
    # torchvision negates a signed magnitude when torch.rand(()) <= 0.5
    return torch.rand(b, generator=generator, device=device) <= 0.5


class RandAugmentBatch(PolicyAugmentation):
    def __init__(self, num_ops: int, magnitude: int, bins: int, interpolation: str, p: float) -> None:
        super().__init__(bins, interpolation, p)
        self.num_ops, self.magnitude = num_ops, magnitude

    def make_policy(self, transforms):
        return transforms.RandAugment(
            self.num_ops, self.magnitude, self.bins, interpolation=self.interpolation
        )

    def rounds(self, b, table, generator, device):
        out = []
        for _ in range(self.num_ops):
            op = torch.randint(len(table.names), (b,), generator=generator, device=device)
            bin_index = torch.full_like(op, self.magnitude)
            out.append((op, table.signed_magnitude(op, bin_index, _coin(b, generator, device), device)))
        return out


class TrivialAugmentBatch(PolicyAugmentation):
    def make_policy(self, transforms):
        return transforms.TrivialAugmentWide(self.bins, interpolation=self.interpolation)

    def rounds(self, b, table, generator, device):
        op = torch.randint(len(table.names), (b,), generator=generator, device=device)
        bin_index = torch.randint(self.bins, (b,), generator=generator, device=device)
        return [(op, table.signed_magnitude(op, bin_index, _coin(b, generator, device), device))]


class AutoAugmentBatch(PolicyAugmentation):
    # torchvision's AutoAugment reads its sub-policies' magnitude levels 0..9 from 10-bin tables
    LEVELS = 10

    def __init__(self, policy_name: str, interpolation: str, p: float) -> None:
        super().__init__(self.LEVELS, interpolation, p)
        self.policy_name = policy_name

    def make_policy(self, transforms):
        policy = transforms.AutoAugmentPolicy(self.policy_name)
        return transforms.AutoAugment(policy, interpolation=self.interpolation)

    def rounds(self, b, table, generator, device):
        subpolicies = self.policy._policies
        # per sub-policy and step: operation index, probability, magnitude level
        op = torch.tensor([[table.names.index(s[0]) for s in pair] for pair in subpolicies], device=device)
        prob = torch.tensor([[s[1] for s in pair] for pair in subpolicies], device=device)
        level = torch.tensor([[s[2] or 0 for s in pair] for pair in subpolicies], device=device)
        pick = torch.randint(len(subpolicies), (b,), generator=generator, device=device)
        applies = torch.rand(b, 2, generator=generator, device=device) <= prob[pick]
        flip = torch.rand(b, 2, generator=generator, device=device) <= 0.5
        out = []
        for step in range(2):
            step_op = op[pick, step]
            magnitude = table.signed_magnitude(step_op, level[pick, step], flip[:, step], device)
            out.append((torch.where(applies[:, step], step_op, NO_OP), magnitude))
        return out


Bins = Annotated[int, Field(ge=2, le=256, description="how many magnitude levels the ranges are cut into")]


@augmentations.register("randaugment")
def randaugment(
    *,
    num_ops: Annotated[int, Field(ge=0, le=16)] = 2,
    magnitude: Annotated[int, Field(ge=0)] = 9,
    num_magnitude_bins: Bins = 31,
    interpolation: Interpolation = "nearest",
    p: Probability = 1.0,
) -> RandAugmentBatch:
    """RandAugment: num_ops operations per image, uniformly from 14, at one magnitude (Cubuk et al. 2020).

    Each image draws its own operations (identity, shears, translations, rotation, brightness, colour,
    contrast, sharpness, posterize, solarize, autocontrast, equalize) and signs; every one runs at level
    ``magnitude`` of ``num_magnitude_bins``: torchvision's RandAugment, per image.
    """
    if magnitude >= num_magnitude_bins:
        raise ZooError(f"magnitude {magnitude} must be below num_magnitude_bins ({num_magnitude_bins})")
    return RandAugmentBatch(num_ops, magnitude, num_magnitude_bins, interpolation, p)


@augmentations.register("trivialaugment")
def trivialaugment(
    *, num_magnitude_bins: Bins = 31, interpolation: Interpolation = "nearest", p: Probability = 1.0
) -> TrivialAugmentBatch:
    """TrivialAugment Wide: one operation per image at a random magnitude (Müller & Hutter 2021).

    Each image draws one of 14 operations uniformly and a level uniformly from ``num_magnitude_bins`` over
    the wide ranges (shear 0.99, translation 32 px, rotation 135 degrees, colour factors 1 +- 0.99):
    torchvision's TrivialAugmentWide, per image.
    """
    return TrivialAugmentBatch(num_magnitude_bins, interpolation, p)


@augmentations.register("autoaugment")
def autoaugment(
    *,
    policy: Literal["imagenet", "cifar10", "svhn"] = "imagenet",
    interpolation: Interpolation = "nearest",
    p: Probability = 1.0,
) -> AutoAugmentBatch:
    """AutoAugment: one of 25 learned sub-policies per image, two operations each (Cubuk et al. 2019).

    Each image draws a sub-policy of ``policy`` (searched on ImageNet, CIFAR-10 or SVHN); each of its two
    operations runs with its own probability at its own level: torchvision's AutoAugment, per image.
    """
    return AutoAugmentBatch(policy, interpolation, p)


# --- random erasing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErasingDraws:
    """What random erasing drew for a batch: per sample whether it is erased and how many boxes; per box
    (B, K) its tries (B, K, T: area fraction and log aspect ratio, as timm draws them), the try taken
    (-1: none fitted, or the box is beyond the sample's count) and the box it gave (top, left, height,
    width; an empty box where none)."""

    erase: torch.Tensor
    count: torch.Tensor
    area: torch.Tensor
    log_aspect: torch.Tensor
    taken: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor


def draw_erasing(
    b: int,
    h: int,
    w: int,
    chosen: torch.Tensor,
    area: tuple[float, float],
    aspect: tuple[float, float],
    max_count: int,
    generator: torch.Generator,
    tries: int = 10,
) -> ErasingDraws:
    """timm's RandomErasing box draws for a batch at once: up to ``tries`` tries per box, the first whose
    sides (rounded from area and aspect in float64, as timm's Python floats) fit inside the image taken."""
    device = chosen.device
    count = torch.randint(1, max_count + 1, (b,), generator=generator, device=device)
    u = torch.rand(2, b, max_count, tries, generator=generator, device=device, dtype=torch.float64)
    fraction = area[0] + (area[1] - area[0]) * u[0]
    log_aspect = math.log(aspect[0]) + (math.log(aspect[1]) - math.log(aspect[0])) * u[1]
    target = fraction * (h * w) / count.view(b, 1, 1)
    ratio = log_aspect.exp()
    heights = (target * ratio).sqrt().round().long()
    widths = (target / ratio).sqrt().round().long()
    live = chosen.view(b, 1) & (torch.arange(max_count, device=device) < count.view(b, 1))
    fits = (heights < h) & (widths < w) & live.unsqueeze(-1)
    found = fits.any(-1)
    taken = torch.where(found, fits.to(torch.uint8).argmax(-1), -1)
    height = heights.gather(-1, taken.clamp_min(0).unsqueeze(-1))[..., 0] * found
    width = widths.gather(-1, taken.clamp_min(0).unsqueeze(-1))[..., 0] * found
    place = torch.rand(2, b, max_count, generator=generator, device=device, dtype=torch.float64)
    top = (place[0] * (h - height + 1)).long()  # uniform over 0..h - height, as random.randint
    left = (place[1] * (w - width + 1)).long()
    return ErasingDraws(chosen, count, fraction, log_aspect, taken, top, left, height, width)


def erase_boxes(
    x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: torch.Tensor, width: torch.Tensor, fill
) -> torch.Tensor:
    """``x`` (B, C, H, W) with each sample's boxes (B, K: top, left, height, width) set to ``fill``, box
    by box, later boxes over earlier ones. ``fill`` broadcasts to (B, K, C, H, W): box k of sample b
    takes its pixels from fill[b, k] (a noise image, a colour (C, 1, 1), ...)."""
    b, k_boxes = top.shape
    h, w = x.shape[-2:]
    fill = fill.expand(b, k_boxes, *fill.shape[2:])
    for k in range(k_boxes):
        inside = box_mask(top[:, k], top[:, k] + height[:, k], left[:, k], left[:, k] + width[:, k], h, w)
        x = torch.where(inside, fill[:, k].to(x.dtype), x)
    return x


class RandomErasing(BatchAugmentation):
    def __init__(self, p, area, aspect, max_count, mode) -> None:
        super().__init__(p)
        self.area, self.aspect, self.max_count, self.mode = tuple(area), tuple(aspect), max_count, mode
        self.mean, self.std = torch.zeros(1), torch.ones(1)

    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """The standardization the model applies after augmentation, which the fill's noise is drawn in."""
        self.mean, self.std = mean.detach().clone(), std.detach().clone()

    def draws(self, shape: torch.Size, generator: torch.Generator, device: torch.device) -> ErasingDraws:
        b, _, h, w = shape
        chosen = self.chosen(b, generator, device)
        return draw_erasing(b, h, w, chosen, self.area, self.aspect, self.max_count, generator)

    def standard_fill(self, shape, generator, device) -> torch.Tensor:
        """Fill values in the standardized space (timm's), broadcastable to (B, K, C, H, W)."""
        b, c, h, w = shape
        if self.mode == "pixel":  # one noise image per sample: its boxes' pixels are all independent draws
            return torch.randn(b, 1, c, h, w, generator=generator, device=device)
        if self.mode == "rand":
            return torch.randn(b, self.max_count, c, 1, 1, generator=generator, device=device)
        return torch.zeros(1, 1, 1, 1, 1, device=device)

    def __call__(self, x, y, generator):
        d = self.draws(x.shape, generator, x.device)
        # noise is drawn, and pixels rewritten, for the erased samples alone: a quarter of them at p = 0.25
        rows = d.erase.nonzero()[:, 0]
        if len(rows) == 0:
            return x, y
        z = self.standard_fill((len(rows), *x.shape[1:]), generator, x.device)
        # the model sees (x - mean) / std, so noise z there is mean + std z here
        fill = self.mean.to(x.device, x.dtype) + self.std.to(x.device, x.dtype) * z
        box = [t.index_select(0, rows) for t in (d.top, d.left, d.height, d.width)]
        return x.index_copy(0, rows, erase_boxes(x.index_select(0, rows), *box, fill)), y


@augmentations.register("random_erasing")
def random_erasing(
    *,
    p: Probability = 0.25,
    min_area: Annotated[float, Field(gt=0, le=1)] = 0.02,
    max_area: Annotated[float, Field(gt=0, le=1)] = 1 / 3,
    min_aspect: Annotated[float, Field(gt=0, le=1)] = 0.3,
    max_count: Annotated[int, Field(ge=1, le=16)] = 1,
    mode: Literal["pixel", "rand", "const"] = "pixel",
) -> RandomErasing:
    """Random erasing: boxes of each image replaced by noise (Zhong et al. 2020), as timm's --reprob.

    With probability p an image gets 1..max_count boxes; a box covers a fraction U[min_area, max_area] / count
    of the image at aspect ratio log-uniform in [min_aspect, 1 / min_aspect] (10 tries to fit). timm fills
    after normalization, by ``mode``: N(0, 1) per pixel (pixel), per box and channel (rand) or 0 (const);
    the model standardizes after augmentation here, so the fill is mean + std N(0, 1) (the mean for const).
    """
    if min_area > max_area:
        raise ZooError(f"min_area {min_area} is above max_area {max_area}")
    return RandomErasing(p, (min_area, max_area), (min_aspect, 1 / min_aspect), max_count, mode)
