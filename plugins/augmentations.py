"""Batch augmentations: a pure tensor function for each, and a thin registered wrapper on top."""

from __future__ import annotations

import math
from typing import Literal, Union

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field
from typing_extensions import Annotated

from zoo import augmentations
from zoo.data.augment import BatchAugmentation, PixelMap, unit_float, use_cpu_kernels

Probability = Annotated[float, Field(ge=0, le=1, description="each sample's chance of being changed")]


def _border(index: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Source indices past the edge of an axis of ``size`` pixels resolved as ``F.pad``'s modes fill them.

    constant: left outside (a PixelMap reads 0 there); replicate: the nearest edge pixel; circular: wrapped
    around; reflect: mirrored about the edge pixel without repeating it (period 2 (size - 1)).
    """
    if mode == "constant":
        return index
    if mode == "replicate":
        return index.clamp(0, size - 1)
    if mode == "circular":
        return index.remainder(size)
    period = max(2 * (size - 1), 1)
    folded = index.remainder(period)
    return torch.where(folded < size, folded, period - folded)


def shift_map(dy: torch.Tensor, dx: torch.Tensor, h: int, w: int, mode: str = "constant") -> PixelMap:
    """The pixel map moving each image by its (dy, dx): out[i, j] = x[i + dy, j + dx], border by ``mode``."""
    arange = torch.arange(max(h, w), device=dy.device)
    rows = _border(dy.view(-1, 1) + arange[:h], h, mode)
    cols = _border(dx.view(-1, 1) + arange[:w], w, mode)
    return PixelMap(rows, cols, fills=mode == "constant")


def translate_batch(
    x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, mode: str = "constant"
) -> torch.Tensor:
    """Shift each image of ``x`` (B, C, H, W) by its own (dy, dx), filling the border by ``mode``.

    The same as padding by at least max |dy|, |dx| with ``F.pad(mode=mode)`` and cropping the original size at
    offset (padding + dy, padding + dx), as one gather for the whole batch instead of a crop per image.
    """
    return shift_map(dy, dx, x.shape[2], x.shape[3], mode).apply(x)


class RandomCrop(BatchAugmentation):
    def __init__(self, padding: int, mode: str, p: float) -> None:
        super().__init__(p)
        self.padding, self.mode = padding, mode

    def pixel_map(self, shape, generator, device):
        b, _, h, w = shape
        offsets = torch.randint(-self.padding, self.padding + 1, (2, b), generator=generator, device=device)
        if self.p < 1:
            offsets *= self.chosen(b, generator, device)
        return shift_map(offsets[0], offsets[1], h, w, self.mode)


@augmentations.register("crop")
def crop(
    *,
    padding: Annotated[int, Field(ge=1)] = 4,
    mode: Literal["constant", "reflect", "replicate", "circular"] = "constant",
    p: Probability = 1.0,
) -> RandomCrop:
    """Pad-and-random-crop: each image shifted by up to ``padding`` pixels each way (Krizhevsky et al. 2012).

    out[i, j] = pad(x)[i + padding + dy, j + padding + dx], with dy, dx ~ U{-padding..padding} per image;
    ``mode`` fills the border: ``constant`` with zeros (black), ``reflect`` mirrors it.
    """
    return RandomCrop(padding, mode, p)


# --- shared helpers ---------------------------------------------------------------------------------

Strength = Annotated[float, Field(ge=0)]


def _range(*, above: float | None = None, within: tuple[float, float] | None = None) -> AfterValidator:
    """A pydantic check that a (low, high) pair is ordered and in bounds, so a bad recipe fails validation."""

    def check(pair: tuple[float, float]) -> tuple[float, float]:
        if pair[0] > pair[1]:
            raise ValueError("a range is (low, high) with low <= high")
        if above is not None and pair[0] <= above:
            raise ValueError(f"both ends must be > {above}")
        if within is not None and not within[0] <= pair[0] <= pair[1] <= within[1]:
            raise ValueError(f"both ends must lie in [{within[0]}, {within[1]}]")
        return pair

    return AfterValidator(check)


PositiveRange = Annotated[tuple[float, float], _range(above=0)]
UnitRange = Annotated[tuple[float, float], _range(within=(0, 1))]


def _uniform(lo: float, hi: float, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)


def _log_gamma(shape: float, n: int, generator: torch.Generator, device: torch.device, tries: int = 8):
    """log of n Gamma(shape, 1) draws (Marsaglia & Tsang 2000), from ``generator``.

    torch's own Gamma/Beta samplers ignore generators, which would break the pipeline's seeding, so this
    redoes the squeeze-free Marsaglia-Tsang rejection step with ``tries`` candidates per draw at once and
    keeps the first accepted one. With shape >= 1 each candidate is accepted with probability above 0.95,
    so all of them failing (then the first candidate is kept, a tiny bias) has odds below 1e-10.
    Shapes below 1 use the boost Gamma(a) = Gamma(a + 1) * U^(1/a), in logs so that tiny values survive.
    """
    boosted = shape < 1
    d = (shape + 1 if boosted else shape) - 1 / 3
    c = 1 / math.sqrt(9 * d)
    # (n, tries): each draw's candidates side by side, so that finding the first accepted one reduces over
    # the contiguous dimension (an argmax over the other took 50 us for 512 draws on the CPU, this one 5 us)
    z = torch.randn(n, tries, generator=generator, device=device)
    u = 1 - torch.rand(n, tries, generator=generator, device=device)  # (0, 1], so log(u) is finite
    v = z.mul(c).add_(1).pow_(3)
    log_v = v.clamp_min(torch.finfo(v.dtype).tiny).log_()
    # accept when log u < z^2 / 2 + d (1 - v + log v); in place, in few ops: each costs several us here
    bound = (log_v - v).add_(1).mul_(d).addcmul_(z, z, value=0.5)
    accept = u.log_().lt_(bound).logical_and_(v > 0)
    first = accept.to(torch.uint8).argmax(1, keepdim=True)  # 0 when none is accepted
    out = log_v.gather(1, first)[:, 0].add_(math.log(d))
    if boosted:
        out = out + torch.log(1 - torch.rand(n, generator=generator, device=device)) / shape
    return out


def sample_beta(alpha: float, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """n draws of Beta(alpha, alpha) from ``generator``: G1 / (G1 + G2) with G1, G2 ~ Gamma(alpha)."""
    g1, g2 = _log_gamma(alpha, 2 * n, generator, device).view(2, n)  # both in one draw
    return torch.sigmoid(g1 - g2)


def _partner(b: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    # A permutation rather than a flip of the batch: works for any b, and pairs change every step.
    return torch.randperm(b, generator=generator, device=device)


def box_bounds(centre: torch.Tensor, length: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[lo, hi) of a segment of ``length`` around ``centre`` on an axis of ``size`` pixels, clipped to it."""
    lo = centre - length // 2
    return lo.clamp(0, size), (lo + length).clamp(0, size)


def box_mask(
    top: torch.Tensor,
    bottom: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    h: int,
    w: int,
    dtype: torch.dtype = torch.bool,
) -> torch.Tensor:
    """(B, 1, H, W) mask, 1 (True) inside each sample's box rows [top, bottom) x columns [left, right).

    A float ``dtype`` gives a 0/1 mask directly, to multiply or lerp with: boolean masks over whole
    images are several times slower on CPU in where and masked_fill.
    """
    rows = torch.arange(h, device=top.device)
    cols = torch.arange(w, device=top.device)
    inside_rows = ((rows >= top[:, None]) & (rows < bottom[:, None])).to(dtype)  # (B, H)
    inside_cols = ((cols >= left[:, None]) & (cols < right[:, None])).to(dtype)  # (B, W)
    if dtype == torch.bool:
        return (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]
    return (inside_rows[:, :, None] * inside_cols[:, None, :])[:, None]


def _random_boxes(
    cut_h: torch.Tensor, cut_w: torch.Tensor, h: int, w: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top, bottom, left, right) of boxes of the given sides, centred uniformly in the image and clipped."""
    b, device = cut_h.shape[0], cut_h.device
    # both centres from one draw; reducing 62 random bits modulo the side is uniform to within 1e-17
    centre = torch.randint(0, 2**62, (2, b), generator=generator, device=device)
    top, bottom = box_bounds(centre[0] % h, cut_h, h)
    left, right = box_bounds(centre[1] % w, cut_w, w)
    return top, bottom, left, right


def pick_pixels(x: torch.Tensor, partner: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """x where ``keep`` (B, 1, H, W; bool or 0/1) is set, else x[partner]: each value exactly one of them."""
    weight = keep.to(x.dtype)
    # lerp by a 0/1 weight picks either end exactly, and on CPU runs several times faster than a
    # torch.where with a boolean mask broadcast over the channels; uint8 pixels (no lerp) are picked by
    # multiplying with 0/1, exact too: one of the two products is 0
    if x.is_floating_point():
        return torch.lerp(x.index_select(0, partner), x, weight)
    return x.index_select(0, partner).mul_(1 - weight).add_(x * weight)


def mask_mix_batch(
    x: torch.Tensor, y: torch.Tensor, partner: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """x where ``keep`` (B, 1, H, W; bool or 0/1) is set, x[partner] elsewhere; targets mixed by pixel share.

    The weight is measured from the mask itself, so borders, rounding and ties can never make the target
    disagree with the pixels.
    """
    share = keep.to(y.dtype).flatten(1).mean(1, keepdim=True)
    return pick_pixels(x, partner, keep), share * y + (1 - share) * y.index_select(0, partner)


# --- flip -------------------------------------------------------------------------------------------


def flip_map(horizontal: torch.Tensor, vertical: torch.Tensor | None, h: int, w: int) -> PixelMap:
    """The pixel map mirroring left-right the images where ``horizontal`` (B,) is True, top-bottom where
    ``vertical`` is."""
    b, device = horizontal.shape[0], horizontal.device

    def axis(flipped: torch.Tensor | None, size: int) -> torch.Tensor | None:
        if flipped is None:
            return None  # this axis stays as it is
        index = torch.arange(size, device=device)
        return torch.where(flipped.view(b, 1), index.flip(0), index)

    return PixelMap(axis(vertical, h), axis(horizontal, w))


def flip_batch(
    x: torch.Tensor, horizontal: torch.Tensor, vertical: torch.Tensor | None = None
) -> torch.Tensor:
    """Mirror left-right the images where ``horizontal`` (B,) is True, top-bottom where ``vertical`` is."""
    return flip_map(horizontal, vertical, x.shape[2], x.shape[3]).apply(x)


class RandomFlip(BatchAugmentation):
    def __init__(self, vertical: bool, p: float) -> None:
        super().__init__(p)
        self.vertical = vertical

    def pixel_map(self, shape, generator, device):
        b, _, h, w = shape
        vertical = self.chosen(b, generator, device) if self.vertical else None
        return flip_map(self.chosen(b, generator, device), vertical, h, w)


@augmentations.register("flip")
def flip(*, vertical: bool = False, p: Probability = 0.5) -> RandomFlip:
    """Random mirroring: each image flipped left-right with probability p (Krizhevsky et al. 2012).

    out[c, i, j] = x[c, i, W - 1 - j] for a flipped image; with ``vertical`` a second, independent draw
    (same p) also maps row i to H - 1 - i, as for aerial or microscope images with no "up".
    """
    return RandomFlip(vertical, p)


# --- colour jitter ----------------------------------------------------------------------------------

# torchvision's ColorJitter, image by image: four steps in a random order drawn per image (torchvision draws
# one per call, and it is called per image), each clamped to [0, 1]. Brightness, contrast and saturation are
# blends x -> f x + (1 - f) base, with base 0, the image's mean gray level, or each pixel's gray level; hue
# is a shift in HSV. The per-pixel work runs as compiled loops on the CPU (zoo.data.augment_cpu, where the
# measurements are); color_jitter_torch is the same in torch ops, for other devices and as the reference.

BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
_IDENTITY = torch.tensor([1.0, 1.0, 1.0, 0.0])  # the factors that leave an image as it is


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) gray levels: torchvision's rgb_to_grayscale, in its order of float operations; gray
    images are their own gray level."""
    if x.shape[1] != 3:
        return x
    r, g, b = x.unbind(1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)


def _shift_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """RGB images (B, 3, H, W) with each one's HSV hue shifted by ``turns`` (B,), saturation and value kept.

    Hue in sixths of a turn is h = (g - b) / c, (b - r) / c + 2 or (r - g) / c + 4 as red, green or blue is
    the largest channel (v the largest, c = v - min), and the HSV-to-RGB map writes channel n (5, 3, 1 for
    r, g, b) as v - c clamp(min(k, 4 - k), 0, 1) with k = (n + h) mod 6: torchvision's adjust_hue in closed
    form (it goes through p, q, t and a table; the two agree to ~1e-6).
    """
    r, g, b = x.unbind(1)
    v = torch.maximum(torch.maximum(r, g), b)
    c = v - torch.minimum(torch.minimum(r, g), b)
    red, green = v == r, v == g
    h = torch.where(red, g - b, torch.where(green, b - r, r - g)) / torch.where(c > 0, c, 1.0)
    h = h + torch.where(red, 0.0, torch.where(green, 2.0, 4.0)) + 6 * turns.view(-1, 1, 1)
    k = (h.unsqueeze(1) + torch.tensor([5.0, 3.0, 1.0], device=x.device).view(1, 3, 1, 1)).remainder(6)
    return v.unsqueeze(1) - c.unsqueeze(1) * torch.minimum(k, 4 - k).clamp(0, 1)


def color_jitter_torch(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """color_jitter_batch in torch ops, on any device: the four steps one position of the order at a time.

    At each position every image takes its own step: brightness, contrast and saturation as one blend with a
    per-image base, hue on the images whose turn it is.
    """
    b, c = x.shape[:2]
    x = unit_float(x, torch.float32) if x.dtype == torch.uint8 else x
    for k in range(4):
        step = order[:, k]
        blend = step != HUE
        if c != 3:
            blend &= step != SATURATION  # torchvision leaves gray images' saturation alone
        f = torch.where(blend, factors.gather(1, step.clamp(max=SATURATION).view(b, 1)).view(b), 1.0)
        gray = _gray(x)
        base = torch.where(
            (step == CONTRAST).view(b, 1, 1, 1),
            gray.mean((2, 3), keepdim=True),
            torch.where((step == SATURATION).view(b, 1, 1, 1), gray, 0.0),
        )
        f = f.view(b, 1, 1, 1).to(x.dtype)
        x = (x * f + (1 - f) * base).clamp_(0, 1)  # f = 1 leaves an image exactly as it was
        if c == 3:
            hue = ((step == HUE) & (factors[:, HUE] != 0)).nonzero().view(-1)
            x = x.index_copy(0, hue, _shift_hue(x.index_select(0, hue), factors.index_select(0, hue)[:, HUE]))
    return x


def color_jitter_batch(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Per-image brightness, contrast, saturation and hue as torchvision's ColorJitter, in a per-image order.

    ``factors`` (B, 4): brightness, contrast and saturation factors and the hue shift in turns; ``order``
    (B, 4): a permutation of 0-3 (BRIGHTNESS, CONTRAST, SATURATION, HUE) per image, the order they run in.
    Each step is clamped to [0, 1] before the next, as torchvision does. Factors of 1 and a shift of 0 leave
    an image bit-for-bit unchanged. Gray (1-channel) images only get brightness and contrast. uint8 input is
    read as pixel / 255; the result is float32 (or the input's float dtype).
    """
    if use_cpu_kernels(x) and x.dtype in (torch.float32, torch.uint8) and x.shape[1] in (1, 3):
        from zoo.data import augment_cpu

        return augment_cpu.color_jitter(x, factors, order)
    return color_jitter_torch(x, factors, order)


class ColorJitter(BatchAugmentation):
    reads_uint8 = True
    compiled_on_cpu = True

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float, p: float) -> None:
        super().__init__(p)
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, x, y, generator):
        b, dev = x.shape[0], x.device
        chosen = self.chosen(b, generator, dev)
        # one draw for the batch: four factors and four sort keys (their ranks: the order) per image
        u = torch.rand(b, 8, generator=generator, device=dev)
        strengths = (self.brightness, self.contrast, self.saturation)
        low = torch.tensor([max(0.0, 1 - s) for s in strengths] + [-self.hue], device=dev)
        high = torch.tensor([1 + s for s in strengths] + [self.hue], device=dev)
        factors = torch.where(chosen.view(b, 1), torch.addcmul(low, high - low, u[:, :4]), _IDENTITY.to(dev))
        return color_jitter_batch(x, factors, u[:, 4:].argsort(1)), y


@augmentations.register("color_jitter")
def color_jitter(
    *,
    brightness: Strength = 0.4,
    contrast: Strength = 0.4,
    saturation: Strength = 0.4,
    hue: Annotated[float, Field(ge=0, le=0.5)] = 0.1,
    p: Probability = 1.0,
) -> ColorJitter:
    """Random brightness, contrast, saturation and hue per image: torchvision's ColorJitter (Howard 2013).

    Factors f ~ U[max(0, 1 - s), 1 + s] per image and strength s: brightness x -> f x, contrast
    x -> f x + (1 - f) mean(gray(x)), saturation x -> f x + (1 - f) gray(x); hue adds h ~ U[-hue, hue] turns
    to the HSV hue. The four run in a random order drawn per image, each clamped to [0, 1]; gray images
    skip the last two.
    """
    return ColorJitter(brightness, contrast, saturation, hue, p)


# --- random resized crop ----------------------------------------------------------------------------


def random_resized_boxes(
    b: int,
    h: int,
    w: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    """(B, 4) long boxes (top, left, height, width) in an H x W image: zoo.data.images.train_box's algorithm,
    all samples at once.

    Each sample gets ten tries at once (area fraction uniform in ``scale``, aspect log-uniform in ``ratio``)
    and keeps its first that fits; a sample none fits gets train_box's fallback, the centred crop with the
    ratio clamped. The draws come in a different order than train_box's, so boxes are alike in law, not one
    for one. One call for the batch rather than train_box per sample: for 512 samples on the CPU it took
    0.16 ms against 3 ms, and on a GPU it needs no synchronisation per sample.
    """
    from zoo.data.images import whole_box

    draws = torch.rand(b, 10, 2, generator=generator, device=device).double()
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target = h * w * (scale[0] + (scale[1] - scale[0]) * draws[..., 0])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * draws[..., 1])
    # torch.round and Python's round both round halves to even: the same sides as train_box
    widths = torch.sqrt(target * aspect).round().long()
    heights = torch.sqrt(target / aspect).round().long()
    fits = (widths > 0) & (widths <= w) & (heights > 0) & (heights <= h)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first try that fits (0 when none does)
    box_h, box_w = heights.gather(1, first)[:, 0], widths.gather(1, first)[:, 0]
    fallback = torch.tensor(whole_box(h, w, ratio), device=device)
    offsets = torch.rand(b, 2, generator=generator, device=device).double()
    top = (offsets[:, 0] * (h - box_h + 1)).floor().long()
    left = (offsets[:, 1] * (w - box_w + 1)).floor().long()
    boxes = torch.stack([top, left, box_h, box_w], 1)
    return torch.where(fits.any(1, keepdim=True), boxes, fallback)


def _bilinear_weights(start: torch.Tensor, length: torch.Tensor, out: int, size: int) -> torch.Tensor:
    """(B, out, size) matrices taking an axis of ``size`` pixels to ``out`` samples of each segment
    [start, start + length): sample i reads the segment at (i + 0.5) length / out - 0.5, clamped into it, from
    its two nearest pixels (F.interpolate's bilinear source positions, align_corners=False)."""
    centres = torch.arange(out, device=start.device, dtype=torch.float32) + 0.5
    pos = (centres * (length.float() / out)[:, None]).sub_(0.5).clamp_(min=0)
    last = (length - 1)[:, None]
    first_tap = pos.floor().long().minimum(last)
    frac = pos - first_tap
    matrix = torch.zeros(start.shape[0], out, size, device=start.device)
    matrix.scatter_add_(2, (start[:, None] + first_tap)[..., None], (1 - frac)[..., None])
    second_tap = (first_tap + 1).minimum(last)
    return matrix.scatter_add_(2, (start[:, None] + second_tap)[..., None], frac[..., None])


def random_resized_crop_batch(x: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Each float image's box (B, 4: top, left, height, width; pixels) resized to ``size`` (H, W), bilinear.

    out = A_y x A_x^T per image, with A the per-axis interpolation matrices of _bilinear_weights: the
    box cropped, then enlarged as torchvision's resized_crop enlarges it (bilinear, antialiased or not:
    the same when enlarging), to within 2e-7 on float images. Boxes no larger than ``size``, as on
    fixed-size batches; a larger box would be shrunk without antialiasing. As two batched matrix products
    it took 10 ms for 512 images of 3 x 32 x 32 on one CPU thread, where RoIAlign (7 ms) and grid_sample
    (6 ms), with one matrix less, read past the box's edge on its outer half pixel (up to 0.5 off there).
    """
    b, _, h, w = x.shape
    top, left, box_h, box_w = boxes.unbind(1)
    rows = _bilinear_weights(top, box_h, size[0], h).to(x.dtype)
    cols = _bilinear_weights(left, box_w, size[1], w).to(x.dtype)
    return rows.unsqueeze(1) @ x @ cols.transpose(1, 2).unsqueeze(1)


class RandomResizedCrop(BatchAugmentation):
    def __init__(self, scale: tuple[float, float], ratio: tuple[float, float], p: float) -> None:
        super().__init__(p)
        self.scale, self.ratio = tuple(scale), tuple(ratio)

    def per_image_box(self, height: int, width: int, generator: torch.Generator) -> tuple[int, int, int, int]:
        """The box (top, left, h, w) of one image of any size, for the data set's workers: train_box's
        draws (torchvision's RandomResizedCrop.get_params), or with probability 1 - p the whole image."""
        from zoo.data.images import train_box

        if self.p < 1 and float(torch.rand(1, generator=generator)) >= self.p:
            return 0, 0, height, width
        return train_box(height, width, self.scale, self.ratio, generator)

    def __call__(self, x, y, generator):
        b, _, h, w = x.shape
        chosen = self.chosen(b, generator, x.device)
        boxes = random_resized_boxes(b, h, w, self.scale, self.ratio, generator, x.device)
        out = random_resized_crop_batch(x, boxes, (h, w))
        # resampling the whole image is not bit-exact, so samples left alone keep their own pixels
        return torch.where(chosen.view(b, 1, 1, 1), out, x), y


@augmentations.register("random_resized_crop")
def random_resized_crop(
    *,
    scale: UnitRange = (0.08, 1.0),
    ratio: PositiveRange = (3 / 4, 4 / 3),
    p: Probability = 1.0,
) -> RandomResizedCrop:
    """Random-size crop: a box of random area and aspect, resized to the image's size (Szegedy et al. 2015).

    Area fraction s ~ U[scale], aspect r log-uniform in ``ratio``; the box is sqrt(s H W r) wide and
    sqrt(s H W / r) high at a uniform position, redrawn up to ten times until it fits (else the centred
    largest box of a ratio in ``ratio``), then resized bilinearly to H x W, per image. On streamed data sets
    the box is drawn per image on the full-size decoded image in the loading workers instead.
    """
    return RandomResizedCrop(scale, ratio, p)


# --- affine -----------------------------------------------------------------------------------------


def affine_batch(
    x: torch.Tensor,
    angle: torch.Tensor,
    shift: torch.Tensor,
    scale: torch.Tensor,
    shear: torch.Tensor,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Rotate (degrees), x-shear (degrees), scale and shift (B, 2: dx, dy pixels) each image about its centre.

    A pixel at p (from the centre, y down) moves to s R(angle) Sh(shear) p + shift, the same map as
    torchvision's F.affine; one affine_grid and one grid_sample for the batch, zeros outside the source.
    """
    b, _, h, w = x.shape
    a = torch.deg2rad(angle.to(torch.float64))
    # torchvision's sign convention for shear, so that recipes ported from it mean the same thing
    t = -torch.tan(torch.deg2rad(shear.to(torch.float64)))
    s = scale.to(torch.float64)
    cos, sin = torch.cos(a), torch.sin(a)
    # grid_sample wants, for each output pixel, where to read: the inverse map
    # (s R Sh)^-1 = Sh^-1 R^T / s, with R = [[cos, -sin], [sin, cos]] and Sh = [[1, t], [0, 1]]
    inv = torch.stack(
        [torch.stack([cos + t * sin, sin - t * cos], -1), torch.stack([-sin, cos], -1)], -2
    ) / s.view(b, 1, 1)
    # affine_grid works in coordinates normalised to [-1, 1] per axis; convert from pixels and back so a
    # rotation stays a rotation on non-square images
    half = torch.tensor([w / 2, h / 2], dtype=torch.float64, device=x.device)
    theta = torch.empty(b, 2, 3, dtype=torch.float64, device=x.device)
    theta[:, :, :2] = inv * half.view(1, 1, 2) / half.view(1, 2, 1)
    theta[:, :, 2] = -(inv @ shift.to(torch.float64).unsqueeze(-1)).squeeze(-1) / half
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode=interpolation, padding_mode="zeros", align_corners=False)
    return out.clamp_(0, 1) if interpolation == "bilinear" else out


class RandomAffine(BatchAugmentation):
    def __init__(
        self,
        degrees: float,
        translate: float,
        scale: tuple[float, float],
        shear: float,
        interpolation: str,
        p: float,
    ) -> None:
        super().__init__(p)
        self.degrees, self.translate, self.scale, self.shear = degrees, translate, tuple(scale), shear
        self.interpolation = interpolation

    def __call__(self, x, y, generator):
        b, _, h, w = x.shape
        dev = x.device
        chosen = self.chosen(b, generator, dev)
        angle = _uniform(-self.degrees, self.degrees, b, generator, dev)
        shift = _uniform(-self.translate, self.translate, 2 * b, generator, dev).view(b, 2)
        shift = shift * torch.tensor([w, h], device=dev, dtype=shift.dtype)
        scale = _uniform(*self.scale, b, generator, dev)
        shear = _uniform(-self.shear, self.shear, b, generator, dev)
        out = affine_batch(x, angle, shift, scale, shear, self.interpolation)
        # resampling even the identity is not bit-exact, so samples left alone keep their own pixels
        return torch.where(chosen.view(b, 1, 1, 1), out, x), y


@augmentations.register("affine")
def affine(
    *,
    degrees: Annotated[float, Field(ge=0, le=180)] = 10.0,
    translate: Annotated[float, Field(ge=0, le=1)] = 0.1,
    scale: PositiveRange = (0.9, 1.1),
    shear: Annotated[float, Field(ge=0, lt=90)] = 0.0,
    interpolation: Literal["bilinear", "nearest"] = "bilinear",
    p: Probability = 1.0,
) -> RandomAffine:
    """Random rotation, translation, scaling and shear per image, filled with zeros (Simard et al. 2003).

    Pixel p (from the centre) -> s R(a) Sh(k) p + t with a ~ U[-degrees, degrees], k ~ U[-shear, shear]
    (x shear), s ~ U[scale], t ~ U[-translate, translate] * (W, H); as torchvision's RandomAffine.
    ``interpolation`` is how pixels are read between grid points.
    """
    return RandomAffine(degrees, translate, scale, shear, interpolation, p)


# --- cutout -----------------------------------------------------------------------------------------


def cutout_batch(x: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Zero the pixels inside each image's ``box`` mask (B, 1, H, W; bool or 0/1), all channels."""
    return x * (1 - box.to(x.dtype))  # multiplying by 0/1 is exact, and faster on CPU than masked_fill


class Cutout(BatchAugmentation):
    keeps_uint8 = True  # pixels are pasted or zeroed, never computed

    def __init__(self, size: int | float, p: float) -> None:
        super().__init__(p)
        self.size = size

    def side(self, h: int, w: int) -> int:
        # an int is pixels, a float a fraction of the shorter side
        return self.size if isinstance(self.size, int) else max(1, round(self.size * min(h, w)))

    def __call__(self, x, y, generator):
        b, _, h, w = x.shape
        side = self.side(h, w) * self.chosen(b, generator, x.device).long()  # 0: an empty box
        return cutout_batch(x, box_mask(*_random_boxes(side, side, h, w, generator), h, w, x.dtype)), y


@augmentations.register("cutout")
def cutout(
    *,
    size: Union[Annotated[int, Field(ge=1)], Annotated[float, Field(gt=0, le=1)]] = 0.5,
    p: Probability = 1.0,
) -> Cutout:
    """Cutout: a square patch of each image set to zero (DeVries & Taylor 2017).

    x[:, i, j] = 0 for |i - cy| and |j - cx| within size / 2, centre (cy, cx) uniform over the image, so
    the square may be clipped by a border; ``size`` is pixels if an int, else a fraction of min(H, W).
    """
    return Cutout(size, p)


# --- cutmix -----------------------------------------------------------------------------------------


def cutmix_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    partner: torch.Tensor,
    top: torch.Tensor,
    bottom: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste x[partner] into each image inside its box, rows [top, bottom) x columns [left, right) (each (B,),
    within the image); targets weighted by the pixels each image keeps."""
    h, w = x.shape[-2:]
    if use_cpu_kernels(x):
        from zoo.data import augment_cpu

        out = augment_cpu.paste_boxes(x, partner, top, bottom, left, right)
    else:
        out = paste_boxes(x, partner, top, bottom, left, right)
    kept = 1 - ((bottom - top) * (right - left)).to(y.dtype).view(-1, 1) / (h * w)
    return out, kept * y + (1 - kept) * y.index_select(0, partner)


def paste_boxes(
    x: torch.Tensor,
    partner: torch.Tensor,
    top: torch.Tensor,
    bottom: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
) -> torch.Tensor:
    """cutmix_batch's pixels in torch ops, for any device: x with each box taken from x[partner]."""
    return pick_pixels(x, partner, ~box_mask(top, bottom, left, right, x.shape[2], x.shape[3]))


class CutMix(BatchAugmentation):
    keeps_uint8 = True  # pixels are pasted, never computed
    compiled_on_cpu = True

    def __init__(self, alpha: float, p: float) -> None:
        super().__init__(p)
        self.alpha = alpha

    def __call__(self, x, y, generator):
        b, _, h, w = x.shape
        dev = x.device
        chosen = self.chosen(b, generator, dev)
        lam = torch.where(chosen, sample_beta(self.alpha, b, generator, dev), 1.0)
        cut = torch.sqrt(1 - lam)  # sides of a box of area (1 - lam) H W, before clipping
        box = _random_boxes((cut * h).long(), (cut * w).long(), h, w, generator)
        return cutmix_batch(x, y, _partner(b, generator, dev), *box)


@augmentations.register("cutmix")
def cutmix(*, alpha: Annotated[float, Field(gt=0)] = 1.0, p: Probability = 1.0) -> CutMix:
    """CutMix: a box from a partner image pasted into each image, targets mixed by area (Yun et al. 2019).

    lam ~ Beta(alpha, alpha) per image; a box of sides (H, W) sqrt(1 - lam), centred uniformly and clipped
    at the border, comes from the partner (a random permutation of the batch);
    y = lam' y_i + (1 - lam') y_partner, with lam' the pixel share actually kept after clipping.
    """
    return CutMix(alpha, p)


# --- cowmix -----------------------------------------------------------------------------------------


def cow_mask(
    proportion: torch.Tensor, sigma: torch.Tensor, h: int, w: int, generator: torch.Generator
) -> torch.Tensor:
    """(B, 1, H, W) bool cow-pattern masks, True on a share ``proportion`` (B,) of each image's pixels.

    Gaussian noise smoothed with a per-image Gaussian of std ``sigma`` (B,) pixels, thresholded at the
    image's own quantile (the top round(proportion * H * W) pixels are kept). The smoothing multiplies
    the noise's spectrum by the Gaussian's transfer function exp(-2 pi^2 sigma^2 |f|^2), which takes a
    different sigma per image at no extra cost (a convolution would need one kernel size for all) and is
    exact for any sigma, even one larger than the image; the price is periodic boundaries, so blobs wrap
    around edges, which does not matter for noise.
    """
    b, device = proportion.shape[0], proportion.device
    noise = torch.randn(b, h, w, generator=generator, device=device)
    fy = torch.fft.fftfreq(h, device=device)
    fx = torch.fft.rfftfreq(w, device=device)
    f2 = fy[:, None] ** 2 + fx[None, :] ** 2
    transfer = torch.exp(-2 * math.pi**2 * sigma.view(b, 1, 1) ** 2 * f2)
    smooth = torch.fft.irfft2(torch.fft.rfft2(noise) * transfer, s=(h, w)).flatten(1)
    keep = torch.round(proportion * h * w).long().view(b, 1)  # pixels to keep
    # The top `keep` pixels by rank rather than those above a threshold value: a sigma far larger than a
    # tiny image flattens the noise into ties (or underflows it), and ranks still keep the share exact.
    order = smooth.argsort(1, descending=True)
    top = torch.arange(h * w, device=device).expand(b, -1) < keep
    return torch.empty_like(top).scatter_(1, order, top).view(b, 1, h, w)


class CowMix(BatchAugmentation):
    keeps_uint8 = True  # pixels are pasted or zeroed, never computed

    def __init__(
        self, proportion: tuple[float, float], sigma: tuple[float, float], reference_size: int, p: float
    ) -> None:
        super().__init__(p)
        self.proportion, self.sigma, self.reference_size = tuple(proportion), tuple(sigma), reference_size

    def __call__(self, x, y, generator):
        b, _, h, w = x.shape
        dev = x.device
        chosen = self.chosen(b, generator, dev)
        proportion = torch.where(chosen, _uniform(*self.proportion, b, generator, dev), 1.0)
        # blob sizes are set for reference_size images; smaller images get proportionally smaller blobs
        zoom = min(h, w) / self.reference_size
        lo, hi = (math.log(s * zoom) for s in self.sigma)
        sigma = torch.exp(_uniform(lo, hi, b, generator, dev))
        keep = cow_mask(proportion, sigma, h, w, generator)
        return mask_mix_batch(x, y, _partner(b, generator, dev), keep)


@augmentations.register("cowmix")
def cowmix(
    *,
    proportion: UnitRange = (0.2, 0.8),
    sigma: PositiveRange = (4.0, 16.0),
    reference_size: Annotated[int, Field(ge=1)] = 32,
    p: Probability = 1.0,
) -> CowMix:
    """CowMix: images mixed through smooth random cow-pattern masks (French et al. 2020, Milking CowMask).

    Per image: share q ~ U[proportion], sigma log-uniform in ``sigma`` (pixels of a reference_size image,
    scaled by min(H, W) / reference_size: [1, 4] on 8x8); mask = [G_sigma * noise >= its (1 - q)
    quantile]; x = m x_i + (1 - m) x_partner, y = mean(m) y_i + (1 - mean(m)) y_partner.
    """
    return CowMix(proportion, sigma, reference_size, p)


# --- mixup ------------------------------------------------------------------------------------------


def mixup_batch(
    x: torch.Tensor, y: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """lam x + (1 - lam) x[partner] and the same for targets, with lam (B,) per sample, x of any shape (B, ...)."""
    b = x.shape[0]
    # lerp(x_p, x, lam) = x_p + lam (x - x_p), evaluated from the x end when lam >= 0.5 and so exact at
    # lam = 1: unchosen images keep their pixels bit for bit
    out = torch.lerp(x.index_select(0, partner), x, lam.view(b, *[1] * (x.ndim - 1)).to(x.dtype))
    return out, torch.lerp(y.index_select(0, partner), y, lam.view(b, 1).to(y.dtype))


class Mixup(BatchAugmentation):
    images_only = False  # a blend of whole samples: any input shape

    def __init__(self, alpha: float, p: float) -> None:
        super().__init__(p)
        self.alpha = alpha

    def __call__(self, x, y, generator):
        b, dev = x.shape[0], x.device
        chosen = self.chosen(b, generator, dev)
        lam = torch.where(chosen, sample_beta(self.alpha, b, generator, dev), 1.0)
        return mixup_batch(x, y, _partner(b, generator, dev), lam)


@augmentations.register("mixup")
def mixup(*, alpha: Annotated[float, Field(gt=0)] = 0.2, p: Probability = 1.0) -> Mixup:
    """Mixup: each image blended with a partner image, targets blended alike (Zhang et al. 2018).

    lam ~ Beta(alpha, alpha) per image, partner from a random permutation of the batch;
    x = lam x_i + (1 - lam) x_partner, y = lam y_i + (1 - lam) y_partner.
    """
    return Mixup(alpha, p)
