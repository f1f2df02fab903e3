"""Fault injection: kill -9 training runs at random moments, resume them, and compare with an uninterrupted run.

One reference run trains the recipe start to finish. Then each of ``--runs`` runs is started as a
``zoo train`` process and sent SIGKILL at a random moment (uniform over 0.5 s to 0.9 of the reference's wall
time, so start-up, training, checkpoint writes and evaluation are all hit), up to ``--kills`` times; after
each kill it goes on with ``zoo train --resume RUN_DIR`` (or starts over with ``--overwrite`` when it
was killed before its first checkpoint). The last attempt runs to the end. A run counts as identical
when its final metrics (val/test accuracy and loss) equal the reference's exactly.

With ``--wandb`` every run also logs to W&B offline, and each killed-and-resumed run's W&B history, read
back from all its sittings' ``.wandb`` files, is checked against its ``logs/metrics.csv``: every value
there once (none lost to a kill, none logged twice by a replay), none that differs.

    python benchmarks/fault_injection.py --json                  # default recipe, 5 runs, 2 kills each
    python benchmarks/fault_injection.py --quick --json          # a tiny run: checks that it works
    python benchmarks/fault_injection.py --runs 10 resnet-digits trainer.max_epochs=5
    python benchmarks/fault_injection.py --wandb --json          # ... and the W&B history of each run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUICK = ["trainer.max_epochs=3", "data.batch_size=128", "model.width=64"]


WANDB = False  # --wandb: runs log to W&B offline, as for a user without an API key


def zoo(args: list[str], cwd: Path, kill_after: float | None = None) -> tuple[int, float]:
    """Run ``zoo ARGS``; SIGKILL it after ``kill_after`` seconds if it is still running. (exit code, seconds)"""
    env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}
    if WANDB:  # offline, each run with a wandb service of its own
        env = {k: v for k, v in env.items() if k not in ("WANDB_MODE", "WANDB_SERVICE", "WANDB_API_KEY")}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "zoo", *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode not in (0, -signal.SIGKILL):
        raise SystemExit(f"zoo {' '.join(args)} failed with exit code {proc.returncode}:\n{stderr}")
    return proc.returncode, time.perf_counter() - start


def final_metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


def wandb_check(run_dir: Path) -> dict:
    """A run's W&B history over all its sittings against its metrics.csv (the rows logged during training;
    the best checkpoint's evaluation afterwards is in the W&B summary): how many values are held twice,
    missing, or different."""
    from zoo.monitoring.wandb_offline import (
        BOOKKEEPING,
        merged_history,
        offline_run_dirs,
        read_run_file,
        run_file,
    )

    sittings = [read_run_file(run_file(f)) for f in offline_run_dirs(run_dir)]
    held: dict[tuple[int, str], object] = {}
    twice = 0
    for row in merged_history(sittings):
        for key, value in row.items():
            if key not in BOOKKEEPING:
                cell = (row["trainer/global_step"], key)
                twice += cell in held
                held[cell] = value
    with open(run_dir / "logs" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    trained = max(int(r["epoch"]) for r in rows if r.get("train/loss_epoch"))
    logged = {
        (int(r["step"]), k): float(v)
        for r in rows if not r.get("epoch") or int(r["epoch"]) <= trained
        for k, v in r.items() if k != "step" and v != ""
    }
    missing = sum(cell not in held for cell in logged)
    different = sum(cell in held and abs(held[cell] - v) > 1e-6 * max(1.0, abs(v))
                    for cell, v in logged.items())
    final = json.loads((run_dir / "metrics.json").read_text())["test_acc"]
    return {
        "sittings": len(sittings), "values": len(logged), "twice": twice, "missing": missing,
        "different": different, "clean": bool(sittings) and not (twice or missing or different),
        # the last sitting closed the run, with the run's final figures in its summary
        "finished": bool(sittings) and sittings[-1].complete and sittings[-1].summary.get("test/acc") == final,
    }


def one_run(recipe: list[str], run_dir: Path, cwd: Path, kills: int, span: float, rng: random.Random) -> dict:
    """Train with up to ``kills`` SIGKILLs; how the run went and its final metrics."""
    log = {"kill_times_s": [], "resumed": 0, "started_over": 0, "killed_after_finishing": 0}
    args = [*recipe, "--run-dir", str(run_dir), "--overwrite"]
    for attempt in range(kills + 1):
        # up to 0.9 of the reference's time: a later kill often finds the run already finished
        kill_after = rng.uniform(0.5, 0.9 * span) if attempt < kills else None
        code, _ = zoo(args, cwd, kill_after)
        if code == 0:
            break
        log["kill_times_s"].append(round(kill_after, 2))
        if (run_dir / "metrics.json").is_file():
            log["killed_after_finishing"] += 1  # killed while exiting, after it wrote its metrics
            break
        if (run_dir / "checkpoints" / "last.ckpt").is_file():
            args = ["train", "--resume", str(run_dir)]
            log["resumed"] += 1
        else:  # killed before the first checkpoint: nothing to resume, start again
            args = [*recipe, "--run-dir", str(run_dir), "--overwrite"]
            log["started_over"] += 1
    log["metrics"] = final_metrics(run_dir)
    if WANDB:
        log["wandb"] = wandb_check(run_dir)
    return log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="*", help="recipe and key=value overrides (default: the default recipe)")
    parser.add_argument("--runs", type=int, default=5, help="runs to kill and resume (default: 5)")
    parser.add_argument("--kills", type=int, default=2, help="SIGKILLs per run (default: 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--quick", action="store_true", help="one run, one kill, a 3-epoch small MLP")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.add_argument("--wandb", action="store_true", help="log to W&B offline, check each run's W&B history")
    ns = parser.parse_args(argv)
    global WANDB
    WANDB = ns.wandb
    recipe = ns.recipe or ["mlp-digits"]
    if ns.wandb:
        recipe = [*recipe, "logger.wandb.mode=offline"]
    if ns.quick:
        recipe, ns.runs, ns.kills = [*recipe, *QUICK], 1, 1
    train_args = ["train", *recipe]
    rng = random.Random(ns.seed)
    cwd = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="zoo-faults-") as tmp:
        reference_dir = Path(tmp) / "reference"
        _, span = zoo([*train_args, "--run-dir", str(reference_dir)], cwd)
        reference = final_metrics(reference_dir)
        runs = [one_run(train_args, Path(tmp) / f"run{i}", cwd, ns.kills, span, rng) for i in range(ns.runs)]
    identical = sum(r["metrics"] == reference for r in runs)
    result = {
        "recipe": recipe,
        "runs": ns.runs,
        "identical": identical,
        "kills": sum(len(r["kill_times_s"]) for r in runs),
        "resumed": sum(r["resumed"] for r in runs),
        "started_over": sum(r["started_over"] for r in runs),
        "killed_after_finishing": sum(r["killed_after_finishing"] for r in runs),
        "reference_seconds": round(span, 2),
        "reference_metrics": reference,
        "per_run": runs,
        "quick": ns.quick,
    }
    if ns.wandb:
        result["wandb_clean"] = sum(r["wandb"]["clean"] and r["wandb"]["finished"] for r in runs)
    if ns.json:
        print(json.dumps(result))
    else:
        print(f"{identical} of {ns.runs} killed-and-resumed runs ended with the uninterrupted run's metrics")
        for i, r in enumerate(runs):
            same = "identical" if r["metrics"] == reference else f"DIFFERENT: {r['metrics']}"
            print(f"  run {i}: killed at {r['kill_times_s']} s, resumed {r['resumed']}x, "
                  f"started over {r['started_over']}x: {same}")
            if ns.wandb:
                w = r["wandb"]
                print(f"    W&B: {w['sittings']} sittings, {w['values']} values: {w['twice']} twice, "
                      f"{w['missing']} missing, {w['different']} different; finished: {w['finished']}")
    clean = not ns.wandb or result["wandb_clean"] == ns.runs
    return 0 if identical == ns.runs and clean else 1


if __name__ == "__main__":
    sys.exit(main())
