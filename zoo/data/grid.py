"""A picture of what the model sees: training samples before and after the recipe's augmentations.

Images are drawn as images. Any other sample (a feature vector, a sequence) is drawn as a strip of
cells, one per value, on one gray scale shared by the whole picture, so a mixed sample is seen to lie
between its two sources.
"""

from __future__ import annotations

from pathlib import Path

import torch

from zoo.core.build import build_data
from zoo.core.io import save_figure
from zoo.core.recipe import Recipe
from zoo.data.augment import AugmentPipeline
from zoo.data.datamodule import to_unit_float, training_samples


def _label(y: torch.Tensor, classes: list[str]) -> str:
    """The one or two classes a (soft) target puts weight on, with their shares."""
    top = y.topk(min(2, len(y)))
    parts = [f"{classes[i]} {w:.2f}" for w, i in zip(top.values.tolist(), top.indices.tolist()) if w > 0.005]
    return parts[0].split(" ")[0] if len(parts) == 1 and top.values[0] > 0.995 else "\n".join(parts)


def _picture(sample: torch.Tensor, image: bool):
    """What imshow draws for one sample: an (H, W) or (H, W, 3) image, or the values as rows of cells."""
    if image:
        picture = sample.clamp(0, 1).permute(1, 2, 0).numpy()
        return picture[..., 0] if picture.shape[-1] == 1 else picture
    return sample.reshape(-1, sample.shape[-1]).numpy() if sample.ndim > 1 else sample.reshape(1, -1).numpy()


def augmentation_grid(recipe: Recipe, out: str | Path, n: int = 16, seed: int = 0) -> Path:
    """Write a PNG: ``n`` training samples (upper rows) and the same samples augmented (lower rows)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display is needed or assumed
    import matplotlib.pyplot as plt

    dm = build_data(recipe.data, seed=recipe.seed)
    # a seeded draw across the split: data sets are often stored class by class
    # of streamed data, a draw among a few hundred samples spread over it: reading it whole would cost minutes
    train = training_samples(dm, max(n, 512))
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    x = to_unit_float(train.x[pick], torch.float32)
    y = train.y[pick]
    pipeline = AugmentPipeline(recipe.augment, dm.num_classes, seed=seed)
    pipeline.set_input_stats(dm.mean, dm.std)  # as training does: random erasing's noise is drawn in that space
    augmented, targets = pipeline(x.clone(), y)
    n = len(x)
    cols = min(n, 8)
    rows = -(-n // cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(1.4 * cols, 1.75 * 2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    names = [str(c) for c in dm.classes]
    images = x.ndim == 4 and x.shape[1] in (1, 3)
    both = torch.cat([x.flatten(), augmented.flatten()])
    low, high = (0.0, 1.0) if images else (float(both.min()), float(both.max()))
    for i in range(n):
        r, c = divmod(i, cols)
        for row, batch, label in ((r, x, names[int(y[i])]), (rows + r, augmented, _label(targets[i], names))):
            picture = _picture(batch[i], images)
            ax = axes[row][c]
            ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=low, vmax=high,
                      interpolation="nearest", aspect="equal" if images else "auto")
            ax.set_title(label, fontsize=7)
    steps = ", ".join(a["name"] for a in recipe.augment) or "no augmentation"
    fig.suptitle(f"{recipe.name}: originals (top) and after {steps} (bottom)", fontsize=9)
    fig.tight_layout()
    try:
        return save_figure(fig, out, dpi=120)
    finally:
        plt.close(fig)
