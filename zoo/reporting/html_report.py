"""A self-contained HTML report comparing finished runs: metrics, learning curves, confusion matrices.

Everything is inline (CSS, and plots as base64 PNGs drawn with matplotlib), so the file opens anywhere,
offline, and can be mailed or attached as it is. Each run folder contributes its ``metrics.json``,
``recipe.yaml``, ``logs/metrics.csv`` (an ensemble's members' logs, drawn with the ensemble's own
accuracy, when it has no log of its own) and, unless skipped, its model evaluated on its test split.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.core.errors import ZooError, brief
from zoo.core.io import MAX_TABLE_BYTES, MAX_TEXT_BYTES, atomic_write_text, read_text

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
tr.member td{color:#555;font-size:.95em}td.member{padding-left:1.6em}
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
    rates: dict[str, dict[int, float]] = field(default_factory=dict)  # learning rates: key -> step -> value
    member_curves: list[dict[str, dict[int, float]]] = field(default_factory=list)
    member_rates: list[dict[str, dict[int, float]]] = field(default_factory=list)
    confusion: list[list[int]] | None = None
    classes: list[str] = field(default_factory=list)
    confusion_note: str = ""

    @property
    def is_ensemble(self) -> bool:
        return bool(self.metrics.get("members"))


def _source(recipe_text: str) -> str:
    """The recipe a run was resolved from, as its recipe.yaml's first comment line says."""
    first = recipe_text.splitlines()[0] if recipe_text else ""
    if first.startswith("# resolved from "):
        return first.removeprefix("# resolved from ").split(";")[0].strip()
    return "?"


def read_metric_rows(csv_file: Path) -> list[dict[str, float]]:
    """The rows of a CSVLogger metrics.csv as numbers (an empty cell left out); [] when there is no file.

    A damaged file (cut short, garbled, not a CSV) is a ZooError naming the file, the line and what is wrong.
    """
    if not csv_file.exists():
        return []
    text = read_text(csv_file, MAX_TABLE_BYTES, "metrics log")
    rows: list[dict[str, float]] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if not header or "step" not in header:
            raise ZooError(f"{csv_file}: not a metrics log: its first line has no 'step' column")
        for line in reader:
            if len(line) != len(header):
                raise ZooError(
                    f"{csv_file}: line {reader.line_num} has {len(line)} values for the {len(header)} columns of "
                    "the header: the file is cut short or damaged"
                )
            row = {}
            for key, value in zip(header, line):
                if value == "":
                    continue
                try:
                    row[key] = float(value)
                except ValueError:
                    raise ZooError(
                        f"{csv_file}: line {reader.line_num}, column {key}: {brief(value)} is not a number: "
                        "the file is damaged"
                    ) from None
            rows.append(row)
    except csv.Error as exc:
        raise ZooError(
            f"{csv_file}: line {reader.line_num}: not readable as CSV ({exc}): the file is damaged"
        ) from None
    return rows


def read_curves(csv_file: Path) -> dict[str, dict[int, float]]:
    """Per-epoch values of each column of a CSVLogger metrics.csv (the last value logged in each epoch)."""
    curves: dict[str, dict[int, float]] = {}
    for row in read_metric_rows(csv_file):
        if "epoch" not in row:
            continue
        for key, value in row.items():
            if key not in ("epoch", "step"):
                curves.setdefault(key, {})[int(row["epoch"])] = value
    # after fit, zoo evaluates the best checkpoint with trainer.validate/test: logged at epoch max_epochs,
    # one past the last training epoch; that row is not a point of the learning curve
    trained = [e for key, points in curves.items() if key.startswith("train/") for e in points]
    if trained:
        last = max(trained)
        curves = {k: {e: v for e, v in points.items() if e <= last} for k, points in curves.items()}
    return curves


def is_learning_rate(key: str) -> bool:
    return key.startswith(("train/lr", "lr-"))  # lr-<Optimizer>: what runs logged before train/lr


def read_rates(csv_file: Path) -> dict[str, dict[int, float]]:
    """The learning rate of each optimizer group per logged optimizer step, from a run's metrics.csv."""
    rates: dict[str, dict[int, float]] = {}
    for row in read_metric_rows(csv_file):
        for key, value in row.items():
            if is_learning_rate(key) and "step" in row:
                rates.setdefault(key, {})[int(row["step"])] = value
    return rates


def _read_metrics(metrics_file: Path) -> dict[str, Any]:
    try:
        metrics = json.loads(read_text(metrics_file, MAX_TEXT_BYTES, "metrics file"))
    except json.JSONDecodeError as exc:
        raise ZooError(
            f"{metrics_file}: not valid JSON ({exc.msg}: line {exc.lineno}, column {exc.colno}): the file is "
            "cut short or damaged"
        ) from None
    if not isinstance(metrics, dict):
        raise ZooError(f"{metrics_file}: expected a JSON object of a run's results, got {type(metrics).__name__}")
    members = metrics.get("members")
    if members is not None and not (isinstance(members, list) and all(isinstance(m, dict) for m in members)):
        raise ZooError(
            f"{metrics_file}: members: expected a list of objects, one per member, got {brief(members)}"
        )
    return metrics


def _read_recipe(recipe_file: Path) -> tuple[str, dict[str, Any]]:
    """A run folder's recipe.yaml as its text and its mapping ('' and {} when there is none)."""
    if not recipe_file.exists():
        return "", {}
    from zoo.core.recipe import read_yaml

    text, recipe = read_yaml(recipe_file)
    if recipe is not None and not isinstance(recipe, dict):
        raise ZooError(f"{recipe_file}: expected a recipe (a YAML mapping), got {type(recipe).__name__}")
    return text, recipe or {}


def _not_a_run(path: Path) -> str:
    """What a folder with no metrics.json is, said so that the user can give zoo report the right one."""
    if not path.exists():
        return "no such folder"
    if not path.is_dir():
        return "not a folder: give a run folder or a sweep folder"
    # zoo sweep's default folder is runs/<sweep name>/<time>-<id>: its parent is an easy folder to give instead
    sweeps = sorted(p for p in path.glob("*/sweep.json") if p.is_file()) if path.is_dir() else []
    if sweeps:
        return f"holds sweep folders, and is not one: report one of them (zoo report {sweeps[-1].parent})"
    if (path / "recipe.yaml").is_file():
        return "no metrics.json: the run has not finished (zoo train --resume continues it)"
    return "no metrics.json and no sweep.json: neither a finished run folder nor a sweep folder"


def load_run(path: str | Path) -> RunInfo:
    path = Path(path)
    metrics_file = path / "metrics.json"
    if not metrics_file.exists():
        raise ZooError(f"{path}: {_not_a_run(path)}")
    metrics = _read_metrics(metrics_file)
    recipe_text, recipe = _read_recipe(path / "recipe.yaml")
    info = RunInfo(
        path=path,
        name=path.name,
        recipe_source=_source(recipe_text),
        metrics=metrics,
        recipe=recipe,
        curves=read_curves(path / "logs" / "metrics.csv"),
        rates=read_rates(path / "logs" / "metrics.csv"),
    )
    for member in metrics.get("members") or []:
        folder = Path(member["run_dir"]) if member.get("run_dir") else None
        if folder is not None and not folder.is_absolute() and not folder.exists():
            folder = path / "members" / folder.name
        if folder is not None:
            info.member_curves.append(read_curves(folder / "logs" / "metrics.csv"))
            info.member_rates.append(read_rates(folder / "logs" / "metrics.csv"))
    return info


def add_confusion(info: RunInfo, plugins: Iterable[str] = ()) -> None:
    """The confusion matrix of the run's model (or ensemble) on its test split.

    ``plugins``: the ones the user passed (``--plugin``); one the run's recipe names is imported only if
    listed there, as for ``zoo eval``: a run folder handed over is data, and reading it runs no code."""
    import torch

    from zoo.training.evaluation import data_of, load_model, split_predictions

    try:
        model = load_model(info.path, plugins)
        dm = data_of(info.recipe["data"], "test")
    except (ZooError, KeyError) as exc:
        info.confusion_note = f"no confusion matrix: {exc}"
        return
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    with torch.no_grad():
        # a vote ensemble's decisions, ties broken as it breaks them; a streamed split batch by batch
        pred, _, _, labels = split_predictions(model, dm, "test")
    info.confusion = multiclass_confusion_matrix(pred, labels, model.num_classes).tolist()
    info.classes = [str(c) for c in getattr(dm, "classes", range(model.num_classes))]


def png_uri(fig) -> str:
    """The figure as a data: URI to inline in HTML; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(
    title: str,
    xlabel: str,
    ylabel: str,
    lines: list[tuple[str, dict[int, float], str]],
    log: bool = False,
    levels: list[tuple[str, float]] = (),
) -> str:
    """One plot: each line is (label, x -> y, style); ``levels`` are horizontal lines (label, value)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for label, points, style in lines:
        xs = sorted(points)
        ax.plot(xs, [points[x] for x in xs], style, markersize=3, label=label, linewidth=1.2)
    for label, value in levels:
        ax.axhline(value, linestyle="--", color="black", linewidth=1.2, label=label)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return png_uri(fig)


def curve_lines(
    runs: list[RunInfo], key: str
) -> tuple[list[tuple[str, dict[int, float], str]], list[tuple[str, float]]]:
    """The lines of one metric's plot, and its horizontal lines: an ensemble, which has no log of its own,
    is drawn as its members' curves and, for validation accuracy, its own (the combination's) as a level."""
    lines, levels = [], []
    for run in runs:
        if key in run.curves:
            lines.append((run.name, run.curves[key], "-o"))
        elif run.is_ensemble:
            members = [c[key] for c in run.member_curves if key in c]
            lines += [(f"{run.name} m{i}", c, ":.") for i, c in enumerate(members)]
            final = run.metrics.get("val_acc") if key == "val/acc" else None
            if members and final is not None:
                levels.append((f"{run.name} ensemble ({final:.4f})", final))
    return lines, levels


def rate_lines(runs: list[RunInfo]) -> list[tuple[str, dict[int, float], str]]:
    """The learning rate of each run by optimizer step; optimizer groups on one schedule (AdamW's decayed
    and undecayed parameters) make one line, and an ensemble's members share theirs."""
    lines = []
    for run in runs:
        rates = run.rates or (run.member_rates[0] if run.member_rates else {})
        label = run.name if run.rates else f"{run.name} (members)"
        keys = sorted(rates)
        distinct = [k for i, k in enumerate(keys) if rates[k] not in [rates[j] for j in keys[:i]]]
        lines += [
            (label if len(distinct) == 1 else f"{label} {k.rsplit('/', 1)[-1]}", rates[k], "-")
            for k in distinct
        ]
    return lines


def _curve_figures(runs: list[RunInfo]) -> list[tuple[str, str]]:
    figures = []
    for title, keys in CURVES:
        for key in keys:
            lines, levels = curve_lines(runs, key)
            if lines:
                figures.append((f"{key} per epoch", _figure(key, "epoch", title, lines, levels=levels)))
    rates = rate_lines(runs)
    if rates:
        figures.append(
            (
                "learning rate per optimizer step",
                _figure("learning rate", "optimizer step", "learning rate", rates, log=True),
            )
        )
    return figures


def _confusion_figure(run: RunInfo) -> str:
    from zoo.monitoring.figures import confusion_figure

    return png_uri(confusion_figure(run.confusion, run.classes, run.name))


def _seconds(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else ""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else html.escape(str(value))


def _metrics_table(runs: list[RunInfo]) -> str:
    head = ["run", "recipe", "val_acc", "test_acc", "time (s)", "note"]
    rows = []

    def row(cells: list[str], css: str = "") -> None:
        rows.append(f"<tr{css}>" + "".join(cells) + "</tr>")

    for run in runs:
        m = run.metrics
        members = m.get("members") or []
        note = (
            f"ensemble of {len(members)}: {run.recipe.get('ensemble', {}).get('combine', '')}"
            if members
            else ""
        )
        source = html.escape(run.recipe_source)
        row(
            [
                f"<td>{html.escape(run.name)}</td>",
                f"<td><code title='{source}'>{html.escape(Path(run.recipe_source).name)}</code></td>",
                *(f'<td class="num">{_fmt(m.get(k))}</td>' for k in ("val_acc", "test_acc")),
                f'<td class="num">{_seconds(m.get("seconds"))}</td>',
                f"<td>{html.escape(note)}</td>",
            ]
        )
        for i, member in enumerate(members):  # each member under its ensemble
            what = f"seed {member['seed']}" if "seed" in member else member.get("snapshot", "")
            row(
                [
                    f"<td class='member'>&#8627; m{member.get('member', i)}</td>",
                    f"<td>{html.escape(str(what))}</td>",
                    *(f'<td class="num">{_fmt(member.get(k))}</td>' for k in ("val_acc", "test_acc")),
                    "<td></td><td>member</td>",
                ],
                " class='member'",
            )
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"


def build_report(
    run_dirs: list[str | Path], confusion: bool = True, title: str = "zoo runs", plugins: Iterable[str] = ()
) -> str:
    """The report's HTML for these run folders (``plugins``: see :func:`add_confusion`)."""
    runs = [load_run(p) for p in run_dirs]
    if confusion:
        for run in runs:
            add_confusion(run, plugins)
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
        parts += [
            f"<figure><img alt='{html.escape(k)}' src='{src}'><figcaption>{html.escape(k)}</figcaption></figure>"
            for k, src in figures
        ]
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
                parts.append(
                    f"<figure><img alt='confusion matrix of {html.escape(run.name)}' src='{_confusion_figure(run)}'>"
                    f"<figcaption>{html.escape(run.name)}</figcaption></figure>"
                )
            else:
                parts.append(
                    f"<p class='note'>{html.escape(run.name)}: {html.escape(run.confusion_note)}</p>"
                )
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(
    run_dirs: list[str | Path], out: str | Path = "report.html", confusion: bool = True, plugins: Iterable[str] = ()
) -> Path:
    out = Path(out)
    atomic_write_text(out, build_report(run_dirs, confusion=confusion, plugins=plugins))
    return out
