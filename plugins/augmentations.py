"""Batch augmentations: a pure tensor function for each, and a thin registered wrapper on top."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from typing_extensions import Annotated

from zoo import augmentations
from zoo.augment import BatchAugmentation

Probability = Annotated[float, Field(ge=0, le=1)]


def translate_batch(
    x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, padding: int, mode: str = "constant"
) -> torch.Tensor:
    """Shift each image of ``x`` (B, C, H, W) by its own (dy, dx) in [-padding, padding], filling by ``mode``.

    Equivalent to padding by ``padding`` and cropping the original size at offset (padding + dy, padding + dx);
    one gather for the whole batch instead of a crop per image.
    """
    b, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode=mode)
    rows = (dy + padding).view(b, 1) + torch.arange(h, device=x.device)  # (B, H)
    cols = (dx + padding).view(b, 1) + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    # advanced indices on dims 0, 2, 3 with a slice on dim 1 put the channel last: (B, H, W, C)
    out = padded[batch, :, rows.view(b, h, 1), cols.view(b, 1, w)]
    return out.permute(0, 3, 1, 2).contiguous()


class RandomCrop(BatchAugmentation):
    def __init__(self, padding: int, mode: str, p: float) -> None:
        super().__init__(p)
        self.padding, self.mode = padding, mode

    def __call__(self, x, y, generator):
        b = x.shape[0]
        offsets = torch.randint(
            -self.padding, self.padding + 1, (2, b), generator=generator, device=x.device
        ) * self.chosen(b, generator, x.device)
        return translate_batch(x, offsets[0], offsets[1], self.padding, self.mode), y


@augmentations.register("crop")
def crop(
    *,
    padding: Annotated[int, Field(ge=1)] = 4,
    mode: Literal["constant", "reflect", "replicate", "circular"] = "constant",
    p: Probability = 1.0,
) -> RandomCrop:
    """Pad-and-random-crop: each image shifted by up to ``padding`` pixels each way (Krizhevsky et al. 2012).

    out[i, j] = pad(x)[i + padding + dy, j + padding + dx], with dy, dx ~ U{-padding..padding} per image;
    ``constant`` fills with zeros (black), ``reflect`` mirrors the border.
    """
    return RandomCrop(padding, mode, p)
