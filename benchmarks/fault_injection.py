"""Fault injection: faults a training run must survive, each a case that reports whether it came out clean.

Cases (``--case NAME``, repeatable; every case by default):

* ``kill9``: one reference run trains the recipe start to finish. Then each of ``--runs`` runs is started
  as a ``zoo train`` process and sent SIGKILL at a random moment (uniform over 0.5 s to 0.9 of the
  reference's wall time, so start-up, training, checkpoint writes and evaluation are all hit), up to
  ``--kills`` times; after each kill it goes on with ``zoo train --resume RUN_DIR`` (or starts over with
  ``--overwrite`` when it was killed before its first checkpoint). The last attempt runs to the end.
  Clean when every run's final metrics (val/test accuracy and loss) equal the reference's exactly.
* ``ddp-sigterm``: the recipe on 2 CPU processes (DDP over gloo). An uninterrupted run is the reference;
  each of ``--runs`` runs gets SIGTERM at a random moment after its first checkpoint, sent to one process
  only, as a scheduler or ``kill PID`` sends it: the launching process, or the worker (alternately).
  Clean when the job exits 143 within ``--stop-within`` seconds of the signal, no process of it is left,
  ``last.ckpt`` holds the step the message names, and ``zoo train --resume`` ends with the reference's
  exact metrics.
* ``lock``: while a run holds its folder (paused at a step by a small monitor this script writes), a second
  ``zoo train`` of the same ``--run-dir``, an ``--overwrite`` of it and a ``--resume`` of it are each refused
  with exit 2 naming the holder's pid, and the run then finishes unharmed (one header in its
  metrics.csv). A run killed with SIGKILL leaves its lock file behind; ``--resume`` takes it over.
* ``moments``: each of ``--runs`` trials stops a run with SIGKILL, SIGTERM, SIGINT or SIGHUP (in turn) at a
  moment of one phase (in turn): a training step, validation, a checkpoint being written (its bytes written,
  not yet renamed into place), metrics.csv being written (half its rows written), the final test; and, on a
  recipe with an ensemble section, a member's start. Which moment of the phase is drawn at random from
  those the reference run went through. A small monitor this script writes records the phases and pauses
  at the drawn moment (``ZOO_MOMENT=phase:n``) until the signal has been sent. The run then goes on with
  ``zoo train --resume`` (or starts over when it had no checkpoint yet). Trials alternate between the
  recipe's own ``performance.steps_per_execution`` and 1 (grouped and single steps), each against its own
  uninterrupted reference. Clean when every trial exits as the signal says (128 + its number; -9 for
  SIGKILL) and ends with the reference's metrics, best checkpoints (their steps) and metrics.csv (every row,
  in order, the same values). The result counts the trials per phase and signal.

    python benchmarks/fault_injection.py --json                      # every case, default recipe
    python benchmarks/fault_injection.py --quick --json              # small runs: checks that it works
    python benchmarks/fault_injection.py --case kill9 --runs 10 resnet-digits trainer.max_epochs=5
    python benchmarks/fault_injection.py --case ddp-sigterm --runs 4
    python benchmarks/fault_injection.py --case moments --runs 12 mlp-digits trainer.max_epochs=5

With ``--wandb`` the runs also log to W&B offline, and each killed-and-resumed run of ``kill9`` (and each
trial of ``moments``) has its W&B history, read back from all its sittings' ``.wandb`` files, checked against
its ``logs/metrics.csv``: every value there once (none lost to a kill, none logged twice by a replay), none
that differs.

    python benchmarks/fault_injection.py --case kill9 --wandb --json  # ... and each run's W&B history

A new case is a function ``case_NAME(ns, recipe, workdir, rng) -> dict`` whose result holds ``clean``
(bool) and whatever it measured, listed in ``CASES``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

QUICK = ["trainer.max_epochs=3", "data.batch_size=128", "model.width=64"]
DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "data.batch_size=32"]
CWD = Path(__file__).resolve().parents[1]


WANDB = False  # --wandb: runs log to W&B offline, as for a user without an API key


def _env() -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore"}
    env.pop("ZOO_RUN_DIR", None)
    if WANDB:  # offline, each run with a wandb service of its own
        for key in ("WANDB_MODE", "WANDB_SERVICE", "WANDB_API_KEY"):
            env.pop(key, None)
    return env


def zoo(args: list[str], kill_after: float | None = None, expect: tuple[int, ...] = (0, -signal.SIGKILL)
        ) -> tuple[int, float, str]:
    """Run ``zoo ARGS``; SIGKILL it after ``kill_after`` seconds if it is still running. (exit code, seconds, stderr)"""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "zoo", *args], cwd=CWD, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate()
    if proc.returncode not in expect:
        raise SystemExit(f"zoo {' '.join(args)} failed with exit code {proc.returncode}:\n{stderr}")
    return proc.returncode, time.perf_counter() - start, stderr


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """``zoo ARGS`` started in the background (``env``: variables set on top of the usual ones)."""
    return subprocess.Popen([sys.executable, "-m", "zoo", *args], cwd=CWD, env={**_env(), **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def final_metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


def processes_of(run_dir: Path) -> dict[int, int]:
    """{pid: parent pid} of every process whose command line names ``run_dir`` (all ranks of its job)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(run_dir).encode() in (proc / "cmdline").read_bytes():
                found[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return found


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> bool:
    """Wait until ``path`` exists (True) or ``proc`` ends first (False)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# --- kill -9 --------------------------------------------------------------------------------------------
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


def _killed_run(recipe: list[str], run_dir: Path, kills: int, span: float, rng: random.Random) -> dict:
    """Train with up to ``kills`` SIGKILLs; how the run went and its final metrics."""
    log = {"kill_times_s": [], "resumed": 0, "started_over": 0, "killed_after_finishing": 0}
    args = [*recipe, "--run-dir", str(run_dir), "--overwrite"]
    for attempt in range(kills + 1):
        # up to 0.9 of the reference's time: a later kill often finds the run already finished
        kill_after = rng.uniform(0.5, 0.9 * span) if attempt < kills else None
        code, _, _ = zoo(args, kill_after)
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


def case_kill9(ns, recipe: list[str], workdir: Path, rng: random.Random) -> dict:
    train_args = ["train", *recipe]
    reference_dir = workdir / "reference"
    _, span, _ = zoo([*train_args, "--run-dir", str(reference_dir)])
    reference = final_metrics(reference_dir)
    runs = [_killed_run(train_args, workdir / f"run{i}", ns.kills, span, rng) for i in range(ns.runs)]
    identical = sum(r["metrics"] == reference for r in runs)
    wandb_clean = sum(r["wandb"]["clean"] and r["wandb"]["finished"] for r in runs) if WANDB else None
    return {
        "clean": identical == ns.runs and (wandb_clean is None or wandb_clean == ns.runs),
        "wandb_clean": wandb_clean,
        "runs": ns.runs,
        "identical": identical,
        "kills": sum(len(r["kill_times_s"]) for r in runs),
        "resumed": sum(r["resumed"] for r in runs),
        "started_over": sum(r["started_over"] for r in runs),
        "killed_after_finishing": sum(r["killed_after_finishing"] for r in runs),
        "reference_seconds": round(span, 2),
        "reference_metrics": reference,
        "per_run": runs,
    }


# --- SIGTERM to one process of a DDP job ----------------------------------------------------------------
def _sigterm_run(args: list[str], run_dir: Path, target: str, ns, rng: random.Random, reference: dict) -> dict:
    proc = start([*args, "--run-dir", str(run_dir)])
    log: dict = {"target": target}
    if not wait_for(run_dir / "checkpoints" / "last.ckpt", proc):
        proc.communicate()
        return {**log, "clean": False, "problem": "the run ended before its first checkpoint"}
    time.sleep(rng.uniform(0, 1.0))
    ranks = processes_of(run_dir)
    pid = proc.pid if target == "launcher" else next((p for p, parent in ranks.items() if parent == proc.pid), None)
    if pid is None or proc.poll() is not None:
        proc.communicate()
        return {**log, "clean": False, "problem": "the run finished before the signal; raise trainer.max_epochs"}
    sent = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    try:
        _, stderr = proc.communicate(timeout=ns.stop_within + 60)
    except subprocess.TimeoutExpired:
        for p in processes_of(run_dir):
            os.kill(p, signal.SIGKILL)
        _, stderr = proc.communicate()
        return {**log, "clean": False, "problem": f"still running {ns.stop_within + 60} s after the signal"}
    log["stop_seconds"] = round(time.monotonic() - sent, 2)
    log["exit_code"] = proc.returncode
    time.sleep(2)  # a worker still shutting down would show here
    log["left_behind"] = len(processes_of(run_dir))
    said = re.findall(r"stopped by SIGTERM at epoch (\d+), step (\d+)", stderr)
    log["reported_step"] = int(said[0][1]) if said else None
    log["reports"] = len(said)
    import torch

    log["checkpoint_step"] = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    zoo(["train", "--resume", str(run_dir)], expect=(0,))
    log["identical_after_resume"] = final_metrics(run_dir) == reference
    log["clean"] = (
        log["exit_code"] == 143 and log["stop_seconds"] <= ns.stop_within and log["left_behind"] == 0
        and log["reports"] == 1 and log["reported_step"] == log["checkpoint_step"] and log["identical_after_resume"]
    )
    return log


def case_ddp_sigterm(ns, recipe: list[str], workdir: Path, rng: random.Random) -> dict:
    name, *overrides = [r for r in recipe if r not in QUICK]
    # enough steps that a signal a second after the first checkpoint lands in training (the recipe may say more)
    args = ["train", name, *DDP, f"trainer.max_epochs={4 if ns.quick else 15}", *overrides]
    reference_dir = workdir / "ddp-reference"
    _, span, _ = zoo([*args, "--run-dir", str(reference_dir)], expect=(0,))
    reference = final_metrics(reference_dir)
    runs = [
        _sigterm_run(args, workdir / f"ddp{i}", "launcher" if i % 2 == 0 else "worker", ns, rng, reference)
        for i in range(ns.runs)
    ]
    return {
        "clean": all(r["clean"] for r in runs),
        "runs": ns.runs,
        "clean_runs": sum(r["clean"] for r in runs),
        "reference_seconds": round(span, 2),
        "stop_seconds": [r.get("stop_seconds") for r in runs],
        "per_run": runs,
    }


# --- the run-folder lock --------------------------------------------------------------------------------
HOLD = '''"""Written by benchmarks/fault_injection.py: a monitor that pauses training while a file exists."""
import time
from pathlib import Path

import lightning as L

from zoo.core.catalog import monitors


class Hold(L.Callback):
    def __init__(self, step, hold, reached):
        self.step, self.hold, self.reached = step, Path(hold), Path(reached)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step and self.hold.exists():
            self.reached.write_text(str(self.step))
            while self.hold.exists():
                time.sleep(0.05)


@monitors.register("hold_at_step")
def hold_at_step(step: int, hold: str, reached: str):
    """Pauses training after optimizer step ``step`` for as long as the file ``hold`` exists."""
    return Hold(step, hold, reached)
'''


def case_lock(ns, recipe: list[str], workdir: Path, rng: random.Random) -> dict:
    (workdir / "hold.py").write_text(HOLD)
    checks: dict[str, bool] = {}
    # a pause after step 25 (the default recipe takes 20 steps an epoch): a checkpoint exists by then
    for name in ("first", "killed"):
        (workdir / f"{name}.yaml").write_text(
            f"base: {CWD / 'recipes' / 'mlp-digits.yaml'}\nplugins: [{workdir / 'hold.py'}]\nmonitors:\n"
            f"  - {{name: hold_at_step, step: 25, hold: {workdir / name}.hold, reached: {workdir / name}.reached}}\n"
        )
        (workdir / f"{name}.hold").write_text("")
    quick = ["performance.steps_per_execution=1", *(["trainer.max_epochs=3", "model.width=64"] if ns.quick else [])]

    run = workdir / "locked"
    first = start(["train", str(workdir / "first.yaml"), *quick, "--run-dir", str(run)])
    if not wait_for(workdir / "first.reached", first):
        return {"clean": False, "problem": f"the run ended before it paused: {first.communicate()[1][-2000:]}"}
    holder = f"is in use by zoo (pid {first.pid} "
    for label, args in [
        ("second_run_refused", ["train", str(workdir / "first.yaml"), *quick, "--run-dir", str(run)]),
        ("overwrite_refused", ["train", str(workdir / "first.yaml"), *quick, "--run-dir", str(run), "--overwrite"]),
        ("resume_refused", ["train", "--resume", str(run)]),
    ]:
        code, _, stderr = zoo(args, expect=(0, 2))
        checks[label] = code == 2 and holder in stderr and "Traceback" not in stderr
    (workdir / "first.hold").unlink()
    _, stderr = first.communicate(timeout=600)
    checks["holder_finished"] = first.returncode == 0 and (run / "metrics.json").is_file()
    lines = (run / "logs" / "metrics.csv").read_text().splitlines()
    checks["one_writer"] = sum(line == lines[0] for line in lines) == 1
    checks["lock_released"] = not (run / ".zoo-lock").exists()

    stale = workdir / "stale"
    killed = start(["train", str(workdir / "killed.yaml"), *quick, "--run-dir", str(stale)])
    if wait_for(workdir / "killed.reached", killed):
        killed.send_signal(signal.SIGKILL)
        killed.communicate()
        lock = json.loads((stale / ".zoo-lock").read_text())
        checks["stale_lock_left"] = lock["pid"] == killed.pid
        (workdir / "killed.hold").unlink()
        code, _, stderr = zoo(["train", "--resume", str(stale), "--plugin", str(workdir / "hold.py")], expect=(0, 2))
        checks["stale_lock_taken_over"] = code == 0 and (stale / "metrics.json").is_file()
    else:
        checks["stale_lock_left"] = checks["stale_lock_taken_over"] = False
    return {"clean": all(checks.values()), **checks}


# --- signals at every moment of an epoch -------------------------------------------------------------
MOMENTS = '''"""Written by benchmarks/fault_injection.py: a monitor that records the phases a run goes through
(``ZOO_MOMENTS_DIR``/events.log) and, with ``ZOO_MOMENT=phase:n``, pauses at the n-th moment of that phase
while ``ZOO_MOMENTS_DIR``/hold exists, having written ``ZOO_MOMENTS_DIR``/reached."""
import csv
import os
import time
from pathlib import Path

import lightning as L
import torch

from zoo.core.catalog import monitors
from zoo.training.checkpoints import RunCSVLogger

FOLDER = Path(os.environ["ZOO_MOMENTS_DIR"]) if os.environ.get("ZOO_MOMENTS_DIR") else None
PHASE, _, NTH = os.environ.get("ZOO_MOMENT", "").partition(":")
SEEN = {}


def reached(phase):
    if FOLDER is None:
        return
    SEEN[phase] = SEEN.get(phase, 0) + 1
    with open(FOLDER / "events.log", "a") as f:
        f.write(phase + "\\n")
    if phase == PHASE and SEEN[phase] == int(NTH):
        (FOLDER / "reached").write_text(f"{phase} {SEEN[phase]}")
        deadline = time.monotonic() + 120
        while (FOLDER / "hold").exists() and time.monotonic() < deadline:
            time.sleep(0.02)


if FOLDER is not None:
    _save, _writerows, _torch_save = RunCSVLogger.save, csv.DictWriter.writerows, torch.save
    _in_save = []

    def save(self):  # metrics.csv: the moment falls in the middle of writing its rows
        _in_save.append(True)
        try:
            _save(self)
        finally:
            _in_save.clear()

    def writerows(self, rows):
        rows = list(rows)
        if not _in_save or not _in_save.pop():
            return _writerows(self, rows)
        _writerows(self, rows[: len(rows) // 2])
        reached("metrics")
        return _writerows(self, rows[len(rows) // 2 :])

    def torch_save(obj, f, *args, **kwargs):  # a checkpoint: written, not yet renamed into place
        _torch_save(obj, f, *args, **kwargs)
        if isinstance(obj, dict) and "global_step" in obj and hasattr(f, "flush"):
            f.flush()
            reached("checkpoint")

    RunCSVLogger.save, csv.DictWriter.writerows, torch.save = save, writerows, torch_save


class Moments(L.Callback):
    def on_fit_start(self, trainer, pl_module):
        reached("member")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        reached("train")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            reached("validation")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        reached("test")


@monitors.register("moments")
def moments():
    """Records the run's phases and pauses at one moment of one (fault injection)."""
    return Moments()
'''
PHASES = ("metrics", "train", "validation", "checkpoint", "test")
MOMENT_SIGNALS = ("SIGKILL", "SIGTERM", "SIGINT", "SIGHUP")


def _moments_recipe(workdir: Path, name: str) -> Path:
    """The recipe (a name or file) with the moments monitor added, as a recipe file of its own."""
    (workdir / "moments.py").write_text(MOMENTS)
    base = Path(name).resolve() if name.endswith((".yaml", ".yml")) else CWD / "recipes" / f"{name}.yaml"
    path = workdir / "moments.yaml"
    path.write_text(f"base: {base}\nplugins: [{workdir / 'moments.py'}]\nmonitors: [moments]\n")
    return path


def _moments_run(args: list[str], folder: Path, moment: str = "") -> subprocess.Popen:
    return start(args, {"ZOO_MOMENTS_DIR": str(folder), **({"ZOO_MOMENT": moment} if moment else {})})


def _csv_rows(run_dir: Path) -> dict[str, list[dict[str, str]]]:
    """The rows of every metrics.csv in a run folder (an ensemble's: each member's), by its path there."""
    rows = {}
    for path in sorted(run_dir.glob("**/logs/metrics.csv")):
        with open(path, newline="") as f:
            rows[str(path.relative_to(run_dir))] = list(csv.DictReader(f))
    return rows


def _best_steps(run_dir: Path) -> dict[str, int]:
    """The step of every best.ckpt in a run folder (an ensemble's: each member's), by its path there."""
    import torch

    return {str(path.relative_to(run_dir)): torch.load(path, weights_only=True)["global_step"]
            for path in sorted(run_dir.glob("**/checkpoints/best.ckpt"))}


def _moments_reference(args: list[str], folder: Path) -> dict:
    folder.mkdir()
    began = time.perf_counter()
    proc = _moments_run([*args, "--run-dir", str(folder / "run")], folder)
    _, stderr = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"the reference run failed ({proc.returncode}):\n{stderr[-3000:]}")
    events: dict[str, int] = {}
    for line in (folder / "events.log").read_text().split():
        events[line] = events.get(line, 0) + 1
    run = folder / "run"
    return {"seconds": round(time.perf_counter() - began, 2), "metrics": final_metrics(run), "rows": _csv_rows(run),
            "best_steps": _best_steps(run), "events": events}


def _moments_trial(args: list[str], folder: Path, phase: str, name: str, reference: dict, rng: random.Random,
                   nth: int | None = None) -> dict:
    """One run stopped by signal ``name`` at a random moment of ``phase`` (the ``nth``, when given; counted from
    the last when negative), then resumed to its end."""
    folder.mkdir()
    run = folder / "run"
    first = 2 if phase == "member" else 1  # a member boundary: the start of any member but the first
    count = reference["events"].get(phase, 0)
    if nth is None:
        nth = rng.randint(first, max(first, count))
    elif nth < 0:
        nth = count + 1 + nth
    log: dict = {"phase": phase, "signal": name, "moment": nth, "of": count}
    (folder / "hold").write_text("")
    proc = _moments_run([*args, "--run-dir", str(run)], folder, f"{phase}:{nth}")
    log["reached"] = wait_for(folder / "reached", proc, timeout=1800)
    if log["reached"]:
        proc.send_signal(getattr(signal, name))
    (folder / "hold").unlink()
    _, stderr = proc.communicate(timeout=600)
    log["exit_code"] = proc.returncode
    expected = -signal.SIGKILL if name == "SIGKILL" else 128 + getattr(signal, name)
    log["exit_as_expected"] = proc.returncode == expected
    if not log["reached"] or not log["exit_as_expected"]:
        log["stderr"] = stderr[-1500:]
    log["resumed"] = log["started_over"] = 0
    # the run's recipe names the moments plugin, which zoo imports only when the user passes it
    resume = ["train", "--resume", str(run), "--plugin", str(folder.parent / "moments.py")]
    for _ in range(3):
        if (run / "metrics.json").is_file():
            break
        # zoo decides what can go on (a single run's last.ckpt; an ensemble's finished members and member
        # checkpoints); only a folder it calls too early to resume is started over
        code, _, stderr = zoo(resume, expect=(0, 1, 2))
        log["resumed"] += 1
        if code == 2 and "before its first checkpoint" in stderr:
            log["resumed"] -= 1
            log["started_over"] += 1
            code, _, stderr = zoo([*args, "--run-dir", str(run), "--overwrite"], expect=(0, 1, 2))
        if code != 0:
            log["resume_error"] = stderr[-1500:]
            break
    finished = (run / "metrics.json").is_file()
    log["identical"] = finished and final_metrics(run) == reference["metrics"]
    log["best_same"] = finished and _best_steps(run) == reference["best_steps"]
    rows = _csv_rows(run) if finished else {}
    log["csv_rows"], log["csv_whole"] = sum(map(len, rows.values())), rows == reference["rows"]
    if WANDB and finished:
        log["wandb"] = wandb_check(run)
    checks = ("reached", "exit_as_expected", "identical", "best_same", "csv_whole")
    log["clean"] = all(log[k] for k in checks) and (not WANDB or (finished and log["wandb"]["clean"]))
    return log


def case_moments(ns, recipe: list[str], workdir: Path, rng: random.Random) -> dict:
    from zoo.core.recipe import load

    name, *overrides = recipe
    train_args = ["train", str(_moments_recipe(workdir, name)), *overrides]
    resolved = load(train_args[1], overrides)
    phases = [*PHASES, *(["member"] if resolved.ensemble is not None else [])]
    groups = sorted({resolved.performance.steps_per_execution, 1}, reverse=True)  # grouped steps, and single ones
    if ns.quick:
        groups = groups[:1]  # one reference run
    references = {
        k: _moments_reference([*train_args, f"performance.steps_per_execution={k}"], workdir / f"reference-k{k}")
        for k in groups
    }
    trials = []
    for i in range(ns.runs):
        k = groups[i % len(groups)]
        phase, nth = phases[i % len(phases)], None
        if i == 0 and ns.moment:  # a trial repeated
            phase, nth = ns.moment.split(":")[0], int(ns.moment.split(":")[1])
        trial = _moments_trial([*train_args, f"performance.steps_per_execution={k}"], workdir / f"trial{i}",
                               phase, MOMENT_SIGNALS[i % len(MOMENT_SIGNALS)], references[k], rng, nth)
        trials.append({"steps_per_execution": k, **trial})
    hits: dict[str, dict[str, int]] = {p: {} for p in phases}
    for t in trials:
        hits[t["phase"]][t["signal"]] = hits[t["phase"]].get(t["signal"], 0) + t["reached"]
    return {
        "clean": all(t["clean"] for t in trials),
        "trials": len(trials),
        "clean_trials": sum(t["clean"] for t in trials),
        "identical": sum(t["identical"] for t in trials),
        "best_same": sum(t["best_same"] for t in trials),
        "csv_whole": sum(t["csv_whole"] for t in trials),
        "exit_as_expected": sum(t["exit_as_expected"] for t in trials),
        "phases": {p: sum(h.values()) for p, h in hits.items()},
        "signals": {s: sum(t["reached"] for t in trials if t["signal"] == s) for s in MOMENT_SIGNALS},
        "phase_signal": hits,
        "reference_seconds": {f"k{k}": r["seconds"] for k, r in references.items()},
        "reference_events": {f"k{k}": r["events"] for k, r in references.items()},
        "per_run": trials,
    }


CASES: dict[str, Callable[..., dict]] = {"kill9": case_kill9, "ddp-sigterm": case_ddp_sigterm, "lock": case_lock, "moments": case_moments}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", nargs="*", help="recipe and key=value overrides (default: the default recipe)")
    parser.add_argument("--case", action="append", choices=list(CASES), help="a case to run (default: all)")
    parser.add_argument("--runs", type=int, default=5, help="runs per case that repeats (default: 5)")
    parser.add_argument("--kills", type=int, default=2, help="kill9: SIGKILLs per run (default: 2)")
    parser.add_argument("--stop-within", type=float, default=20.0,
                        help="ddp-sigterm: seconds the job may take to stop after the signal (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--moment", metavar="PHASE:N",
                        help="moments: the first trial's phase and moment (N < 0 counts from the last), to repeat one")
    parser.add_argument("--quick", action="store_true", help="one or two short runs per case, a 3-epoch small MLP")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.add_argument("--wandb", action="store_true", help="log to W&B offline; kill9 checks each run's W&B history")
    ns = parser.parse_args(argv)
    global WANDB
    WANDB = ns.wandb
    recipe = ns.recipe or ["mlp-digits"]
    if ns.wandb:
        recipe = [*recipe, "logger.wandb.mode=offline"]
    if ns.quick:
        recipe, ns.runs, ns.kills = [*recipe, *QUICK], 1, 1
    rng = random.Random(ns.seed)
    cases = ns.case or list(CASES)
    results = {}
    with tempfile.TemporaryDirectory(prefix="zoo-faults-") as tmp:
        for name in cases:
            workdir = Path(tmp) / name
            workdir.mkdir()
            began = time.perf_counter()
            results[name] = CASES[name](ns, recipe, workdir, rng)
            results[name]["seconds"] = round(time.perf_counter() - began, 1)
    result = {"recipe": recipe, "quick": ns.quick, "clean": all(r["clean"] for r in results.values()), "cases": results}
    if ns.json:
        print(json.dumps(result))
    else:
        for name, r in results.items():
            print(f"{name}: {'clean' if r['clean'] else 'NOT CLEAN'} ({r['seconds']} s)")
            for key, value in r.items():
                if key not in ("clean", "seconds", "per_run", "reference_metrics"):
                    print(f"  {key}: {value}")
            for i, run in enumerate(r.get("per_run", [])):
                print(f"  run {i}: {run}")
    return 0 if result["clean"] else 1


if __name__ == "__main__":
    sys.exit(main())
