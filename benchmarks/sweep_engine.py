"""The sweep engine measured: parallel workers, a SIGKILL and --resume, pruning, TPE against random search.

Every case sweeps the search of recipes/sweeps/lr-digits.yaml (its parameters and metric) over
recipes/mlp-digits.yaml, written as a temporary sweep file of one stage; everything runs in a temporary
folder, and each command is printed (to stderr) as it starts.

Cases (``--case NAME``, repeatable; every case by default):

* ``workers``: 12 trials of 3 epochs with ``--workers 2``, and with one worker for the time it saves.
  Clean when all 12 finished and none ran twice: 12 distinct run folders in results.csv, 12 distinct
  parameter settings, and 12 trial folders on disk.
* ``kill9``: the same 12 trials with one worker; once 5 trials are recorded as finished, the sweep's whole
  process group gets SIGKILL (finished: recorded in sweep.json, or counted by the Optuna study in the
  folder's SQLite file), and ``zoo sweep --resume DIR`` finishes it. Clean when results.csv then
  holds exactly 12 trials and every trial recorded before the kill is kept as it was: the same parameter
  values and metric, its metrics.json not written again (same bytes, same modification time).
* ``pruning``: per seed (``--seeds``), 16 random trials of 10 epochs with ``pruner: none``, ``median`` and
  ``hyperband``: the epochs trained in all (results.csv's ``epochs``, or else the epochs each trial's
  logs/metrics.csv holds) and the best metric. Prints each pruner's epoch saving against none (%) and its
  best metric's difference (points), means over the seeds; the target is at least 40% fewer epochs with
  the best within 0.5 points.
* ``tpe``: per seed, ``sampler: tpe`` against ``sampler: random`` on the same budget (16 trials of 10
  epochs): the best metric of each, and the means.

A case the engine does not support (a flag or sweep key it refuses) is reported as such, with the
engine's message, and counts as neither clean nor failed.

    python benchmarks/sweep_engine.py --json                          # every case, full size
    python benchmarks/sweep_engine.py --case pruning --seeds 0 1 2
    python benchmarks/sweep_engine.py --smoke                         # tiny sizes: checks that it works
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SEARCH = ROOT / "recipes" / "sweeps" / "lr-digits.yaml"
BASE = ROOT / "recipes" / "mlp-digits.yaml"
TINY = ["model.width=32", "model.depth=1", "trainer.limit_train_batches=4"]  # --smoke: seconds per trial
PRUNERS = ("none", "median", "hyperband")
SAMPLERS = ("random", "tpe")


@dataclass
class Size:
    """How big each case is."""

    trials: int = 12  # workers, kill9
    epochs: int = 3
    kill_after: int = 5  # kill9: finished trials before the kill
    search_trials: int = 16  # pruning, tpe
    search_epochs: int = 10
    overrides: tuple[str, ...] = ()
    timeout: float = 3600.0  # one zoo sweep process, seconds


FULL = Size()
SMOKE = Size(trials=4, epochs=2, kill_after=2, search_trials=4, search_epochs=3, overrides=tuple(TINY),
             timeout=120)


class Unsupported(Exception):
    """The engine refused a flag or key a case needs (its one-line message)."""


def _env() -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore"}
    env.pop("ZOO_RUN_DIR", None)
    return env


def command(args: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "zoo", *args]
    print("$ zoo " + shlex.join(args), file=sys.stderr, flush=True)
    return cmd


def start(args: list[str]) -> subprocess.Popen:
    """``zoo ARGS`` in a process group of its own (so a kill reaches every worker it starts)."""
    return subprocess.Popen(command(args), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        raise SystemExit(f"zoo ran past {timeout:.0f} s and was killed:\n{stderr[-2000:]}") from None
    return proc.returncode, stderr


def zoo(args: list[str], size: Size) -> float:
    """Run ``zoo ARGS`` to its end; its seconds. A refusal (exit 2) is :class:`Unsupported`."""
    began = time.perf_counter()
    code, stderr = finish(start(args), size.timeout)
    if code == 2:
        raise Unsupported(stderr.strip().splitlines()[-1] if stderr.strip() else "exit code 2")
    if code != 0:
        raise SystemExit(f"zoo {shlex.join(args)} failed with exit code {code}:\n{stderr[-2000:]}")
    return time.perf_counter() - began


def sweep_file(workdir: Path, name: str, size: Size, trials: int, epochs: int, seed: int = 0,
               **keys: Any) -> Path:
    """lr-digits' search as one stage of ``trials`` trials of ``epochs`` epochs (``keys``: sampler,
    pruner)."""
    search = yaml.safe_load(SEARCH.read_text())
    sweep = {"base": str(BASE), "name": name, "metric": search["metric"], "stages": 1, "trials": trials,
             "epochs_per_stage": [epochs], "seed": seed, **keys, "parameters": search["parameters"]}
    if size.overrides:
        sweep["overrides"] = list(size.overrides)
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def metric_name() -> str:
    return yaml.safe_load(SEARCH.read_text())["metric"]


def param_keys() -> list[str]:
    return list(yaml.safe_load(SEARCH.read_text())["parameters"])


def results(folder: Path) -> list[dict[str, str]]:
    with open(folder / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def trial_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and (p / "recipe.yaml").is_file())


def _study_finished(folder: Path) -> int:
    """How many trials the Optuna studies in the folder's SQLite files hold as complete or pruned."""
    import optuna
    from optuna.trial import TrialState
    from sqlalchemy.exc import SQLAlchemyError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    count = 0
    for db in folder.glob("*.db"):
        storage = f"sqlite:///{db}"
        try:
            for summary in optuna.get_all_study_summaries(storage):
                study = optuna.load_study(study_name=summary.study_name, storage=storage)
                count += len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                      TrialState.PRUNED)))
        except (SQLAlchemyError, KeyError):  # a database being created or written: asked at the next poll
            return 0
    return count


def finished_trials(folder: Path) -> list[str]:
    """The trials the engine recorded as finished: sweep.json's, or else (the study of an engine that keeps
    one) as many trial folders as its study counts, the earliest metrics.json first (one worker runs the
    trials in turn, and a trial is recorded after its metrics.json is written)."""
    try:
        recorded = json.loads((folder / "sweep.json").read_text()).get("trials") or {}
    except (OSError, ValueError):
        recorded = {}
    if recorded:
        return sorted(recorded)
    done = sorted((p for p in trial_folders(folder) if (p / "metrics.json").is_file()),
                  key=lambda p: (p / "metrics.json").stat().st_mtime_ns)
    return [p.name for p in done[:_study_finished(folder)]]


def epochs_trained(folder: Path, rows: list[dict[str, str]]) -> int:
    """The epochs all trials trained: results.csv's ``epochs``, or each trial's logged epochs."""
    if rows and "epochs" in rows[0]:
        return sum(int(float(r["epochs"])) for r in rows)
    total = 0
    for row in rows:
        with open(Path(row["run_dir"]) / "logs" / "metrics.csv", newline="") as f:
            total += len({r["epoch"] for r in csv.DictReader(f) if r.get("train/loss_epoch")})
    return total


def best(rows: list[dict[str, str]]) -> float:
    """The best metric of the trials that trained to their end (lr-digits' metric is maximized)."""
    values = [float(r[metric_name()]) for r in rows if r["status"] == "ok"]
    return max((v for v in values if math.isfinite(v)), default=math.nan)


def recipe_value(run_dir: Path, key: str) -> Any:
    value = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    for part in key.split("."):
        value = value[part]
    return value


def same_value(a: Any, b: Any) -> bool:
    # recipe.yaml writes floats to 12 significant digits; results.csv to their repr
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(a) == str(b)


def run_sweep_case(workdir: Path, name: str, size: Size, flags: tuple[str, ...] = (), **keys: Any) -> dict:
    """One sweep to its end in its own folder: its rows, epochs, best metric and seconds."""
    trials = keys.pop("trials", size.search_trials)
    epochs = keys.pop("epochs", size.search_epochs)
    path = sweep_file(workdir, name, size, trials, epochs, **keys)
    folder = workdir / f"{name}-sweep"
    seconds = zoo(["sweep", str(path), "--sweep-dir", str(folder), *flags], size)
    rows = results(folder)
    return {"folder": folder, "rows": rows, "epochs": epochs_trained(folder, rows), "best": best(rows),
            "seconds": round(seconds, 1)}


# --- cases ------------------------------------------------------------------------------------------------
def case_workers(ns, size: Size, workdir: Path) -> dict:
    common = {"trials": size.trials, "epochs": size.epochs}
    two = run_sweep_case(workdir, "workers2", size, ("--workers", "2"), **common)
    one = run_sweep_case(workdir, "workers1", size, **common)
    rows, keys = two["rows"], param_keys()
    distinct_dirs = len({r["run_dir"] for r in rows})
    distinct_values = len({tuple(r[k] for k in keys) for r in rows})
    on_disk = len(trial_folders(two["folder"]))
    return {"clean": len(rows) == distinct_dirs == distinct_values == on_disk == size.trials,
            "trials": len(rows), "distinct_run_dirs": distinct_dirs, "distinct_values": distinct_values,
            "trial_folders": on_disk, "seconds_2_workers": two["seconds"], "seconds_1_worker": one["seconds"],
            "speedup": round(one["seconds"] / two["seconds"], 2)}


def _kept(folder: Path, name: str, metric: str) -> dict:
    """What must not change of a finished trial: its values, its metric and its metrics.json."""
    run_dir = folder / name
    stat = (run_dir / "metrics.json").stat()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"values": {k: recipe_value(run_dir, k) for k in param_keys()},
            "metric": (metrics.get("metrics") or metrics).get(metric, metrics.get(metric)),
            "mtime_ns": stat.st_mtime_ns, "bytes": (run_dir / "metrics.json").read_bytes()}


def case_kill9(ns, size: Size, workdir: Path) -> dict:
    path = sweep_file(workdir, "kill9", size, size.trials, size.epochs)
    folder, metric = workdir / "kill9-sweep", metric_name()
    proc = start(["sweep", str(path), "--sweep-dir", str(folder)])
    deadline = time.monotonic() + size.timeout
    while len(finished_trials(folder) if folder.is_dir() else []) < size.kill_after:
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            raise SystemExit(f"the sweep ended (or stalled) before {size.kill_after} trials finished:\n"
                             f"{proc.communicate()[1][-2000:]}")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    kept = {name: _kept(folder, name, metric) for name in finished_trials(folder)}
    seconds = zoo(["sweep", "--resume", str(folder)], size)
    rows = {Path(r["run_dir"]).name: r for r in results(folder)}
    changed = {}
    for name, before in kept.items():
        row, metrics_file = rows.get(name), folder / name / "metrics.json"
        what = ["missing"] if row is None else [
            *(["values"] if not all(same_value(row[k], v) for k, v in before["values"].items()) else []),
            *(["metric"] if not same_value(row[metric], before["metric"]) else []),
            *(["metrics.json rewritten"] if (metrics_file.stat().st_mtime_ns != before["mtime_ns"]
                                             or metrics_file.read_bytes() != before["bytes"]) else [])]
        if what:
            changed[name] = what
    return {"clean": len(rows) == size.trials and not changed and len(kept) >= size.kill_after,
            "trials": len(rows), "kept_before_kill": len(kept), "changed_by_resume": changed,
            "resume_seconds": round(seconds, 1)}


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4) if values else math.nan


def case_pruning(ns, size: Size, workdir: Path) -> dict:
    per_seed = []
    for seed in ns.seeds:
        runs = {p: run_sweep_case(workdir, f"prune-{p}-s{seed}", size, sampler="random", pruner=p, seed=seed)
                for p in PRUNERS}
        none = runs["none"]
        per_seed.append({p: {"epochs": r["epochs"], "best": r["best"], "seconds": r["seconds"],
                             "epoch_saving_pct": round(100 * (1 - r["epochs"] / none["epochs"]), 1),
                             "best_diff_points": round(100 * (r["best"] - none["best"]), 2)}
                         for p, r in runs.items()})
    measures = ("epochs", "best", "seconds", "epoch_saving_pct", "best_diff_points")
    mean = {p: {k: _mean([s[p][k] for s in per_seed]) for k in measures} for p in PRUNERS}
    targets = {p: mean[p]["epoch_saving_pct"] >= 40 and abs(mean[p]["best_diff_points"]) <= 0.5
               for p in PRUNERS if p != "none"}
    return {"clean": all(targets.values()), "meets_target": targets, "mean": mean, "per_seed": per_seed}


def case_tpe(ns, size: Size, workdir: Path) -> dict:
    per_seed = [{s: run_sweep_case(workdir, f"{s}-s{seed}", size, sampler=s, seed=seed)["best"]
                 for s in SAMPLERS} for seed in ns.seeds]
    mean = {s: _mean([row[s] for row in per_seed]) for s in SAMPLERS}
    return {"clean": True, "mean_best": mean, "per_seed": per_seed,
            "tpe_minus_random_points": round(100 * (mean["tpe"] - mean["random"]), 2)}


CASES = {"workers": case_workers, "kill9": case_kill9, "pruning": case_pruning, "tpe": case_tpe}


def print_table(result: dict) -> None:
    for name, r in result["cases"].items():
        if "unsupported" in r:
            print(f"{name}: not supported by this engine: {r['unsupported']}")
            continue
        print(f"{name}: {'clean' if r['clean'] else 'NOT CLEAN'} ({r['seconds']} s)")
        if name == "pruning":
            print(f"  {'pruner':<10} {'epochs':>8} {'best':>8} {'saving %':>9} {'diff pt':>8}"
                  "   (means over seeds)")
            for p, m in r["mean"].items():
                print(f"  {p:<10} {m['epochs']:>8} {m['best']:>8} {m['epoch_saving_pct']:>9} "
                      f"{m['best_diff_points']:>8}")
            print(f"  target (>= 40% fewer epochs, best within 0.5 pt): {r['meets_target']}")
        elif name == "tpe":
            for seed, row in zip(result["seeds"], r["per_seed"]):
                print(f"  seed {seed}: " + "  ".join(f"{s} {v:.4f}" for s, v in row.items()))
            print(f"  mean: {r['mean_best']}  tpe - random: {r['tpe_minus_random_points']} points")
        else:
            for key, value in r.items():
                if key not in ("clean", "seconds"):
                    print(f"  {key}: {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=list(CASES), help="a case to run (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="pruning, tpe: the seeds (default: 0)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sweeps (few trials, a small MLP, 4 batches an epoch): checks that the "
                        "script works, measures nothing")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    ns = parser.parse_args(argv)
    size = SMOKE if ns.smoke else FULL
    cases = {}
    with tempfile.TemporaryDirectory(prefix="zoo-sweep-engine-") as tmp:
        for name in ns.case or list(CASES):
            workdir = Path(tmp) / name
            workdir.mkdir()
            began = time.perf_counter()
            try:
                cases[name] = CASES[name](ns, size, workdir)
            except Unsupported as refused:
                cases[name] = {"unsupported": str(refused)}
            cases[name]["seconds"] = round(time.perf_counter() - began, 1)
    measured = [c for c in cases.values() if "unsupported" not in c]
    result = {"smoke": ns.smoke, "seeds": ns.seeds, "clean": all(c["clean"] for c in measured),
              "cases": cases}
    if ns.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0 if result["clean"] else 1


if __name__ == "__main__":
    sys.exit(main())
