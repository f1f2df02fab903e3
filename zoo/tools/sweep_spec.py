"""A sweep file read and checked (its keys: zoo.tools.sweep), its search space, and the choices that follow from
the figures alone: the override text of a value, the best trial, the edge warnings, the studies' names."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from zoo.core.errors import ZooError, brief
from zoo.core.io import MAX_TEXT_BYTES, read_text
from zoo.core.recipe import Recipe, folder_name_problem, load_yaml

KINDS = ("log_uniform", "uniform", "choice", "values")
# What a trial reports (zoo.training.fit.run_fit: each split's loss and accuracy; an ensemble's summary,
# zoo.training.ensemble_training), so that a misspelt metric is refused before any trial runs
RUN_METRICS = ("val_acc", "val_loss", "test_acc", "test_loss")
ENSEMBLE_METRICS = ("val_acc", "test_acc", "test_nll", "mean_member_test_acc")
SAMPLERS = ("random", "grid", "tpe")
PRUNERS = ("none", "median", "hyperband")
WANDB_METHODS = {"random": "random", "grid": "grid", "tpe": "bayes"}  # W&B's nearest search of each sampler
MAX_WORKERS = 256
EDGE = 0.1  # fraction of the (log) range that counts as "at the edge"
# Optuna's own TPE default; the median pruner compares a trial with at least 3 finished ones, from its second
# epoch on (the first epoch's accuracy says little about where a rate ends up)
TPE_STARTUP, MEDIAN_STARTUP, MEDIAN_WARMUP = 10, 3, 1


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
    sampler: str
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
    pruner: str = "none"
    tpe_startup_trials: int = TPE_STARTUP
    pruner_startup_trials: int = MEDIAN_STARTUP
    pruner_warmup_epochs: int = MEDIAN_WARMUP


ALLOWED = {"base", "name", "sampler", "method", "trials", "trials_per_stage", "grid_points", "metric", "goal",
           "stages", "epochs_per_stage", "stage_overrides", "overrides", "seed", "parameters", "pruner",
           "tpe_startup_trials", "pruner_startup_trials", "pruner_warmup_epochs"}
# keys that tune some samplers or pruners, refused with the others (they would do nothing): a grid runs each
# of its points once, whatever trials says
ONLY_WITH = {"tpe_startup_trials": ("sampler", ("tpe",)), "pruner_startup_trials": ("pruner", ("median",)),
             "pruner_warmup_epochs": ("pruner", ("median",)), "grid_points": ("sampler", ("grid",)),
             "trials": ("sampler", ("random", "tpe")), "trials_per_stage": ("sampler", ("random", "tpe"))}


# Bounds of a sweep's counts: far above any search worth running, far below lists that fill the memory
# (stages, a grid's trials) or trials that run for years
MAX_STAGES, MAX_TRIALS, MAX_GRID_POINTS, MAX_EPOCHS = 100, 10_000, 1_000, 1_000_000


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
    sampler = _sampler_key(data, where)
    pruner = data.get("pruner", "none")
    if pruner not in PRUNERS:
        raise ZooError(f"{where}: pruner: expected {' | '.join(PRUNERS)}, got {brief(pruner)}")
    for key, (owner, values) in ONLY_WITH.items():
        if key in data and {"sampler": sampler, "pruner": pruner}[owner] not in values:
            raise ZooError(f"{where}: {key}: only with {owner}: {' | '.join(values)} (this sweep has "
                           f"{owner}: {sampler if owner == 'sampler' else pruner})")
    params_spec = data.get("parameters")
    if not isinstance(params_spec, dict) or not params_spec:
        raise ZooError(f"{where}: parameters: expected a mapping of override keys to distributions")
    params = [parse_param(str(k), v, where) for k, v in params_spec.items()]
    stages = _whole(data, "stages", 1, 1, MAX_STAGES, where)
    grid_points = _whole(data, "grid_points", 3, 1, MAX_GRID_POINTS, where)
    if sampler == "grid":
        size = math.prod(len(p.grid(grid_points)) for p in params)
        if size > MAX_TRIALS:
            raise ZooError(f"{where}: a grid of {size:,} trials; at most {MAX_TRIALS:,} (fewer grid_points or parameters)")
    goal = data.get("goal", "maximize")
    if goal not in ("maximize", "minimize"):
        raise ZooError(f"{where}: goal: expected maximize or minimize, got {goal!r}")
    trials = _per_stage(data, "trials_per_stage", stages, data.get("trials", 10), where)
    if sampler != "grid" and not all(
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
        sampler=sampler,
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
        pruner=pruner,
        tpe_startup_trials=_whole(data, "tpe_startup_trials", TPE_STARTUP, 0, MAX_TRIALS, where),
        pruner_startup_trials=_whole(data, "pruner_startup_trials", MEDIAN_STARTUP, 0, MAX_TRIALS, where),
        pruner_warmup_epochs=_whole(data, "pruner_warmup_epochs", MEDIAN_WARMUP, 0, MAX_EPOCHS, where),
    )


def _sampler_key(data: dict, where: str) -> str:
    """``sampler``, or ``method``, its older name (both: they must agree)."""
    sampler = data.get("sampler", data.get("method", "random"))
    if "sampler" in data and "method" in data and data["method"] != data["sampler"]:
        raise ZooError(f"{where}: method: {brief(data['method'])} contradicts sampler: {brief(sampler)} "
                       "(method is the older name of sampler: keep one)")
    if sampler not in SAMPLERS:
        key = "sampler" if "sampler" in data else "method"
        raise ZooError(f"{where}: {key}: expected {' | '.join(SAMPLERS)}, got {brief(sampler)}")
    return sampler


def check_before_trials(spec: SweepSpec, resumed: bool = False) -> Recipe:
    """Refuse now what would otherwise stop the sweep at its first trial or later: the base recipe with the
    sweep's overrides, and a metric no trial reports; that recipe. ``resumed``: the sweep file is the one a
    stopped sweep's folder records, not one the user named, so its plugins need --plugin."""
    from zoo.core.errors import did_you_mean
    from zoo.core.recipe import load

    recipe = load(spec.base, spec.overrides, named_by_run_folder=resumed)
    reported = ENSEMBLE_METRICS if recipe.ensemble is not None else RUN_METRICS
    if recipe.ensemble is not None and spec.pruner != "none":
        raise ZooError(f"{spec.path}: pruner: {spec.pruner} prunes single models by their validation metric "
                       "per epoch; the base recipe trains an ensemble (use pruner: none)")
    if spec.metric not in reported:
        raise ZooError(
            f"{spec.path}: metric: {spec.metric!r} is not a metric a trial reports"
            f"{did_you_mean(spec.metric, reported)}; trials report {', '.join(reported)}"
        )
    return recipe


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
    """The best row, preferring trials that did not diverge; a pruned trial never is."""
    pool = [r for r in rows if r["status"] == "ok"] or [r for r in rows if r["status"] == "diverged"]
    best = None
    for r in pool:
        if best is None or _is_better(r[metric], best[metric], goal):
            best = r
    return best


def described(spec: SweepSpec) -> dict[str, Any]:
    """The sweep as JSON values, independent of the folder it was started from."""
    data = {**asdict(spec), "path": None, "base": str(Path(spec.base).resolve())}
    return json.loads(json.dumps(data))


def study_name(spec: SweepSpec, stage: int) -> str:
    """The Optuna study of one stage: named after the sweep, so that processes of the same sweep meet in it."""
    return f"{spec.name}/stage-{stage + 1}"


# (recipe, overrides, run folder, Lightning callbacks) -> (metrics, status, seconds, epochs trained)
TrialFn = Callable[[Path, list[str], Path, list], tuple[dict[str, float], str, float, int]]
