"""CPU fast paths of batch augmentation: loops compiled by numba, one image per iteration.

Each function here computes exactly what a torch-op version elsewhere computes (tests hold them to it), and
exists because that version is slow on a CPU: a chain of whole-batch torch ops makes one pass over memory
per op, and several of the ops involved (gather, where, minimum on strided views, remainder) run scalar loops
of 1-4 ns per element on the 2-core CPU this project measures on. A compiled loop keeps each image in the
L1 cache while it runs every step on it, in SIMD.

Measured on that CPU, one thread, a batch of 256 3x32x32 images (benchmarks/augment_throughput.py times the
whole pipeline): colour jitter with torchvision's per-image random order and HSV hue took 18-30 ms as torch
ops and 0.45 ms here; a flip-and-crop gather 0.8 ms as ``torch.gather`` and 0.4 ms here; CutMix's paste
0.35 ms here.

Kernels compile on first use (10-25 s on that CPU; then cached on disk next to this file, and loaded in 1-2 s
by later processes) and run with as many threads as torch uses. zoo.data.augment sends only batches of at
least CPU_KERNEL_MIN_VALUES values here.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange

from zoo.data.scratch import KERNEL_THREADS, batch_buffer

_ZERO, _ONE = np.float32(0), np.float32(1)
_TWO, _FOUR, _SIX, _SIXTH = np.float32(2), np.float32(4), np.float32(6), np.float32(1 / 6)
# torchvision's luma weights (rgb_to_grayscale), as float32 like its arithmetic
_WR, _WG, _WB = np.float32(0.2989), np.float32(0.587), np.float32(0.114)
_INV255 = np.float32(255)

# Reassociation lets the gray-level sum vectorize, contraction allows FMA: both move results by ~1e-7.
# No "arcp" (division as multiplication by a reciprocal), which would make x / 255 differ from torch's.
_FAST = {"nsz", "contract", "reassoc"}


def _run(kernel, *args):
    """``kernel(*args)`` with as many threads as torch uses (or the pipeline lends), leaving torch's thread
    count as it was.

    numba's default threading layer shares torch's OpenMP runtime (one pool of threads for both, which on
    2 cores is what keeps them from competing), and starting its pool resets that runtime's thread count
    to numba's maximum: a torch.set_num_threads(1) made earlier would silently become 2.
    """
    threads = torch.get_num_threads()
    lent = KERNEL_THREADS.get() or threads
    numba.set_num_threads(max(1, min(lent, numba.config.NUMBA_NUM_THREADS)))
    try:
        return kernel(*args)
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


# --- pixel maps -------------------------------------------------------------------------------------


@njit(cache=True)
def _column_run(cols, width):
    """(lo, hi, step): when columns [lo, hi) read a run of source columns cols[lo] + step (j - lo) (step 1
    or -1, a shift or a mirrored shift) and every other column is outside, else step 0."""
    lo = 0
    while lo < width and not 0 <= cols[lo] < width:
        lo += 1
    hi = lo
    while hi < width and 0 <= cols[hi] < width:
        hi += 1
    step = -1 if hi - lo > 1 and cols[lo + 1] < cols[lo] else 1
    for j in range(width):
        inside = lo <= j < hi
        if (inside and cols[j] != cols[lo] + step * (j - lo)) or (not inside and 0 <= cols[j] < width):
            return lo, hi, 0
    return lo, hi, step


@njit(parallel=True, cache=True)
def _remap(x, rows, cols, out):
    batch, channels, height, width = out.shape
    size = channels * height * width
    flat_x, flat_out = x.reshape(batch, size), out.reshape(batch, size)
    u = np.uint64  # unsigned offsets spare every access numba's wraparound for negative indices
    for b in prange(batch):
        src, dst, col = flat_x[b], flat_out[b], cols[b]
        lo, hi, step = _column_run(col, width)
        first = u(col[lo]) if lo < hi else u(0)
        for c in range(channels):
            for i in range(height):
                r = rows[b, i]
                d = u((c * height + i) * width)
                if not 0 <= r < height:
                    for j in range(u(width)):
                        dst[d + j] = 0
                    continue
                s = u((c * height + r) * width)
                if step == 0:  # any other map: a gather
                    for j in range(width):
                        k = col[j]
                        dst[d + u(j)] = src[s + u(k)] if 0 <= k < width else 0
                    continue
                # a shift, mirrored or not, is a (reversed) copy of one run of the source row: measured
                # 0.25 against 0.35 ms as a gather for a batch of 256 3x32x32 uint8 images
                for j in range(u(lo)):
                    dst[d + j] = 0
                for j in range(u(hi), u(width)):
                    dst[d + j] = 0
                run = d + u(lo)
                if step == 1:
                    for j in range(u(hi - lo)):
                        dst[run + j] = src[s + first + j]
                else:
                    for j in range(u(hi - lo)):
                        dst[run + j] = src[s + first - j]
    return out


def apply_pixel_map(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """PixelMap.apply on the CPU: out[b, c, i, j] = x[b, c, rows[b, i], cols[b, j]], 0 where an index is
    outside the image."""
    out = batch_buffer(x.shape, x.dtype)
    _run(_remap, _numpy(x), _numpy(rows), _numpy(cols), out.numpy())
    return out


@njit(parallel=True, cache=True)
def _paste(x, partner, top, bottom, left, right, out):
    batch, channels, height, width = out.shape
    flat_x = x.reshape(batch, -1)
    flat_out = out.reshape(batch, -1)
    for b in prange(batch):
        own, other, dst = flat_x[b], flat_x[partner[b]], flat_out[b]
        t, u, l, r = top[b], bottom[b], left[b], right[b]
        for c in range(channels):
            for i in range(height):
                base = (c * height + i) * width
                in_rows = t <= i < u
                # a select per pixel rather than copying the box's rows: no short inner loops, and it
                # measured faster (0.34 against 0.43 ms for a batch of 256 3x32x32 float32 images)
                for j in range(width):
                    dst[base + j] = other[base + j] if in_rows and l <= j < r else own[base + j]
    return out


def paste_boxes(
    x: torch.Tensor,
    partner: torch.Tensor,
    top: torch.Tensor,
    bottom: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
) -> torch.Tensor:
    """Each image of ``x`` with rows [top, bottom) x columns [left, right) taken from image ``partner``.

    zoo.plugins.augmentations.paste_boxes on the CPU: one pass picking each pixel from one of the two
    images, where the torch ops build a mask, gather the partners and blend.
    """
    out = batch_buffer(x.shape, x.dtype)
    bounds = (_numpy(t.to(torch.int64)) for t in (top, bottom, left, right))
    _run(_paste, _numpy(x), _numpy(partner.to(torch.int64)), *bounds, out.numpy())
    return out


# --- colour jitter ----------------------------------------------------------------------------------


@njit(cache=True, fastmath=_FAST)
def _scale(a, f, base):
    for p in range(a.shape[0]):
        a[p] = min(max(a[p] * f + base, _ZERO), _ONE)


@njit(cache=True, fastmath=_FAST)
def _mean_gray(r, g, b):
    s = _ZERO
    for p in range(r.shape[0]):
        s += r[p] * _WR + g[p] * _WG + b[p] * _WB
    return s / np.float32(r.shape[0])


@njit(cache=True, fastmath=_FAST)
def _mean(a):
    s = _ZERO
    for p in range(a.shape[0]):
        s += a[p]
    return s / np.float32(a.shape[0])


@njit(cache=True, fastmath=_FAST)
def _saturate(r, g, b, f):
    w = _ONE - f
    for p in range(r.shape[0]):
        gray = (r[p] * _WR + g[p] * _WG + b[p] * _WB) * w
        r[p] = min(max(r[p] * f + gray, _ZERO), _ONE)
        g[p] = min(max(g[p] * f + gray, _ZERO), _ONE)
        b[p] = min(max(b[p] * f + gray, _ZERO), _ONE)


@njit(cache=True, fastmath=_FAST, inline="always")
def _from_hue(v, c, k):
    k = k - _SIX if k >= _SIX else k  # k in [0, 12) -> [0, 6)
    return v - c * min(max(min(k, _FOUR - k), _ZERO), _ONE)


@njit(cache=True, fastmath=_FAST)
def _shift_hue(r, g, b, turns):
    shift = _SIX * turns
    for p in range(r.shape[0]):
        rr, gg, bb = r[p], g[p], b[p]
        v = max(rr, max(gg, bb))
        c = v - min(rr, min(gg, bb))
        inv = _ONE / c if c > _ZERO else _ONE  # gray pixels (c = 0) come back as v whatever the hue
        # hue in sixths of a turn: which channel is largest picks the sector; then shifted into [0, 6)
        h = (rr - gg) * inv + _FOUR
        h = (bb - rr) * inv + _TWO if v == gg else h
        h = (gg - bb) * inv if v == rr else h
        h += shift
        h -= _SIX * np.floor(h * _SIXTH)
        r[p] = _from_hue(v, c, h + np.float32(5))
        g[p] = _from_hue(v, c, h + np.float32(3))
        b[p] = _from_hue(v, c, h + _ONE)


@njit(cache=True)
def _load(src, dst, from_uint8):
    if from_uint8:
        for p in range(dst.shape[0]):
            dst[p] = np.float32(src[p]) / _INV255
    else:
        for p in range(dst.shape[0]):
            dst[p] = src[p]


@njit(parallel=True, cache=True)
def _jitter(x, factors, order, out, from_uint8):
    batch, channels = out.shape[0], out.shape[1]
    for i in prange(batch):
        for c in range(channels):
            _load(x[i, c], out[i, c], from_uint8)
        r, g, b = out[i, 0], out[i, channels // 2], out[i, channels - 1]  # all one plane when gray
        for k in range(4):
            op = order[i, k]
            f = factors[i, op]
            if op == 3:
                if f != _ZERO and channels == 3:
                    _shift_hue(r, g, b, f)
            elif f == _ONE or (op == 2 and channels != 3):
                continue  # the identity; torchvision leaves gray images' saturation alone too
            elif op == 0:
                for c in range(channels):
                    _scale(out[i, c], f, _ZERO)
            elif op == 1:
                base = (_mean_gray(r, g, b) if channels == 3 else _mean(r)) * (_ONE - f)
                for c in range(channels):
                    _scale(out[i, c], f, base)
            else:
                _saturate(r, g, b, f)
    return out


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """zoo.plugins.augmentations.color_jitter_torch on the CPU, for float32 or uint8 (read as /255) input.

    Returns float32. Torchvision's order of float32 operations within each step is kept where it matters;
    sums may round differently (results agree to ~1e-6).
    """
    b, c, h, w = x.shape
    out = batch_buffer((b, c, h, w), torch.float32)
    _run(
        _jitter,
        _numpy(x).reshape(b, c, h * w),
        _numpy(factors.to(torch.float32)),
        _numpy(order.to(torch.int64)),
        out.numpy().reshape(b, c, h * w),
        x.dtype == torch.uint8,
    )
    return out
