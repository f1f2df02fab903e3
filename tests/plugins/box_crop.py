"""A test-only plugin: an augmentation that crops per image (``per_image_box``), as random_resized_crop does.

On fixed-size batches it changes nothing; on streamed data its box runs per image in the loader's workers.
"""

from __future__ import annotations

import torch

from zoo.core.catalog import augmentations


class HalfBox:
    images_only = True

    def __call__(self, x, y, generator):
        return x, y

    def per_image_box(self, height: int, width: int, generator: torch.Generator):
        """A random box of half the image's height and width."""
        h, w = max(1, height // 2), max(1, width // 2)
        top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
        return top, left, h, w


@augmentations.register("test_half_box")
def test_half_box():
    """A random half-size box of each image, drawn per image where data is streamed."""
    return HalfBox()
