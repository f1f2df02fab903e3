"""``zoo report``: compare finished runs in a self-contained HTML file, or in a W&B Report (``--wandb``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from zoo.cli.args import add_plugin_argument
from zoo.core.errors import ZooError
from zoo.core.io import output_file


def cmd_report(ns: argparse.Namespace) -> int:
    if ns.publish:
        return _publish(ns)
    if not ns.run_dirs:
        raise ZooError("zoo report: name the run folders to compare (or --publish SPEC.json)")
    sweeps = [d for d in ns.run_dirs if (Path(d) / "sweep.json").is_file()]
    if sweeps:
        return _sweep(ns, sweeps)
    if ns.wandb:
        return _wandb(ns)
    from zoo.reporting.html_report import write_report

    out = output_file(ns.out or "report.html", "HTML file", "report.html")
    out = write_report(ns.run_dirs, out, confusion=not ns.no_confusion, plugins=ns.plugin)
    print(f"wrote {out}")
    return 0


def _sweep(ns: argparse.Namespace, sweeps: list[str]) -> int:
    from zoo.reporting.sweep_report import write_sweep_report

    if len(ns.run_dirs) > 1 or ns.wandb:
        raise ZooError(f"zoo report: {sweeps[0]} is a sweep folder: report it alone, without --wandb "
                       "(zoo report SWEEP_DIR [--out FILE.html])")
    out = output_file(ns.out, "HTML file", "report.html") if ns.out else None
    out, importance_file = write_sweep_report(sweeps[0], out)
    print(f"wrote {out} and {importance_file}")
    return 0


def _wandb(ns: argparse.Namespace) -> int:
    from zoo.monitoring.wandb_logging import sync_command
    from zoo.monitoring.wandb_target import api_key_configured
    from zoo.reporting.wandb_report import build_spec, publish, write_spec

    spec = build_spec(ns.run_dirs, title=ns.title, project=ns.project, entity=ns.entity)
    unsynced = [command for command in map(sync_command, ns.run_dirs) if command]
    if ns.out or not api_key_configured():
        out = write_spec(spec, ns.out or "report.json")
        print(f"wrote {out}: the W&B Report's spec, for these runs by their W&B run ids")
        if unsynced:
            print("upload the runs first:")
            print("\n".join(f"  {command}" for command in unsynced))
        print(f"then publish the report with:\n  zoo report --publish {shlex.quote(str(out))}")
        return 0
    if unsynced:
        print(
            "zoo: some of these runs were logged offline: the report shows them once they are uploaded with:",
            file=sys.stderr,
        )
        print("\n".join(f"  {command}" for command in unsynced), file=sys.stderr)
    print(publish(spec))
    return 0


def _publish(ns: argparse.Namespace) -> int:
    from zoo.reporting.wandb_report import publish, read_spec

    if ns.run_dirs or ns.wandb or ns.out:
        raise ZooError(
            "zoo report --publish SPEC.json takes the spec alone (no run folders, --wandb or --out)"
        )
    print(publish(read_spec(ns.publish), entity=ns.entity))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="compare runs: an HTML report (metrics, curves, confusion matrices), or a W&B Report (--wandb)",
        description="Compare finished run folders. By default one self-contained HTML file (inline CSS, "
        "plots embedded as PNG; opens offline): the metrics of each run and ensemble member, train/val "
        "loss and accuracy per epoch, the learning rate, and each run's test confusion matrix. With --wandb, "
        "a W&B Report over exactly these runs' W&B runs: saved on the server when an API key is configured, "
        "otherwise written as a spec (--out) to publish later with --publish. Given a sweep folder (one with "
        "sweep.json), a report of the sweep instead: its trials best first, a parallel-coordinates plot, the "
        "metric against each parameter and each parameter's importance (Optuna's fANOVA), written to "
        "SWEEP_DIR/report.html (or --out) with importance.json beside it.",
    )
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR",
                   help="run folders (runs/<name>-<time>-<id>), or one sweep folder")
    p.add_argument(
        "--out",
        help="the file to write (default: report.html; with --wandb, report.json, and "
        "then nothing is published; for a sweep folder, report.html in it, importance.json beside it)",
    )
    p.add_argument(
        "--no-confusion", action="store_true", help="skip loading each model to draw its confusion matrix"
    )
    add_plugin_argument(
        p, "import this plugin to load the models for the confusion matrices; a plugin a run folder names is "
        "imported only when named here (reading a run folder never runs its code)"
    )
    p.add_argument("--wandb", action="store_true", help="a W&B Report instead of HTML (needs zoo[reports])")
    p.add_argument("--publish", metavar="SPEC", help="save a report spec written by --wandb --out on W&B")
    p.add_argument("--title", help="the W&B Report's title (default: zoo: and the run folders' names)")
    p.add_argument("--project", help="the W&B project the report lives in (default: the first run's)")
    p.add_argument("--entity", help="the W&B entity it lives in (default: the first run's, or your default)")
    p.set_defaults(func=cmd_report)
