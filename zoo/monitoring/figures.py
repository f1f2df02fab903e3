"""Pictures of a run's results that both W&B and the HTML report show: the confusion matrix."""

from __future__ import annotations


def confusion_figure(counts: list[list[int]], classes: list[str], title: str):
    """A matplotlib figure of a confusion matrix (rows: true class, columns: predicted), counts written in
    each cell when there are at most 20 classes. The caller closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(counts)
    size = min(7.0, 1.6 + 0.3 * k)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts, cmap="Blues")
    if k <= 20:
        top = max(max(row) for row in counts) or 1
        for i, row in enumerate(counts):
            for j, v in enumerate(row):
                ax.text(
                    j,
                    i,
                    str(v),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v > top / 2 else "black",
                )
        ax.set_xticks(range(k), classes, fontsize=7, rotation=90 if k > 10 else 0)
        ax.set_yticks(range(k), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
