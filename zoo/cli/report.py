"""``zoo report``: one self-contained HTML file comparing finished runs."""

from __future__ import annotations

import argparse


def cmd_report(ns: argparse.Namespace) -> int:
    from zoo.reporting.html_report import write_report

    out = write_report(ns.run_dirs, ns.out, confusion=not ns.no_confusion)
    print(f"wrote {out}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="write an HTML report comparing runs: metrics, learning curves, confusion matrices",
        description="Compare finished run folders in one self-contained HTML file (inline CSS, plots embedded "
        "as PNG; opens offline): a table of val/test accuracy, time and ensemble members, the train/val "
        "loss and accuracy per epoch of every run, and each run's confusion matrix on its test split.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders (runs/<name>-<time>-<id>)")
    p.add_argument("--out", default="report.html", help="the HTML file to write (default: report.html)")
    p.add_argument(
        "--no-confusion", action="store_true", help="skip loading each model to draw its confusion matrix"
    )
    p.set_defaults(func=cmd_report)
