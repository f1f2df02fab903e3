"""A sweep's self-contained HTML report: its trials best first, a parallel-coordinates plot, the metric
against each parameter, and each parameter's importance (fANOVA, also written to ``importance.json``).

Styled and embedded as zoo's run report is (zoo.reporting.html_report): inline CSS, plots as PNGs.
Trials that did not train to their end (pruned, diverged) are drawn apart and never named the best.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from zoo.core.io import atomic_write_text, json_text
from zoo.reporting.html_report import CSS, png_uri
from zoo.reporting.sweep_results import (
    FINISHED,
    Importance,
    SearchedParam,
    SweepResults,
    counts_as_finished,
    importance,
    read_sweep,
)

REPORT, IMPORTANCE = "report.html", "importance.json"
# how each kind of trial is drawn: finished ones in the metric's colours, the others apart from them
STYLE = {
    "pruned": {"color": "#e67e22", "marker": "v", "linestyle": "--", "label": "pruned"},
    "diverged": {"color": "#c0392b", "marker": "x", "linestyle": ":", "label": "diverged"},
}
OTHER = {"color": "#7f8c8d", "marker": "s", "linestyle": "-.", "label": "other"}
EXTRA_CSS = """
tr.best td{background:#eaf6ea;font-weight:600}tr.stopped td{color:#888}
.bar{background:#4c72b0;height:.8em;display:inline-block;vertical-align:middle}
"""


def _style(row: dict[str, Any]) -> dict[str, str]:
    return STYLE.get(row["status"], OTHER)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def position(param: SearchedParam, value: Any) -> float:
    """Where a value sits on its parameter's axis, 0 to 1 over the range searched (in log space for
    log_uniform; choices evenly spaced)."""
    if not param.numeric:
        if value not in param.options:
            return math.nan
        return param.options.index(value) / (len(param.options) - 1) if len(param.options) > 1 else 0.5
    to = math.log10 if param.log else float
    return (to(value) - to(param.low)) / (to(param.high) - to(param.low))


def axis_ticks(param: SearchedParam) -> list[tuple[float, str]]:
    """(place on the axis, label) of a parameter's ticks in the parallel-coordinates plot: each option, or
    round values inside the range searched (powers of ten on a log axis), as matplotlib would place them."""
    if not param.numeric:
        return [(position(param, option), str(option)) for option in param.options]
    from matplotlib.ticker import LogLocator, MaxNLocator

    locator = LogLocator(base=10, numticks=8) if param.log else MaxNLocator(nbins=5)
    # the locator's values are computed (10 ** -5 comes back a hair under 1e-5): the ends are compared loosely
    slack = 1e-9 * (param.high - param.low)
    inside = [v for v in locator.tick_values(param.low, param.high)
              if param.low - slack <= v <= param.high + slack]
    if len(inside) < 2:  # a range within one decade, or narrower than a round step: its ends
        inside = [param.low, param.high]
    return [(position(param, v), f"{v:.3g}") for v in inside]


def _metric_ticks(lo: float, hi: float) -> list[tuple[float, str]]:
    from matplotlib.ticker import MaxNLocator

    inside = [v for v in MaxNLocator(nbins=5).tick_values(lo, hi) if lo <= v <= hi] or [lo, hi]
    return [((v - lo) / (hi - lo), f"{v:.3g}") for v in inside]


def _metric_range(results: SweepResults) -> tuple[float, float]:
    values = [r[results.metric] for r in results.rows if math.isfinite(r[results.metric])]
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    return (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)


def _legend_handles(results: SweepResults) -> list:
    from matplotlib.lines import Line2D

    statuses = sorted({r["status"] for r in results.rows} - {FINISHED})
    styles = {s: _style({"status": s}) for s in statuses}
    handles = [Line2D([], [], color=styles[s]["color"], linestyle=styles[s]["linestyle"],
                      marker=styles[s]["marker"], label=s) for s in statuses]
    if results.best is not None:
        handles.insert(0, Line2D([], [], color="black", linewidth=3, marker="*", markersize=10, label="best"))
    return handles


def parallel_coordinates(results: SweepResults) -> str:
    """One vertical axis per parameter and one for the metric; a line per trial, coloured by its metric."""
    plt = _pyplot()
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    lo, hi = _metric_range(results)
    norm = Normalize(lo, hi)
    cmap = colormaps["viridis" if results.goal == "maximize" else "viridis_r"]
    axes = len(results.params) + 1
    fig, ax = plt.subplots(figsize=(max(6.0, 2.3 * axes), 4.2))
    best = results.best
    for row in reversed(results.rows):  # the best drawn last, on top
        value = row[results.metric]
        # a trial with no metric: its line ends at the last parameter
        level = norm(value) if math.isfinite(value) else math.nan
        ys = [*(position(p, row[p.key]) for p in results.params), level]
        if counts_as_finished(row, results.metric):
            ax.plot(range(axes), ys, color=cmap(norm(value)), linewidth=3.2 if row is best else 1.4,
                    alpha=1.0 if row is best else 0.8, marker="*" if row is best else "o",
                    markersize=11 if row is best else 3, zorder=3 if row is best else 2)
        else:
            style = _style(row)
            ax.plot(range(axes), ys, color=style["color"], linestyle=style["linestyle"],
                    marker=style["marker"], markersize=4, linewidth=1.0, alpha=0.7, zorder=1)
    labels = [*(axis_ticks(p) for p in results.params), _metric_ticks(lo, hi)]
    for i, ticks in enumerate(labels):
        ax.axvline(i, color="#333", linewidth=0.8, zorder=0)
        for y, text in ticks:
            # a tick mark on the axis, its label beside it and above the trials' lines and markers
            ax.plot([i - 0.02, i], [y, y], color="#333", linewidth=0.8, zorder=0)
            ax.text(i + 0.05, y, text, fontsize=7, va="center", color="#333", zorder=5,
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 0.5})
    names = [p.key + (" (log)" if p.log else "") for p in results.params]
    ax.set_xticks(range(axes), [*names, results.metric], fontsize=8)
    ax.set_xlim(-0.15, axes - 0.6)
    ax.set_ylim(-0.06, 1.06)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.colorbar(ScalarMappable(norm, cmap), ax=ax, pad=0.01, fraction=0.03).set_label(results.metric)
    handles = _legend_handles(results)
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.1), ncol=len(handles),
                  frameon=False)
    ax.set_title(f"{results.metric} ({results.goal}) and the parameters of each trial", fontsize=10)
    return png_uri(fig)


def _panel_x(param: SearchedParam, row: dict[str, Any], offset: float) -> float:
    """Where a trial sits on its parameter's x axis: its value, or its choice's place moved by ``offset``."""
    if param.numeric:
        return row[param.key]
    return position(param, row[param.key]) * (len(param.options) - 1) + offset


def metric_panels(results: SweepResults) -> str:
    """The metric against each parameter, one panel each; the best trial starred, the others apart."""
    plt = _pyplot()
    import numpy as np

    n = len(results.params)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, grid = plt.subplots(rows, cols, figsize=(4.3 * cols, 3.3 * rows), squeeze=False)
    # spreads the trials of one choice apart, the same way on every report and in every panel
    offsets = np.random.default_rng(0).uniform(-0.12, 0.12, len(results.rows))
    jitter = dict(zip(map(id, results.rows), offsets))
    best, metric = results.best, results.metric
    drawn = [r for r in results.rows if math.isfinite(r[metric])]
    finished = [r for r in drawn if counts_as_finished(r, metric)]
    for ax, param in zip(grid.flat, results.params):
        x = {id(r): _panel_x(param, r, jitter[id(r)]) for r in drawn}
        ax.scatter([x[id(r)] for r in finished], [r[metric] for r in finished], s=22, color="#4c72b0",
                   label="finished", zorder=2)
        for status in sorted({r["status"] for r in drawn} - {FINISHED}):
            stopped = [r for r in drawn if r["status"] == status]
            style = _style(stopped[0])
            ax.scatter([x[id(r)] for r in stopped], [r[metric] for r in stopped], s=30,
                       color=style["color"], marker=style["marker"], label=status, zorder=2)
        if best is not None:
            ax.scatter([x[id(best)]], [best[metric]], s=180, marker="*", color="gold", edgecolors="black",
                       label="best", zorder=3)
        if param.numeric:
            margin = (param.high / param.low) ** 0.03 if param.log else (param.high - param.low) * 0.03
            if param.log:
                ax.set_xscale("log")
                ax.set_xlim(param.low / margin, param.high * margin)
            else:
                ax.set_xlim(param.low - margin, param.high + margin)
        else:
            ax.set_xticks(range(len(param.options)), [str(o) for o in param.options])
            ax.set_xlim(-0.5, len(param.options) - 0.5)
        ax.set_xlabel(param.key + (" (log scale)" if param.log else ""))
        ax.set_ylabel(results.metric)
        ax.grid(alpha=0.3)
    grid.flat[0].legend(fontsize=7)
    for ax in list(grid.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return png_uri(fig)


def _cell(value: Any, digits: str = ".4g") -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else format(value, digits)
    return html.escape(str(value))


def results_table(results: SweepResults) -> str:
    """Every trial, best first; the best trial marked, the ones that did not finish greyed out."""
    numbers = [c for c in ("val_acc", "epochs", "seconds") if c in results.columns and c != results.metric]
    keys = [p.key for p in results.params]
    head = ["rank", "stage", "trial", *keys, results.metric, *numbers, "status", "run"]
    body = []
    for rank, row in enumerate(results.rows, 1):
        finished = counts_as_finished(row, results.metric)
        css = " class='best'" if row is results.best else ("" if finished else " class='stopped'")
        status = html.escape(row["status"]) + (" &#9733; best" if row is results.best else "")
        run = str(row.get("run_dir") or "")
        cells = [
            f"<td class='num'>{rank}</td>",
            *(f"<td class='num'>{_cell(row.get(c), '.0f')}</td>" for c in ("stage", "trial")),
            *(f"<td{' class=num' if p.numeric else ''}>{_cell(row[p.key])}</td>" for p in results.params),
            f"<td class='num'>{_cell(row[results.metric], '.4f')}</td>",
            *(f"<td class='num'>{_cell(row.get(c), '.4f' if c == 'val_acc' else '.4g')}</td>"
              for c in numbers),
            f"<td>{status}</td>",
            f"<td title='{html.escape(run)}'>{html.escape(Path(run).name)}</td>",
        ]
        body.append(f"<tr{css}>" + "".join(cells) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
            + "".join(body) + "</table>")


def importance_section(found: Importance) -> str:
    if found.note:
        return f"<p class='note'>No importance: {html.escape(found.note)}.</p>"
    top = max(found.values.values()) or 1.0
    rows = "".join(
        f"<tr><td><code>{html.escape(key)}</code></td><td class='num'>{value:.3f}</td>"
        f"<td><span class='bar' style='width:{200 * value / top:.0f}px'></span></td></tr>"
        for key, value in found.values.items())
    return (f"<p>The share of the metric's variance each parameter explains (Optuna's fANOVA over "
            f"{found.trials} finished trials; the shares sum to 1).</p>"
            f"<table><tr><th>parameter</th><th>importance</th><th></th></tr>{rows}</table>")


def _summary(results: SweepResults) -> str:
    counts: dict[str, int] = {}
    for row in results.rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    finished_first = sorted(counts.items(), key=lambda kv: kv[0] != FINISHED)
    told = ", ".join(f"{n} {status}" for status, n in finished_first)
    lines = [(f"<p><code>{html.escape(str(results.folder))}</code>: {len(results.rows)} trials ({told}); "
              f"ranked by <b>{html.escape(results.metric)}</b> ({html.escape(results.goal)}).</p>")]
    best = results.best
    if best is None:
        lines.append("<p class='note'>No trial trained to its end with a finite metric: "
                     "there is no best.</p>")
    else:
        shown = ", ".join(f"<code>{html.escape(p.key)}={_cell(best[p.key])}</code>" for p in results.params)
        lines.append(f"<p>Best: {shown}, {html.escape(results.metric)} = {best[results.metric]:.4f} "
                     f"(<code>{html.escape(Path(str(best.get('run_dir', ''))).name)}</code>).</p>")
    return "".join(lines)


def build_sweep_report(results: SweepResults, found: Importance) -> str:
    title = f"zoo sweep {results.name}"
    figure = "<figure><img alt='{alt}' src='{src}'><figcaption>{alt}</figcaption></figure>"
    return "\n".join([
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{CSS}{EXTRA_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        _summary(results),
        "<h2>Parameter importance</h2>",
        importance_section(found),
        "<h2>Parallel coordinates</h2>",
        figure.format(alt="parallel coordinates of every trial", src=parallel_coordinates(results)),
        "<h2>The metric against each parameter</h2>",
        figure.format(alt=f"{html.escape(results.metric)} against each parameter",
                      src=metric_panels(results)),
        "<h2>Trials, best first</h2>",
        results_table(results),
        "</body></html>\n",
    ])


def write_sweep_report(sweep_dir: str | Path, out: str | Path | None = None) -> tuple[Path, Path]:
    """The report of a sweep folder into ``out`` (default: report.html in the folder) and importance.json
    beside it; both are built before either is written."""
    results = read_sweep(sweep_dir)
    found = importance(results)
    page = build_sweep_report(results, found)
    out = Path(out) if out is not None else results.folder / REPORT
    importance_file = out.parent / IMPORTANCE
    atomic_write_text(importance_file, json_text(found.to_dict(results), indent=2) + "\n")
    atomic_write_text(out, page)
    return out, importance_file
