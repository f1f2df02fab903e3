"""Hyperparameter search on Optuna, coarse to fine: short trials over wide ranges, then longer ones in
narrower ranges.

A sweep file (YAML)::

    base: ../mlp-digits.yaml        # the recipe, relative to the sweep file
    name: lr-digits                 # optional; default: the sweep file's name (also its studies' names)
    sampler: random                 # random | grid | tpe  (``method`` is its older name)
    pruner: none                    # none | median | hyperband
    trials: 6                       # random/tpe: trials per stage (or trials_per_stage: [6, 4])
    grid_points: 3                  # grid: points per numeric parameter
    metric: val_acc                 # a key of the run's metrics (val_acc, test_acc, val_loss, ...)
    goal: maximize                  # maximize (default) | minimize
    stages: 2
    epochs_per_stage: [2, 5]        # trainer.max_epochs of each stage (null: the recipe's own)
    stage_overrides: [[], []]       # optional extra key=value overrides per stage
    overrides: [model.width=64]     # optional overrides for every trial
    seed: 0                         # recipe seed of every trial (the same for all: a fair comparison),
                                    # and the samplers' seed
    tpe_startup_trials: 10          # tpe only: random draws before TPE models
    pruner_startup_trials: 3        # median only: finished trials before it prunes
    pruner_warmup_epochs: 1         # median only: epochs before it judges a trial
    parameters:
      optimizer.lr: {log_uniform: [1e-5, 1e0]}
      optimizer.weight_decay: {uniform: [0, 0.1]}
      model.activation: {choice: [relu, gelu]}     # sampled (random, tpe) / every value (grid)
      model.width: {values: [64, 128]}             # the same as choice

Counts are whole numbers as written: at most 100 stages and 10,000 trials a stage (a grid's included),
1,000 grid points, a seed from 0 to 2**32 - 1.

Sampling is Optuna's (zoo.tools.sweep_study): ``log_uniform`` is a float drawn on a log scale, ``uniform``
on a linear one, ``choice``/``values`` categorical; TPE models the trials so far. A grid's points are
``10 ** linspace(log10 a, log10 b, grid_points)`` for log_uniform, linear for uniform, every option for a
choice, and the grid is their Cartesian product, each point run once. A pruner (``median``: Optuna's
MedianPruner; ``hyperband``: its HyperbandPruner from 1 epoch to the stage's epochs, or to the first
finished trial's when the stage has none) is told the validation metric after each epoch; a trial it
prunes finishes that epoch as a normal run, is marked ``pruned`` and is never a stage's best.

Coarse to fine, zoo's own strategy on top: each stage is a study of its own; after a stage, every numeric
range shrinks to the square root of its extent (half the width in log space for log_uniform, half the
width for uniform), centred on the best trial's value and clipped to the original range; choices stay as
they are. The next stage runs with its own (usually more) epochs.

The sweep folder follows a run folder's rules (zoo.tools.sweep_folder): locked while the sweep runs, an
existing one refused unless resumed (``--resume``) or replaced (``--overwrite``), and nothing left behind
when the sweep is refused before a trial ran. Its trials are kept in an Optuna storage, by default
``study.db`` in the folder; processes on one storage share the sweep (``--workers``:
zoo.tools.sweep_workers; another machine: the same ``--storage``) and together run exactly the asked
trials. A signal stops the sweep as it stops ``zoo train`` (the trials in progress write their
checkpoints); ``zoo sweep --resume DIR`` keeps the finished trials, resumes the stopped ones and runs the rest.

Every trial is a normal ``zoo.train`` run in its own folder under the sweep folder, with the
``divergence`` monitor switched on (appended to the recipe's monitors): a trial whose training loss
exceeds 3x its initial loss stops early and is marked ``diverged``; diverged trials are never picked
as a stage's best while another trial finished. A warning names any parameter whose best value lies
within 10% (of the log range, for log_uniform) of an edge of the range searched first.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zoo.core.errors import ZooError, brief
from zoo.core.io import json_text
from zoo.training.slurm import requeue_signal
from zoo.tools.sweep_spec import (  # the sweep file's side, here with the rest of the sweep's names
    MAX_WORKERS,
    WANDB_METHODS,
    Param,
    SweepSpec,
    TrialFn,
    best_trial,
    check_before_trials,
    edge_warnings,
    load_sweep,
    override_text,
    parse_param,
    study_name,
)

__all__ = ["Param", "SweepResult", "SweepSpec", "best_trial", "check_before_trials", "edge_warnings", "load_sweep",
           "override_text", "parse_param", "resume_sweep", "run_sweep", "stopped_sweep", "wandb_definition"]


@dataclass
class SweepResult:
    name: str
    sweep_dir: str
    metric: str
    goal: str
    rows: list[dict[str, Any]]  # sorted best first
    best: dict[str, Any] | None
    ranges: list[dict[str, str]]  # per stage: key -> description of the range searched
    warnings: list[str]
    seconds: float
    storage: str = ""
    studies: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)



def reference_section() -> list[str]:
    """Sweep files in the recipe reference (``zoo docs``): this module's example and its sampling paragraph,
    so that the reference and the code that reads the keys cannot drift apart."""
    doc = __doc__ or ""
    example = doc.split("A sweep file (YAML)::\n\n", 1)[1].split("\n\n", 1)[0]
    sampling = next(p for p in doc.split("\n\n") if p.startswith("Sampling is Optuna's"))
    return ["## Sweep files", "",
            "`zoo sweep FILE [--workers N] [--storage URL]` reads a YAML file of these keys (all but `base` and "
            "`parameters` have defaults):", "", "```yaml",
            *(line[4:].replace("``", "") for line in example.splitlines()), "```", "",
            sampling.replace("``", "`").replace("\n", " "), ""]


def run_sweep(
    spec: SweepSpec | str | Path,
    *,
    sweep_dir: str | Path | None = None,
    overwrite: bool = False,
    storage: str | None = None,
    workers: int = 1,
    trial_fn: TrialFn | None = None,
    log: Callable[[str], None] = lambda s: None,
    plugins: list[str] | None = None,
) -> SweepResult:
    """Run every stage of a sweep; write results.csv and results.json into the sweep folder.

    The sweep is checked (its base recipe, its metric, ``workers``, the ``storage`` URL) before its folder
    is claimed; ``overwrite`` replaces a sweep folder that exists, as ``zoo train --overwrite`` replaces a
    run folder. ``storage``: an Optuna storage URL (default: SQLite in the sweep folder); a sweep of the
    same name already there is joined. ``workers``: trials at once, each worker a process of its own."""
    from zoo.tools import sweep_folder
    from zoo.tools.sweep_study import open_storage
    from zoo.tools.sweep_trial import run_trial

    start = time.perf_counter()
    if not isinstance(spec, SweepSpec):
        spec = load_sweep(spec)
    check_workers(workers)
    stop_on = requeue_signal(check_before_trials(spec).checkpoint)
    shared = open_storage(storage) if storage is not None else None
    if sweep_dir is not None and not overwrite and sweep_folder.requeued_sweep(Path(sweep_dir), spec, storage, log):
        folder, owner = sweep_folder.reopen(Path(sweep_dir)), True
    else:
        if shared is not None:
            _refuse_finished(shared, storage, spec)
        folder, owner = sweep_folder.claim(spec, sweep_dir, overwrite, storage), False
    return _run_in(folder, spec, workers, trial_fn or run_trial, log, start, owner=owner, plugins=plugins,
                   stop_on=stop_on)


def _refuse_finished(storage, url: str, spec: SweepSpec) -> None:
    """A new sweep folder on a storage where this sweep's studies already ran every trial would run nothing and
    report the old trials as its own."""
    from zoo.tools.sweep_study import finished_trials

    ran = finished_trials(storage, spec)
    if ran is not None:
        studies = ", ".join(study_name(spec, stage) for stage in range(spec.stages))
        raise ZooError(f"--storage {url}: the studies of sweep {spec.name} there ({studies}) already ran their "
                       f"{ran} trials: nothing to run; name the sweep anew (name: in {spec.path}) to search again")


def check_workers(workers: int) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise ZooError(f"--workers: expected a whole number from 1 to {MAX_WORKERS}, got {brief(workers)}")


def stopped_sweep(sweep_dir: str | Path) -> SweepSpec:
    """The sweep a stopped sweep's folder ran, read again from its file, which must not have changed."""
    from zoo.tools import sweep_folder

    path = Path(sweep_dir)
    record = sweep_folder.read_record(path)
    if (path / "results.json").is_file():  # written once every stage has run its count
        raise ZooError(f"--resume {path}: that sweep finished (see its results.json); there is nothing to resume")
    spec = load_sweep(record["sweep_file"])
    sweep_folder.check_same(path, record, spec)
    return spec


def resume_sweep(
    sweep_dir: str | Path, *, spec: SweepSpec | None = None, workers: int = 1, trial_fn: TrialFn | None = None,
    log: Callable[[str], None] = lambda s: None, plugins: list[str] | None = None,
) -> SweepResult:
    """Go on with a stopped sweep in its folder: its finished trials are kept, the trials it left running go
    on from their checkpoints, the rest run (see zoo.tools.sweep_study). ``spec``: what :func:`stopped_sweep`
    returned for it, if called already."""
    from zoo.tools import sweep_folder
    from zoo.tools.sweep_trial import run_trial

    start = time.perf_counter()
    path = Path(sweep_dir)
    spec = spec or stopped_sweep(path)
    check_workers(workers)
    stop_on = requeue_signal(check_before_trials(spec, resumed=True).checkpoint)
    folder = sweep_folder.reopen(path)
    return _run_in(folder, spec, workers, trial_fn or run_trial, log, start, owner=True, plugins=plugins,
                   stop_on=stop_on)


def _run_in(folder, spec: SweepSpec, workers: int, trial_fn: TrialFn, log: Callable[[str], None], start: float,
            *, owner: bool, plugins: list[str] | None, stop_on: int | None) -> SweepResult:
    """The sweep in its claimed folder, with signals handled as ``zoo train`` handles them: one that
    arrives between trials stops the sweep at once, one during a trial after that trial's checkpoint
    (with ``workers``, each worker's; the signal is passed on to them). ``stop_on``: in a SLURM batch job,
    the base recipe's requeue signal, one more signal that stops the sweep so."""
    from zoo.tools import sweep_folder
    from zoo.tools.sweep_study import open_storage, participate, take_back_stale
    from zoo.tools.sweep_workers import run_workers
    from zoo.training.checkpoints import Interrupted, SignalStop

    signals = SignalStop(stop_on)
    signals.when = "between trials"
    signals.install()
    try:
        try:
            url = sweep_folder.storage_of(folder.path)
            storage = open_storage(url)
            if owner:
                take_back_stale(storage, spec, folder.path, log)
            if workers == 1:
                participate(storage, spec, folder.path, trial_fn, log, owner=owner)
            else:
                signals.restore()  # the workers' own handlers stop their trials; this process passes signals on
                run_workers(spec, folder.path, url, workers, owner=owner, plugins=plugins or [], log=log,
                            signals=signals.signals)
            result = _results(storage, url, folder.path, spec, start)
        except BaseException as exc:
            sweep_folder.keep_if_started(folder)
            kept = folder.end(ok=False)
            if isinstance(exc, Interrupted):
                exc.run_dir, exc.resumable = folder.path, kept
            raise
        folder.end(ok=True)
    finally:
        signals.restore()
    return result


def _results(storage, url: str, folder: Path, spec: SweepSpec, start: float) -> SweepResult:
    """Every stage's finished trials (every worker's, on every machine), best first; written to the folder."""
    from zoo.tools.sweep_study import ranges_of, stage_rows

    rows = [r for stage in range(spec.stages) for r in stage_rows(storage, spec, stage) or []]
    best = best_trial(rows, spec.metric, spec.goal)
    notes = edge_warnings(spec.params, best) if best else []
    sign = -1 if spec.goal == "maximize" else 1
    rows.sort(key=lambda r: (sign * r[spec.metric] if math.isfinite(r[spec.metric]) else math.inf))
    result = SweepResult(spec.name, str(folder), spec.metric, spec.goal, rows, best, ranges_of(storage, spec), notes,
                         round(time.perf_counter() - start, 2), url,
                         [study_name(spec, stage) for stage in range(spec.stages)])
    write_results(result, spec, folder)
    return result


def columns(spec: SweepSpec) -> list[str]:
    cols = ["stage", "trial", *(p.key for p in spec.params), spec.metric]
    if spec.metric != "val_acc":
        cols.append("val_acc")
    return cols + ["status", "epochs", "seconds", "run_dir"]


def write_results(result: SweepResult, spec: SweepSpec, folder: Path) -> None:
    import io

    from zoo.core.io import atomic_write_text

    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=columns(spec), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(result.rows)
    atomic_write_text(folder / "results.csv", table.getvalue())
    atomic_write_text(folder / "results.json", json_text(result.to_dict(), indent=2) + "\n")


def format_table(result: SweepResult, spec: SweepSpec) -> str:
    cols = [c for c in columns(spec) if c not in ("run_dir",)]

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    body = [[cell(r.get(c, "")) for c in cols] for r in result.rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


# The name under which a run logs each metric a sweep may rank by: zoo's W&B logger writes <split>/<metric>
# (zoo.training.classifier), and an ensemble's own run its loss (the combination's NLL) and the members' mean
# (zoo.monitoring.wandb_ensemble). W&B's controller only sees the metric by the name the runs log.
WANDB_METRICS = {
    "val_acc": "val/acc", "val_loss": "val/loss", "test_acc": "test/acc", "test_loss": "test/loss",
    "test_nll": "test/loss", "mean_member_test_acc": "test/mean_member_acc",
}


def wandb_metric(spec: SweepSpec) -> str:
    """The sweep's metric by the name its runs log it to W&B; one no trial reports is refused (``--wandb``
    runs no trial, so nothing else would catch a misspelt one)."""
    from zoo.core.errors import did_you_mean

    if spec.metric not in WANDB_METRICS:
        raise ZooError(f"{spec.path}: metric: {spec.metric!r} is not a metric a trial reports"
                       f"{did_you_mean(spec.metric, WANDB_METRICS)}; trials report {', '.join(WANDB_METRICS)}")
    return WANDB_METRICS[spec.metric]


def wandb_definition(spec: SweepSpec) -> dict[str, Any]:
    """The first stage as a W&B sweep configuration (for ``wandb sweep``), without importing wandb.

    W&B's controller has no coarse-to-fine stages: this is stage 1 (its epochs). The command runs
    ``zoo train`` with the sampled values as ``key=value`` overrides (``${args_no_hyphens}``); the
    run must report the metric to W&B for the controller to see it.
    """
    parameters: dict[str, Any] = {}
    for p in spec.params:
        if spec.sampler == "grid":
            parameters[p.key] = {"values": p.grid(spec.grid_points)}
        elif p.kind == "log_uniform":
            parameters[p.key] = {"distribution": "log_uniform_values", "min": p.low, "max": p.high}
        elif p.kind == "uniform":
            parameters[p.key] = {"distribution": "uniform", "min": p.low, "max": p.high}
        else:
            parameters[p.key] = {"values": list(p.options)}
    parameters["seed"] = {"value": spec.seed}
    if spec.epochs_per_stage and spec.epochs_per_stage[0]:
        parameters["trainer.max_epochs"] = {"value": int(spec.epochs_per_stage[0])}
    definition: dict[str, Any] = {
        "name": spec.name,
        "program": "zoo",
        "method": WANDB_METHODS[spec.sampler],
        "metric": {"name": wandb_metric(spec), "goal": spec.goal},
        "parameters": parameters,
        "command": ["${env}", "${program}", "train", str(spec.base), *spec.overrides, *spec.stage_overrides[0],
                    "monitors=[divergence]", "${args_no_hyphens}"],
    }
    if spec.sampler != "grid":
        definition["run_cap"] = int(spec.trials_per_stage[0])
    return definition
