"""``zoo sweep``: coarse-to-fine hyperparameter search over a recipe."""

from __future__ import annotations

import argparse
import sys

from zoo.cli.args import add_plugin_argument, whole_number
from zoo.core.errors import ZooError
from zoo.core.io import json_text


def cmd_sweep(ns: argparse.Namespace) -> int:
    import yaml

    from zoo.tools.sweep import format_table, load_sweep, resume_sweep, run_sweep, stopped_sweep, wandb_definition
    from zoo.training.checkpoints import Interrupted

    if ns.resume is not None:
        if ns.sweep or ns.sweep_dir or ns.overwrite or ns.wandb or ns.storage:
            raise ZooError("zoo sweep --resume DIR takes the sweep folder alone: it records its sweep file and "
                           "storage (drop SWEEP.yaml, --sweep-dir, --overwrite, --storage and --wandb)")
    elif ns.sweep is None:
        raise ZooError("zoo sweep: name the sweep file (or --resume a stopped sweep's folder)")
    if ns.wandb_out and not ns.wandb:
        raise ZooError("--wandb-out FILE writes the W&B sweep definition: it goes with --wandb (without it the "
                       "sweep would run and FILE never be written)")
    if ns.wandb and (ns.sweep_dir or ns.storage or ns.overwrite or ns.workers != 1):
        raise ZooError("--wandb only prints the W&B sweep definition and runs nothing: drop --sweep-dir, "
                       "--storage, --overwrite and --workers, or --wandb to run the sweep")
    spec = stopped_sweep(ns.resume) if ns.resume is not None else load_sweep(ns.sweep)
    if ns.wandb:
        text = "# W&B sweep definition of stage 1 (W&B has no coarse-to-fine stages); run it with:\n"
        text += "#   wandb sweep <this file>, then wandb agent <sweep id>\n"
        text += "# the runs must report the metric to W&B for its controller to see it\n"
        text += yaml.safe_dump(wandb_definition(spec), sort_keys=False)
        if ns.wandb_out:
            from zoo.core.io import atomic_write_text

            atomic_write_text(ns.wandb_out, text)
            print(f"wrote {ns.wandb_out}")
        else:
            print(text, end="")
        return 0

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        if ns.resume is not None:
            result = resume_sweep(ns.resume, spec=spec, workers=ns.workers, log=log, plugins=ns.plugin)
        else:
            result = run_sweep(spec, sweep_dir=ns.sweep_dir, overwrite=ns.overwrite, storage=ns.storage,
                               workers=ns.workers, log=log, plugins=ns.plugin)
    except Interrupted as stop:
        print(_stopped_message(stop), file=sys.stderr)
        if stop.requeue:
            from zoo.cli.main import requeue_job

            requeue_job(goes_on=ns.sweep_dir is not None or ns.resume is not None, what="sweep",
                        option="--sweep-dir")
        return stop.exit_code
    print(format_table(result, spec))
    for i, ranges in enumerate(result.ranges, 1):
        print(f"stage {i} ranges: " + "; ".join(f"{k} {v}" for k, v in ranges.items()))
    if result.best:
        shown = ", ".join(f"{p.key}={result.best[p.key]:.3g}" if isinstance(result.best[p.key], float)
                          else f"{p.key}={result.best[p.key]}" for p in spec.params)
        print(f"best: {shown}  {spec.metric}={result.best[spec.metric]:.4f}  ({result.best['run_dir']})")
    for note in result.warnings:
        print(f"zoo: warning: {note}", file=sys.stderr)
    print(f"results: {result.sweep_dir}/results.csv, results.json  ({result.seconds:.1f} s)")
    if ns.json:
        print(json_text(result.to_dict()))
    return 0


def _stopped_message(stop) -> str:
    """What a signal did to a sweep, and the command that goes on with it (with the plugins its trials' recipes
    list: a resumed sweep imports them only when named)."""
    from zoo.training.run_folder import plugin_flags

    if not stop.resumable:
        return f"zoo: {stop}; no trial had finished or written a checkpoint, so nothing was kept"
    trial = next(iter(sorted(stop.run_dir.glob("s*-t*/recipe.yaml"))), stop.run_dir / "recipe.yaml")
    return f"zoo: {stop}\nzoo: continue with: zoo sweep --resume {stop.run_dir}{plugin_flags(trial)}"


def add_parser(subparsers) -> None:
    from zoo.tools.sweep import MAX_WORKERS

    p = subparsers.add_parser(
        "sweep",
        help="coarse-to-fine hyperparameter search over a recipe (Optuna: random, grid or TPE, pruning)",
        description="Run the trials of a sweep file (see zoo/tools/sweep.py for its keys): stage 1 samples the "
        "parameters' full ranges with few epochs; each later stage narrows every numeric range to the square "
        "root of its extent around the best trial so far and trains longer. Every trial is a zoo train run "
        "with the divergence monitor on (loss above 3x its initial value stops it: status 'diverged'). "
        "The trials are Optuna studies (one per stage) in --storage; processes on the same storage share them. "
        "Prints the table sorted by the metric, writes results.csv/results.json into the sweep folder "
        "(runs/<name>/...), and warns when a best value sits at the edge of its range. Ctrl-C or SIGTERM "
        "stops it as it stops zoo train; --resume goes on with the trials not finished.",
    )
    p.add_argument("sweep", metavar="SWEEP.yaml", nargs="?")
    p.add_argument("--sweep-dir", help="write the trials here instead of a new folder under runs/<name>/")
    p.add_argument("--workers", type=whole_number(1, MAX_WORKERS), default=1, metavar="N",
                   help="run N trials at once, each in a worker process of its own with one torch thread "
                   "(default: 1, in this process)")
    p.add_argument("--storage", metavar="URL",
                   help="the Optuna storage of the trials (default: sqlite:///<sweep folder>/study.db): "
                   "sqlite:///FILE, postgresql://..., mysql://..., or journal:///FILE (a file on a shared file "
                   "system); a zoo sweep of the same sweep file on the same storage, here or on another "
                   "machine, joins its study")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --sweep-dir")
    p.add_argument("--resume", metavar="SWEEP_DIR",
                   help="go on with a stopped sweep: its finished trials are kept (no SWEEP.yaml then)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    p.add_argument("--wandb", action="store_true",
                   help="only print the equivalent W&B sweep definition (stage 1; no wandb needed, nothing runs)")
    p.add_argument("--wandb-out", metavar="FILE", help="with --wandb: write the definition to FILE")
    add_plugin_argument(p)
    p.set_defaults(func=cmd_sweep)
