"""Hyperparameter search, coarse to fine: short trials over wide ranges, then longer ones in narrower ranges.

A sweep file (YAML)::

    base: ../mlp-digits.yaml        # the recipe, relative to the sweep file
    name: lr-digits                 # optional; default: the sweep file's name
    method: random                  # random | grid
    trials: 6                       # random: trials per stage (or trials_per_stage: [6, 4])
    grid_points: 3                  # grid: points per numeric parameter
    metric: val_acc                 # a key of the run's metrics (val_acc, test_acc, val_loss, ...)
    goal: maximize                  # maximize (default) | minimize
    stages: 2
    epochs_per_stage: [2, 5]        # trainer.max_epochs of each stage (null: the recipe's own)
    stage_overrides: [[], []]       # optional extra key=value overrides per stage
    overrides: [model.width=64]     # optional overrides for every trial
    seed: 0                         # recipe seed of every trial (the same for all: a fair comparison)
    parameters:
      optimizer.lr: {log_uniform: [1e-5, 1e0]}
      optimizer.weight_decay: {uniform: [0, 0.1]}
      model.activation: {choice: [relu, gelu]}     # sampled (random) / every value (grid)
      model.width: {values: [64, 128]}             # the same as choice

Counts are whole numbers as written: at most 100 stages and 10,000 trials a stage (a grid's included),
1,000 grid points, a seed from 0 to 2**32 - 1.

Sampling: ``log_uniform`` draws ``10 ** uniform(log10 a, log10 b)``; its grid is ``10 ** linspace(log10 a,
log10 b, grid_points)``; ``uniform`` draws and grids linearly. A grid is the Cartesian product of all
parameters' points.

Coarse to fine: after each stage, every numeric range shrinks to the square root of its extent
(half the width in log space for log_uniform, half the width for uniform), centred on the best
trial's value and clipped to the original range; choices stay as they are. The next stage runs
with its own (usually more) epochs.

The sweep folder follows a run folder's rules (zoo.tools.sweep_folder): locked while the sweep runs, an
existing one refused unless resumed (``--resume``) or replaced (``--overwrite``), and nothing left behind
when the sweep is refused before a trial ran. A signal stops the sweep as it stops ``zoo train`` (the
trial in progress writes its checkpoint); ``zoo sweep --resume DIR`` keeps the finished trials, resumes
the stopped one and runs the rest.

Every trial is a normal ``zoo.train`` run in its own folder under the sweep folder, with the
``divergence`` monitor switched on (appended to the recipe's monitors): a trial whose training loss
exceeds 3x its initial loss stops early and is marked ``diverged``; diverged trials are never picked
as a stage's best while another trial finished. A warning names any parameter whose best value lies
within 10% (of the log range, for log_uniform) of an edge of the range searched first.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from zoo.core.errors import ZooError, brief
from zoo.core.io import MAX_TEXT_BYTES, json_text, read_text
from zoo.core.recipe import folder_name_problem, load_yaml

KINDS = ("log_uniform", "uniform", "choice", "values")
# What a trial reports (zoo.training.fit.run_fit: each split's loss and accuracy; an ensemble's summary,
# zoo.training.ensemble_training), so that a misspelt metric is refused before any trial runs
RUN_METRICS = ("val_acc", "val_loss", "test_acc", "test_loss")
ENSEMBLE_METRICS = ("val_acc", "test_acc", "test_nll", "mean_member_test_acc")
EDGE = 0.1  # fraction of the (log) range that counts as "at the edge"


@dataclass(frozen=True)
class Param:
    """One searched key: a numeric range (log_uniform, uniform) or a list of options (choice, values)."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    options: tuple = ()

    @property
    def numeric(self) -> bool:
        return self.kind in ("log_uniform", "uniform")

    def _to(self, v: float) -> float:
        return math.log10(v) if self.kind == "log_uniform" else v

    def _from(self, u: float) -> float:
        return 10**u if self.kind == "log_uniform" else u

    def sample(self, rng) -> Any:
        if not self.numeric:
            return self.options[int(rng.integers(len(self.options)))]
        return float(self._from(rng.uniform(self._to(self.low), self._to(self.high))))

    def grid(self, points: int) -> list[Any]:
        if not self.numeric:
            return list(self.options)
        import numpy as np

        return [float(v) for v in self._from(np.linspace(self._to(self.low), self._to(self.high), points))]

    def position(self, value: float) -> float:
        """Where ``value`` sits in the range: 0 at the low edge, 1 at the high edge (log scale for log_uniform)."""
        lo, hi = self._to(self.low), self._to(self.high)
        return (self._to(value) - lo) / (hi - lo) if hi > lo else 0.5

    def narrow(self, best: Any, within: Param) -> Param:
        """This range shrunk to the square root of its extent around ``best``, clipped to ``within``."""
        if not self.numeric:
            return self
        lo, hi = self._to(self.low), self._to(self.high)
        half = (hi - lo) / 4
        centre = self._to(best)
        new_lo = max(centre - half, within._to(within.low))
        new_hi = min(centre + half, within._to(within.high))
        return replace(self, low=float(self._from(new_lo)), high=float(self._from(new_hi)))

    def describe(self) -> str:
        if self.numeric:
            return f"{self.kind} [{self.low:.3g}, {self.high:.3g}]"
        return f"{self.kind} {list(self.options)}"


def parse_param(key: str, spec: Any, where: str) -> Param:
    if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in KINDS):
        raise ZooError(f"{where}: parameters.{key}: expected one of {{{', '.join(f'{k}: ...' for k in KINDS)}}}, got {spec!r}")
    kind, arg = next(iter(spec.items()))
    if kind in ("choice", "values"):
        if not isinstance(arg, list) or not arg:
            raise ZooError(f"{where}: parameters.{key}.{kind}: expected a non-empty list, got {arg!r}")
        return Param(key, kind, options=tuple(arg))
    try:  # PyYAML reads 1e-5 (no dot) as a string: accept numbers written either way
        if not (isinstance(arg, list) and len(arg) == 2) or any(isinstance(v, bool) for v in arg):
            raise ValueError
        low, high = float(arg[0]), float(arg[1])
    except (TypeError, ValueError):
        raise ZooError(f"{where}: parameters.{key}.{kind}: expected [low, high], got {arg!r}") from None
    if not low < high:
        raise ZooError(f"{where}: parameters.{key}.{kind}: low must be below high, got {arg!r}")
    if kind == "log_uniform" and low <= 0:
        raise ZooError(f"{where}: parameters.{key}.log_uniform: the range must be positive, got {arg!r}")
    return Param(key, kind, low, high)


@dataclass
class SweepSpec:
    path: Path
    base: Path
    name: str
    method: str
    params: list[Param]
    metric: str = "val_acc"
    goal: str = "maximize"
    stages: int = 1
    trials_per_stage: list[int] = field(default_factory=list)
    epochs_per_stage: list[int | None] = field(default_factory=list)
    stage_overrides: list[list[str]] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    grid_points: int = 3
    seed: int = 0


ALLOWED = {"base", "name", "method", "trials", "trials_per_stage", "grid_points", "metric", "goal", "stages",
           "epochs_per_stage", "stage_overrides", "overrides", "seed", "parameters"}


# Bounds of a sweep's counts: far above any search worth running, far below lists that fill the memory
# (stages, a grid's trials) or trials that run for years
MAX_STAGES, MAX_TRIALS, MAX_GRID_POINTS = 100, 10_000, 1_000


def _whole(data: dict, key: str, default: int, low: int, high: int, where: str) -> int:
    """``data[key]``, a whole number from ``low`` to ``high`` as written (no bool, float or string)."""
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ZooError(f"{where}: {key}: expected a whole number from {low} to {high}, got {brief(value)}")
    return value


def _per_stage(data: dict, key: str, stages: int, default: Any, where: str) -> list:
    value = data.get(key, default)
    if not isinstance(value, list):
        return [value] * stages
    if len(value) != stages:
        raise ZooError(f"{where}: {key}: expected {stages} entries (one per stage), got {len(value)}")
    return list(value)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file."""
    path = Path(path)
    where = str(path)
    try:
        data = load_yaml(read_text(path, MAX_TEXT_BYTES, "sweep file"))
    except yaml.YAMLError as exc:
        raise ZooError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ZooError(f"{where}: a sweep file must be a YAML mapping")
    unknown = set(data) - ALLOWED
    if unknown:
        from zoo.core.errors import did_you_mean

        key = sorted(unknown)[0]
        raise ZooError(f"{where}: unknown key '{key}'{did_you_mean(key, ALLOWED)}")
    if not isinstance(data.get("base"), str):
        raise ZooError(f"{where}: base: expected the recipe's path, relative to the sweep file")
    base = path.parent / data["base"]
    if not base.is_file():
        raise ZooError(f"{where}: base: recipe {data['base']} not found (looked at {base})")
    method = data.get("method", "random")
    if method not in ("random", "grid"):
        raise ZooError(f"{where}: method: expected random or grid, got {method!r}")
    params_spec = data.get("parameters")
    if not isinstance(params_spec, dict) or not params_spec:
        raise ZooError(f"{where}: parameters: expected a mapping of override keys to distributions")
    params = [parse_param(str(k), v, where) for k, v in params_spec.items()]
    stages = _whole(data, "stages", 1, 1, MAX_STAGES, where)
    grid_points = _whole(data, "grid_points", 3, 1, MAX_GRID_POINTS, where)
    if method == "grid":
        size = math.prod(len(p.grid(grid_points)) for p in params)
        if size > MAX_TRIALS:
            raise ZooError(f"{where}: a grid of {size:,} trials; at most {MAX_TRIALS:,} (fewer grid_points or parameters)")
    goal = data.get("goal", "maximize")
    if goal not in ("maximize", "minimize"):
        raise ZooError(f"{where}: goal: expected maximize or minimize, got {goal!r}")
    trials = _per_stage(data, "trials_per_stage", stages, data.get("trials", 10), where)
    if method == "random" and not all(
        isinstance(t, int) and not isinstance(t, bool) and 1 <= t <= MAX_TRIALS for t in trials
    ):
        raise ZooError(f"{where}: trials: expected whole numbers from 1 to {MAX_TRIALS:,}, got {brief(trials)}")
    epochs = _per_stage(data, "epochs_per_stage", stages, None, where)
    if not all(e is None or (isinstance(e, int) and not isinstance(e, bool) and e >= 1) for e in epochs):
        raise ZooError(
            f"{where}: epochs_per_stage: expected positive whole numbers (or null: the recipe's own "
            f"trainer.max_epochs), got {data.get('epochs_per_stage')!r}"
        )
    stage_overrides = data.get("stage_overrides", [[] for _ in range(stages)])
    if not (isinstance(stage_overrides, list) and len(stage_overrides) == stages):
        raise ZooError(f"{where}: stage_overrides: expected {stages} lists of key=value overrides")
    name = str(data.get("name") or path.stem)
    problem = folder_name_problem(name)
    if problem:
        raise ZooError(f"{where}: name: {problem}")
    return SweepSpec(
        path=path,
        base=base,
        name=name,
        method=method,
        params=params,
        metric=str(data.get("metric", "val_acc")),
        goal=goal,
        stages=stages,
        trials_per_stage=trials,
        epochs_per_stage=epochs,
        stage_overrides=[list(s or []) for s in stage_overrides],
        overrides=list(data.get("overrides") or []),
        grid_points=grid_points,
        seed=_whole(data, "seed", 0, 0, 2**32 - 1, where),
    )


def check_before_trials(spec: SweepSpec, resumed: bool = False) -> None:
    """Refuse now what would otherwise stop the sweep at its first trial or later: the base recipe with the
    sweep's overrides, and a metric no trial reports. ``resumed``: the sweep file is the one a stopped
    sweep's folder records, not one the user named, so its plugins need --plugin."""
    from zoo.core.errors import did_you_mean
    from zoo.core.recipe import load

    recipe = load(spec.base, spec.overrides, named_by_run_folder=resumed)
    reported = ENSEMBLE_METRICS if recipe.ensemble is not None else RUN_METRICS
    if spec.metric not in reported:
        raise ZooError(
            f"{spec.path}: metric: {spec.metric!r} is not a metric a trial reports"
            f"{did_you_mean(spec.metric, reported)}; trials report {', '.join(reported)}"
        )


def stage_points(spec: SweepSpec, params: list[Param], stage: int, rng) -> list[dict[str, Any]]:
    """The hyperparameter settings of one stage: random draws, or the full grid."""
    if spec.method == "grid":
        grids = [p.grid(spec.grid_points) for p in params]
        return [dict(zip((p.key for p in params), combo)) for combo in itertools.product(*grids)]
    return [{p.key: p.sample(rng) for p in params} for _ in range(spec.trials_per_stage[stage])]


def override_text(key: str, value: Any) -> str:
    """``key=value`` that parses back to ``value`` (PyYAML reads ``1e-05`` as a string, so floats get a dot)."""
    if isinstance(value, float):
        return f"{key}={value:.10e}"
    return f"{key}={json.dumps(value)}"


def edge_warnings(params: list[Param], best: dict[str, Any]) -> list[str]:
    out = []
    for p in params:
        if not p.numeric or p.key not in best:
            continue
        pos = p.position(best[p.key])
        if pos <= EDGE or pos >= 1 - EDGE:
            side = "lower" if pos <= EDGE else "upper"
            out.append(
                f"best {p.key}={best[p.key]:.3g} lies at the {side} edge of the searched range "
                f"[{p.low:.3g}, {p.high:.3g}]: the optimum may lie outside it; widen the range on that side"
            )
    return out


def _is_better(a: float, b: float, goal: str) -> bool:
    if not math.isfinite(a):
        return False
    if not math.isfinite(b):
        return True
    return a > b if goal == "maximize" else a < b


def best_trial(rows: list[dict[str, Any]], metric: str, goal: str) -> dict[str, Any] | None:
    """The best row, preferring trials that did not diverge."""
    pool = [r for r in rows if r["status"] == "ok"] or [r for r in rows if r["status"] == "diverged"]
    best = None
    for r in pool:
        if best is None or _is_better(r[metric], best[metric], goal):
            best = r
    return best


def run_trial(recipe_path: Path, overrides: list[str], run_dir: Path) -> tuple[dict[str, float], str, float]:
    """Train one trial with the divergence guard on; (metrics, status, seconds). A trial a signal stopped
    after its first checkpoint goes on from there (its folder's recipe is the one it started with)."""
    from zoo.core.recipe import derive, load
    from zoo.monitoring.monitors import DivergenceWarning
    from zoo.training.run import train
    from zoo.training.run_folder import resumable

    stopped = resumable(run_dir) and not (run_dir / "metrics.json").exists()
    if not stopped:
        recipe = load(recipe_path, overrides)
        if not any(m.get("name") == "divergence" for m in recipe.monitors):
            recipe = derive(recipe, [], monitors=[*recipe.monitors, {"name": "divergence"}])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DivergenceWarning)
        if stopped:
            result = train(resume=run_dir, progress=False)
        else:
            result = train(recipe, run_dir=run_dir, overwrite=True, progress=False)
    diverged = any(issubclass(w.category, DivergenceWarning) for w in caught)
    for w in caught:  # pass the others on
        if not issubclass(w.category, DivergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    metrics = dict(result.metrics)
    metrics.setdefault("val_acc", result.val_acc)
    metrics.setdefault("test_acc", result.test_acc)
    return metrics, "diverged" if diverged else "ok", result.seconds


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


TrialFn = Callable[[Path, list[str], Path], tuple[dict[str, float], str, float]]


def run_sweep(
    spec: SweepSpec | str | Path,
    *,
    sweep_dir: str | Path | None = None,
    overwrite: bool = False,
    trial_fn: TrialFn | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> SweepResult:
    """Run every stage of a sweep; write results.csv and results.json into the sweep folder.

    The sweep is checked (its base recipe, its metric) before its folder is claimed; ``overwrite``
    replaces a sweep folder that exists, as ``zoo train --overwrite`` replaces a run folder."""
    from zoo.tools import sweep_folder

    start = time.perf_counter()
    if not isinstance(spec, SweepSpec):
        spec = load_sweep(spec)
    check_before_trials(spec)
    folder = sweep_folder.claim(spec, sweep_dir, overwrite)
    return _run_in(folder, spec, {}, trial_fn or run_trial, log, start)


def stopped_sweep(sweep_dir: str | Path) -> SweepSpec:
    """The sweep a stopped sweep's folder ran, read again from its file, which must not have changed."""
    from zoo.tools import sweep_folder

    path = Path(sweep_dir)
    record = sweep_folder.read_record(path)
    spec = load_sweep(record["sweep_file"])
    sweep_folder.check_same(path, record, spec)
    return spec


def resume_sweep(
    sweep_dir: str | Path, *, spec: SweepSpec | None = None, trial_fn: TrialFn | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> SweepResult:
    """Go on with a stopped sweep in its folder: its recorded trials are kept, the rest run (see
    zoo.tools.sweep_folder). ``spec``: what :func:`stopped_sweep` returned for it, if called already."""
    from zoo.tools import sweep_folder

    start = time.perf_counter()
    path = Path(sweep_dir)
    spec = spec or stopped_sweep(path)
    check_before_trials(spec, resumed=True)
    folder = sweep_folder.reopen(path)
    try:
        done = sweep_folder.read_record(path)["trials"]  # again, under the lock
    except BaseException:
        folder.end(ok=False)
        raise
    return _run_in(folder, spec, done, trial_fn or run_trial, log, start)


def _run_in(folder, spec: SweepSpec, done: dict[str, dict[str, Any]], trial_fn: TrialFn,
            log: Callable[[str], None], start: float) -> SweepResult:
    """The sweep in its claimed folder, with signals handled as ``zoo train`` handles them: one that
    arrives between trials stops the sweep at once, one during a trial after that trial's checkpoint."""
    from zoo.tools import sweep_folder
    from zoo.training.checkpoints import Interrupted, SignalStop

    signals = SignalStop()
    signals.when = "between trials"
    signals.install()
    try:
        try:
            result = _stages(folder.path, spec, done, trial_fn, log, start)
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


def _stages(folder: Path, spec: SweepSpec, done: dict[str, dict[str, Any]], trial_fn: TrialFn,
            log: Callable[[str], None], start: float) -> SweepResult:
    """Every stage's trials, each recorded as it finishes; those in ``done`` are kept, not run again."""
    import numpy as np

    from zoo.tools.sweep_folder import record_trial

    rng = np.random.default_rng(spec.seed)
    original = list(spec.params)
    params = list(spec.params)
    rows: list[dict[str, Any]] = []
    ranges: list[dict[str, str]] = []
    for stage in range(spec.stages):
        ranges.append({p.key: p.describe() for p in params})
        points = stage_points(spec, params, stage, rng)
        epochs = spec.epochs_per_stage[stage]
        log(f"stage {stage + 1}/{spec.stages}: {len(points)} trials"
            + (f", {epochs} epochs each" if epochs else "") + "; "
            + ", ".join(f"{p.key} {p.describe()}" for p in params))
        stage_rows = []
        for trial, values in enumerate(points, 1):
            run_dir = folder / f"s{stage + 1}-t{trial:02d}"
            shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
            if run_dir.name in done:
                row = done[run_dir.name]
                log(f"  s{stage + 1} t{trial:02d}  {shown}  {spec.metric}={row[spec.metric]:.4f}  {row['status']} "
                    "(finished before)")
                stage_rows.append(row)
                continue
            # trials are W&B runs of one group, named after the sweep folder, unless the sweep says otherwise
            group = [] if any(o.startswith("logger.wandb.group=") for o in spec.overrides) else [
                f"logger.wandb.group={folder.name}"]
            overrides = [*group, *spec.overrides, *spec.stage_overrides[stage], f"seed={spec.seed}"]
            if epochs:
                overrides.append(f"trainer.max_epochs={int(epochs)}")
            overrides += [override_text(k, v) for k, v in values.items()]
            metrics, status, seconds = trial_fn(spec.base, overrides, run_dir)
            if spec.metric not in metrics:
                raise ZooError(f"metric {spec.metric!r} not among the run's metrics: {', '.join(sorted(metrics))}")
            row = {"stage": stage + 1, "trial": trial, **values, spec.metric: float(metrics[spec.metric]),
                   "status": status, "seconds": seconds, "run_dir": str(run_dir)}
            if spec.metric != "val_acc" and "val_acc" in metrics:
                row["val_acc"] = float(metrics["val_acc"])
            record_trial(folder, run_dir.name, row)
            stage_rows.append(row)
            log(f"  s{stage + 1} t{trial:02d}  {shown}  {spec.metric}={row[spec.metric]:.4f}  {status}")
        rows += stage_rows
        best = best_trial(stage_rows, spec.metric, spec.goal)
        if best is not None and stage + 1 < spec.stages:
            params = [p.narrow(best[p.key], o) for p, o in zip(params, original)]
    best = best_trial(rows, spec.metric, spec.goal)
    notes = edge_warnings(original, best) if best else []
    sign = -1 if spec.goal == "maximize" else 1
    rows.sort(key=lambda r: (sign * r[spec.metric] if math.isfinite(r[spec.metric]) else math.inf))
    result = SweepResult(spec.name, str(folder), spec.metric, spec.goal, rows, best, ranges, notes,
                         round(time.perf_counter() - start, 2))
    write_results(result, spec, folder)
    return result


def columns(spec: SweepSpec) -> list[str]:
    cols = ["stage", "trial", *(p.key for p in spec.params), spec.metric]
    if spec.metric != "val_acc":
        cols.append("val_acc")
    return cols + ["status", "seconds", "run_dir"]


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
        if spec.method == "grid":
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
        "method": spec.method,
        "metric": {"name": wandb_metric(spec), "goal": spec.goal},
        "parameters": parameters,
        "command": ["${env}", "${program}", "train", str(spec.base), *spec.overrides, *spec.stage_overrides[0],
                    "monitors=[divergence]", "${args_no_hyphens}"],
    }
    if spec.method == "random":
        definition["run_cap"] = int(spec.trials_per_stage[0])
    return definition
