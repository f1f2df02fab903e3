"""Test-time augmentation: the same inputs seen flipped and shifted, predicted probabilities averaged."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Shifts in the order they are taken: the four axis neighbours first, then the diagonals.
_DIRECTIONS = [(1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)]


def shift_batch(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Every image moved by (dy, dx) pixels with zeros shifted in: a crop of the zero-padded image."""
    h, w = x.shape[-2:]
    p = max(abs(dy), abs(dx))
    padded = F.pad(x, (p, p, p, p))
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]


def views(x: torch.Tensor, flip: bool, crops: int, shift: int) -> list[torch.Tensor]:
    """The original batch, ``crops`` shifted copies of it, and the horizontal mirror of each if ``flip``."""
    out = [x] + [shift_batch(x, dy * shift, dx * shift) for dy, dx in _DIRECTIONS[:crops]]
    if flip:
        out += [v.flip(-1) for v in out]
    return out
