"""A self-contained HTML report comparing finished runs: metrics, learning curves, confusion matrices.

Everything is inline (CSS, and plots as base64 PNGs drawn with matplotlib), so the file opens anywhere,
offline, and can be mailed or attached as it is. Each run folder contributes its ``metrics.json``,
``recipe.yaml``, ``logs/metrics.csv`` (an ensemble's members' logs when it has no log of its own) and,
unless skipped, its model evaluated on its test split.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoo.core.errors import ZooError

CURVES = (
    ("loss", ("train/loss_epoch", "val/loss")),
    ("accuracy", ("train/acc", "val/acc")),
)

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.35em .7em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto}.figs{display:flex;flex-wrap:wrap;gap:1em}.figs figure{margin:0}
figcaption{font-size:.85em;color:#555}.note{color:#777;font-size:.9em}code{background:#f5f5f5;padding:0 .2em}
"""


@dataclass
class RunInfo:
    """What the report knows of one run folder."""

    path: Path
    name: str
    recipe_source: str
    metrics: dict[str, Any]
    recipe: dict[str, Any]
    curves: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> epoch -> value
    member_curves: list[dict[str, dict[int, float]]] = field(default_factory=list)
    confusion: list[list[int]] | None = None
    classes: list[str] = field(default_factory=list)
    confusion_note: str = ""


def _source(recipe_file: Path) -> str:
    """The recipe a run was resolved from, as its recipe.yaml's first comment line says."""
    first = recipe_file.read_text().splitlines()[0] if recipe_file.is_file() else ""
    if first.startswith("# resolved from "):
        return first.removeprefix("# resolved from ").split(";")[0].strip()
    return "?"


def read_curves(csv_file: Path) -> dict[str, dict[int, float]]:
    """Per-epoch values of each column of a CSVLogger metrics.csv (the last value logged in each epoch)."""
    curves: dict[str, dict[int, float]] = {}
    if not csv_file.is_file():
        return curves
    with csv_file.open(newline="") as f:
        for row in csv.DictReader(f):
            epoch = row.get("epoch")
            if not epoch:
                continue
            for key, value in row.items():
                if key in ("epoch", "step") or value in ("", None):
                    continue
                try:
                    curves.setdefault(key, {})[int(float(epoch))] = float(value)
                except ValueError:
                    continue
    # after fit, zoo evaluates the best checkpoint with trainer.validate/test: logged at epoch max_epochs,
    # one past the last training epoch; that row is not a point of the learning curve
    trained = [e for key, points in curves.items() if key.startswith("train/") for e in points]
    if trained:
        last = max(trained)
        curves = {k: {e: v for e, v in points.items() if e <= last} for k, points in curves.items()}
    return curves


def load_run(path: str | Path) -> RunInfo:
    path = Path(path)
    metrics_file = path / "metrics.json"
    if not metrics_file.is_file():
        raise ZooError(f"{path}: no metrics.json; not a finished run folder")
    metrics = json.loads(metrics_file.read_text())
    recipe_file = path / "recipe.yaml"
    recipe = yaml.safe_load(recipe_file.read_text()) if recipe_file.is_file() else {}
    info = RunInfo(
        path=path,
        name=path.name,
        recipe_source=_source(recipe_file),
        metrics=metrics,
        recipe=recipe or {},
        curves=read_curves(path / "logs" / "metrics.csv"),
    )
    for member in metrics.get("members") or []:
        folder = Path(member["run_dir"]) if member.get("run_dir") else None
        if folder is not None and not folder.is_absolute() and not folder.exists():
            folder = path / "members" / folder.name
        if folder is not None:
            info.member_curves.append(read_curves(folder / "logs" / "metrics.csv"))
    return info


def add_confusion(info: RunInfo) -> None:
    """The confusion matrix of the run's model (or ensemble) on its test split."""
    import torch

    from zoo.training.evaluation import load_model, predictions, split_of

    try:
        model = load_model(info.path, info.recipe.get("plugins", []))  # the user's own run folder
        dm, part = split_of(info.recipe["data"], "test")
    except (ZooError, KeyError) as exc:
        info.confusion_note = f"no confusion matrix: {exc}"
        return
    with torch.no_grad():
        pred, _, _ = predictions(model, part.x)  # a vote ensemble's decisions, ties broken as it breaks them
    k = model.num_classes
    counts = torch.zeros(k, k, dtype=torch.long)
    counts.index_put_((part.y.long(), pred), torch.ones(len(part.y), dtype=torch.long), accumulate=True)
    info.confusion = counts.tolist()
    info.classes = [str(c) for c in getattr(dm, "classes", range(k))]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _curve_figures(runs: list[RunInfo]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figures = []
    for title, keys in CURVES:
        for key in keys:
            lines = []
            for run in runs:
                if key in run.curves:
                    lines.append((run.name, run.curves[key]))
                else:  # an ensemble without a log of its own: its members'
                    lines += [(f"{run.name} m{i}", c[key]) for i, c in enumerate(run.member_curves) if key in c]
            if not lines:
                continue
            fig, ax = plt.subplots(figsize=(5.5, 3.4))
            for label, points in lines:
                epochs = sorted(points)
                ax.plot(epochs, [points[e] for e in epochs], marker="o", markersize=3, label=label)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel(title)
            ax.set_title(key)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            figures.append((key, _png(fig)))
    return figures


def _confusion_figure(run: RunInfo) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(run.confusion)
    size = min(7.0, 2.0 + 0.45 * k)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(run.confusion, cmap="Blues")
    if k <= 20:
        top = max(max(r) for r in run.confusion) or 1
        for i, row in enumerate(run.confusion):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > top / 2 else "black")
        ax.set_xticks(range(k), run.classes, fontsize=7, rotation=90 if k > 10 else 0)
        ax.set_yticks(range(k), run.classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(run.name, fontsize=9)
    return _png(fig)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else html.escape(str(value))


def _metrics_table(runs: list[RunInfo]) -> str:
    head = ["run", "recipe", "val_acc", "test_acc", "seconds", "ensemble_acc", "members (test_acc)"]
    rows = []
    for run in runs:
        m = run.metrics
        members = m.get("members") or []
        member_text = ", ".join(
            f"m{x.get('member', i)}: {_fmt(x.get('test_acc'))}" for i, x in enumerate(members)
        )
        cells = [
            f"<td>{html.escape(run.name)}</td>",
            f"<td><code>{html.escape(run.recipe_source)}</code></td>",
            *(f'<td class="num">{_fmt(m.get(k))}</td>' for k in ("val_acc", "test_acc", "seconds", "ensemble_acc")),
            f"<td>{member_text}</td>",
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"


def build_report(run_dirs: list[str | Path], confusion: bool = True, title: str = "zoo runs") -> str:
    """The report's HTML for these run folders."""
    runs = [load_run(p) for p in run_dirs]
    if confusion:
        for run in runs:
            add_confusion(run)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Metrics</h2>",
        _metrics_table(runs),
        "<h2>Learning curves</h2>",
    ]
    figures = _curve_figures(runs)
    if figures:
        parts.append("<div class='figs'>")
        parts += [f"<figure><img alt='{html.escape(k)}' src='{src}'><figcaption>{html.escape(k)} per epoch</figcaption></figure>" for k, src in figures]
        parts.append("</div>")
    else:
        parts.append("<p class='note'>No logs/metrics.csv with per-epoch values in these runs.</p>")
    parts.append("<h2>Confusion matrices (test split)</h2>")
    if not confusion:
        parts.append("<p class='note'>Skipped (--no-confusion).</p>")
    else:
        parts.append("<div class='figs'>")
        for run in runs:
            if run.confusion is not None:
                parts.append(f"<figure><img alt='confusion matrix of {html.escape(run.name)}' src='{_confusion_figure(run)}'>"
                             f"<figcaption>{html.escape(run.name)}</figcaption></figure>")
            else:
                parts.append(f"<p class='note'>{html.escape(run.name)}: {html.escape(run.confusion_note)}</p>")
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(run_dirs: list[str | Path], out: str | Path = "report.html", confusion: bool = True) -> Path:
    out = Path(out)
    out.write_text(build_report(run_dirs, confusion=confusion), encoding="utf-8")
    return out
