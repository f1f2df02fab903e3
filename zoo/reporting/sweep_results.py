"""A finished sweep folder read back: its trials (``results.csv``) and its search space (``sweep.json``),
and how much each parameter mattered, as Optuna's fANOVA estimates it.

Only those two files are read, so any sweep folder zoo wrote can be reported on, whichever engine ran it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.core.errors import ZooError, brief
from zoo.core.io import MAX_TABLE_BYTES, MAX_TEXT_BYTES, read_text

RESULTS, RECORD = "results.csv", "sweep.json"
NUMERIC = ("log_uniform", "uniform")
FINISHED = "ok"  # the status of a trial that trained to its end (others: diverged, pruned)


@dataclass(frozen=True)
class SearchedParam:
    """One searched key as sweep.json records it: a numeric range or a list of options."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    options: tuple = ()

    @property
    def numeric(self) -> bool:
        return self.kind in NUMERIC

    @property
    def log(self) -> bool:
        return self.kind == "log_uniform"

    def value(self, cell: str) -> Any:
        """A results.csv cell as the value the trial ran with (a choice by its option, so 64 stays an int)."""
        if self.numeric:
            return float(cell)
        return next((option for option in self.options if _csv_text(option) == cell), cell)


def _csv_text(value: Any) -> str:
    return "" if value is None else str(value)  # as Python's csv module writes it


@dataclass
class SweepResults:
    folder: Path
    name: str
    metric: str
    goal: str
    params: list[SearchedParam]
    rows: list[dict[str, Any]]  # best first: finished trials by the metric, then the others
    columns: list[str]  # results.csv's, in its order

    @property
    def best(self) -> dict[str, Any] | None:
        """The best trial that trained to its end: a pruned or diverged one never is."""
        first = self.rows[0] if self.rows else None
        return first if first is not None and counts_as_finished(first, self.metric) else None


def counts_as_finished(row: dict[str, Any], metric: str) -> bool:
    return row["status"] == FINISHED and math.isfinite(row[metric])


def _record(folder: Path) -> dict[str, Any]:
    path = folder / RECORD
    try:
        record = json.loads(read_text(path, MAX_TEXT_BYTES, "sweep record"))
    except json.JSONDecodeError as exc:
        raise ZooError(
            f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}): the file is damaged") from None
    sweep = record.get("sweep") if isinstance(record, dict) else None
    if not (isinstance(sweep, dict) and isinstance(sweep.get("params"), list) and sweep.get("metric")):
        raise ZooError(f"{path}: no sweep in it (expected 'sweep' with its 'params' and 'metric')")
    return sweep


def _param(entry: Any, where: Path) -> SearchedParam:
    try:
        kind = entry["kind"]
        if kind in NUMERIC:
            low, high = float(entry["low"]), float(entry["high"])
            if not (low < high and (kind != "log_uniform" or low > 0)):
                raise ValueError
            return SearchedParam(str(entry["key"]), kind, low, high)
        if not entry["options"]:
            raise ValueError
        return SearchedParam(str(entry["key"]), kind, options=tuple(entry["options"]))
    except (KeyError, TypeError, ValueError):
        raise ZooError(f"{where}: params: {brief(entry)} is not a searched parameter zoo records") from None


def _number(cell: str, path: Path, line: int, column: str) -> float:
    try:
        return float(cell) if cell != "" else math.nan
    except ValueError:
        raise ZooError(f"{path}: line {line}, column {column}: {brief(cell)} is not a number") from None


def _rows(path: Path, params: list[SearchedParam], metric: str) -> tuple[list[str], list[dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(read_text(path, MAX_TABLE_BYTES, "sweep results"), newline=""))
    header = reader.fieldnames or []
    missing = [c for c in ("status", metric, *(p.key for p in params)) if c not in header]
    if missing:
        raise ZooError(f"{path}: no column {missing[0]!r}: not the results of the sweep {RECORD} describes")
    by_key = {p.key: p for p in params}
    rows = []
    try:
        for line in reader:
            if None in line or None in line.values():
                raise ZooError(f"{path}: line {reader.line_num} does not have the header's "
                               f"{len(header)} columns: the file is cut short or damaged")
            row: dict[str, Any] = dict(line)
            for key, cell in line.items():
                if key in by_key:
                    param = by_key[key]
                    row[key] = (_number(cell, path, reader.line_num, key) if param.numeric
                                else param.value(cell))
                elif key in (metric, "val_acc", "seconds", "epochs", "stage", "trial"):
                    row[key] = _number(cell, path, reader.line_num, key)
            rows.append(row)
    except csv.Error as exc:
        raise ZooError(f"{path}: line {reader.line_num}: not readable as CSV ({exc})") from None
    return header, rows


def best_first(rows: list[dict[str, Any]], metric: str, goal: str) -> list[dict[str, Any]]:
    """Finished trials by the metric (the goal's way), then pruned, diverged and unmeasured ones likewise."""
    sign = -1 if goal == "maximize" else 1

    def rank(row: dict[str, Any]) -> tuple:
        value = row[metric]
        return (not counts_as_finished(row, metric), not math.isfinite(value),
                sign * value if math.isfinite(value) else 0.0)

    return sorted(rows, key=rank)


def read_sweep(folder: str | Path) -> SweepResults:
    """A sweep folder's trials and search space; a folder that is not a finished sweep's is a ZooError."""
    folder = Path(folder)
    if not (folder / RECORD).is_file():
        raise ZooError(f"{folder}: no {RECORD}: not a sweep folder")
    if not (folder / RESULTS).is_file():
        from zoo.training.run_folder import RunLock

        # results.csv is written as the sweep ends: a locked folder's sweep is running still, not stopped
        holder = RunLock.holder(folder)
        if holder is not None:
            raise ZooError(f"{folder}: the sweep is still running, in {holder}; report it once it has finished")
        raise ZooError(f"{folder}: no {RESULTS}: the sweep has not finished (zoo sweep --resume {folder})")
    sweep = _record(folder)
    params = [_param(entry, folder / RECORD) for entry in sweep["params"]]
    metric, goal = str(sweep["metric"]), str(sweep.get("goal") or "maximize")
    if goal not in ("maximize", "minimize"):
        raise ZooError(f"{folder / RECORD}: goal: expected maximize or minimize, got {brief(goal)}")
    columns, rows = _rows(folder / RESULTS, params, metric)
    return SweepResults(folder, str(sweep.get("name") or folder.name), metric, goal, params,
                        best_first(rows, metric, goal), columns)


@dataclass
class Importance:
    """fANOVA's share of the metric's variance per parameter, or why there is none (``note``)."""

    values: dict[str, float]
    trials: int
    note: str = ""

    def to_dict(self, results: SweepResults) -> dict[str, Any]:
        return {"metric": results.metric, "goal": results.goal, "evaluator": "fanova", "trials": self.trials,
                "importances": self.values, "note": self.note or None}


def _distribution(param: SearchedParam):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if param.numeric:
        return FloatDistribution(param.low, param.high, log=param.log)
    # options by their place in the list: Optuna takes only None, bools, numbers and strings as choices
    return CategoricalDistribution(list(range(len(param.options))))


def _in_study(param: SearchedParam, value: Any) -> Any:
    """A trial's value as its parameter's distribution holds it."""
    if param.numeric:  # results.csv keeps floats to their repr: a value drawn at an edge must stay inside
        return min(max(value, param.low), param.high)
    return param.options.index(value)


def _searched(row: dict[str, Any], params: list[SearchedParam]) -> bool:
    """Whether every value of the trial lies in the space sweep.json records (a choice among its options)."""
    return all(p.numeric or row[p.key] in p.options for p in params)


def importance(results: SweepResults, seed: int = 0) -> Importance:
    """Each parameter's importance over the finished trials, by Optuna's fANOVA (``seed``: its forest's)."""
    finished = [r for r in results.rows
                if counts_as_finished(r, results.metric) and _searched(r, results.params)]
    if len(results.params) < 2:
        return Importance({}, len(finished),
                          "one parameter was searched: there is nothing to rank it against")
    if len(finished) < 2:
        return Importance({}, len(finished), f"{len(finished)} trial(s) finished: fANOVA needs at least 2")
    if len({row[results.metric] for row in finished}) == 1:  # fANOVA divides by the metric's variance
        return Importance({}, len(finished), f"every finished trial has the same {results.metric}: "
                                             "no parameter made a difference")
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {p.key: _distribution(p) for p in results.params}
    study = optuna.create_study(direction=results.goal)
    study.add_trials([
        optuna.trial.create_trial(
            params={p.key: _in_study(p, row[p.key]) for p in results.params},
            distributions=distributions, value=row[results.metric])
        for row in finished
    ])
    values = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    if not values:
        return Importance({}, len(finished), "no parameter took more than one value in the finished trials")
    return Importance({k: float(v) for k, v in values.items()}, len(finished))
