"""``zoo sweep``: coarse-to-fine hyperparameter search over a recipe."""

from __future__ import annotations

import argparse
import sys

from zoo.core.io import json_text


def cmd_sweep(ns: argparse.Namespace) -> int:
    import yaml

    from zoo.tools.sweep import format_table, load_sweep, run_sweep, wandb_definition

    spec = load_sweep(ns.sweep)
    if ns.wandb:
        text = "# W&B sweep definition of stage 1 (W&B has no coarse-to-fine stages); run it with:\n"
        text += "#   wandb sweep <this file>, then wandb agent <sweep id>\n"
        text += "# the runs must report the metric to W&B for its controller to see it\n"
        text += yaml.safe_dump(wandb_definition(spec), sort_keys=False)
        if ns.wandb_out:
            from pathlib import Path

            Path(ns.wandb_out).write_text(text)
            print(f"wrote {ns.wandb_out}")
        else:
            print(text, end="")
        return 0
    result = run_sweep(spec, sweep_dir=ns.sweep_dir, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(format_table(result, spec))
    for i, ranges in enumerate(result.ranges, 1):
        print(f"stage {i} ranges: " + "; ".join(f"{k} {v}" for k, v in ranges.items()))
    if result.best:
        shown = ", ".join(f"{p.key}={result.best[p.key]:.3g}" if isinstance(result.best[p.key], float)
                          else f"{p.key}={result.best[p.key]}" for p in spec.params)
        print(f"best: {shown}  {spec.metric}={result.best[spec.metric]:.4f}  ({result.best['run_dir']})")
    for note in result.warnings:
        print(f"zoo: warning: {note}", file=sys.stderr)
        print(f"warning: {note}")
    print(f"results: {result.sweep_dir}/results.csv, results.json  ({result.seconds:.1f} s)")
    if ns.json:
        print(json_text(result.to_dict()))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="coarse-to-fine hyperparameter search over a recipe (random or grid, log-space sampling)",
        description="Run the trials of a sweep file (see zoo/tools/sweep.py for its keys): stage 1 samples the "
        "parameters' full ranges with few epochs; each later stage narrows every numeric range to the square "
        "root of its extent around the best trial so far and trains longer. Every trial is a zoo train run "
        "with the divergence monitor on (loss above 3x its initial value stops it: status 'diverged'). "
        "Prints the table sorted by the metric, writes results.csv/results.json into the sweep folder "
        "(runs/<name>/...), and warns when a best value sits at the edge of its range.",
    )
    p.add_argument("sweep", metavar="SWEEP.yaml")
    p.add_argument("--sweep-dir", help="write the trials here instead of a new folder under runs/<name>/")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    p.add_argument("--wandb", action="store_true",
                   help="only print the equivalent W&B sweep definition (stage 1; no wandb needed, nothing runs)")
    p.add_argument("--wandb-out", metavar="FILE", help="with --wandb: write the definition to FILE")
    p.set_defaults(func=cmd_sweep)
