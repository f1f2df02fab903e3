"""A picture of what the model sees: training images before and after the recipe's augmentations."""

from __future__ import annotations

from pathlib import Path

import torch

from zoo.core.build import build_data
from zoo.core.recipe import Recipe
from zoo.data.augment import AugmentPipeline
from zoo.data.datamodule import to_unit_float


def _label(y: torch.Tensor, classes: list[str]) -> str:
    """The one or two classes a (soft) target puts weight on, with their shares."""
    top = y.topk(min(2, len(y)))
    parts = [f"{classes[i]} {w:.2f}" for w, i in zip(top.values.tolist(), top.indices.tolist()) if w > 0.005]
    return parts[0].split(" ")[0] if len(parts) == 1 and top.values[0] > 0.995 else "\n".join(parts)


def augmentation_grid(recipe: Recipe, out: str | Path, n: int = 16, seed: int = 0) -> Path:
    """Write a PNG: ``n`` training images (upper rows) and the same images augmented (lower rows)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display is needed or assumed
    import matplotlib.pyplot as plt

    dm = build_data(recipe.data, seed=recipe.seed)
    # a seeded draw across the split: data sets are often stored class by class
    pick = torch.randperm(len(dm.train), generator=torch.Generator().manual_seed(seed))[:n]
    x = to_unit_float(dm.train.x[pick], torch.float32)
    y = dm.train.y[pick]
    augmented, targets = AugmentPipeline(recipe.augment, dm.num_classes, seed=seed)(x.clone(), y)
    n = len(x)
    cols = min(n, 8)
    rows = -(-n // cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(1.4 * cols, 1.75 * 2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    names = [str(c) for c in dm.classes]
    for i in range(n):
        r, c = divmod(i, cols)
        for row, images, label in ((r, x, names[int(y[i])]), (rows + r, augmented, _label(targets[i], names))):
            img = images[i].clamp(0, 1).permute(1, 2, 0).numpy()
            ax = axes[row][c]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                      vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(label, fontsize=7)
    steps = ", ".join(a["name"] for a in recipe.augment) or "no augmentation"
    fig.suptitle(f"{recipe.name}: originals (top) and after {steps} (bottom)", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
