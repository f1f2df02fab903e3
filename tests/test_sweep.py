"""Coarse-to-fine sweeps on Optuna: samplers, grids, pruning, narrowing, edge warnings, divergence, W&B
definition, workers and joined studies, resume after a signal or kill -9, CLI."""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from zoo.core.errors import ZooError
from zoo.core.recipe import parse_override
from zoo.tools.sweep import (
    Param,
    best_trial,
    edge_warnings,
    load_sweep,
    override_text,
    parse_param,
    run_sweep,
    wandb_definition,
)

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "recipes" / "mlp-digits.yaml"
TINY = ["model.width=32", "model.depth=1", "trainer.limit_train_batches=8"]


def write_sweep(tmp_path, **extra):
    data = {
        "base": os.path.relpath(BASE, tmp_path),
        "metric": "val_acc",
        "stages": 2,
        "trials_per_stage": [4, 3],
        "epochs_per_stage": [1, 3],
        "overrides": TINY,
        "parameters": {"optimizer.lr": {"log_uniform": ["1e-5", "1e0"]}},
        **extra,
    }
    if "grid" in (data.get("sampler"), data.get("method")) and "trials_per_stage" not in extra:
        del data["trials_per_stage"]  # a grid runs its points
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_grid_points_in_log_space():
    p = Param("lr", "log_uniform", 1e-3, 1e-2)
    assert p.grid(3) == [float(v) for v in 10 ** np.linspace(-3, -2, 3)]
    assert [round(v, 4) for v in p.grid(3)] == [0.001, 0.0032, 0.01]
    assert np.allclose(p.grid(4), [0.001, 0.00215, 0.00464, 0.01], rtol=1e-2)


def _no_training(recipe, overrides, run_dir, callbacks):
    """A trial that trains nothing: its val_acc peaks at lr 1e-2 (so TPE has something to follow)."""
    lr = next(parse_override(o)[1] for o in overrides if o.startswith("optimizer.lr="))
    return {"val_acc": 1 - abs(math.log10(lr) + 2) / 10}, "ok", 0.0, 1


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_samplers_draw_inside_the_ranges_from_the_seed(tmp_path, sampler):
    extra = {"tpe_startup_trials": 3} if sampler == "tpe" else {}
    spec = load_sweep(write_sweep(tmp_path, sampler=sampler, stages=1, trials_per_stage=[8], epochs_per_stage=[1], seed=3,
                                  parameters={"optimizer.lr": {"log_uniform": [1e-4, 1e-1]},
                                              "model.activation": {"choice": ["relu", "gelu"]}}, **extra))
    first = run_sweep(spec, sweep_dir=tmp_path / "a", trial_fn=_no_training)
    again = run_sweep(spec, sweep_dir=tmp_path / "b", trial_fn=_no_training)
    lrs = sorted(r["optimizer.lr"] for r in first.rows)
    assert len(lrs) == 8 and len(set(lrs)) == 8 and 1e-4 <= lrs[0] and lrs[-1] <= 1e-1
    assert {r["model.activation"] for r in first.rows} <= {"relu", "gelu"}
    assert lrs == sorted(r["optimizer.lr"] for r in again.rows)  # the seed decides the draws


def test_a_grid_runs_each_point_once_and_method_is_the_older_name_of_sampler(tmp_path):
    path = write_sweep(tmp_path, method="grid", grid_points=3, stages=1, epochs_per_stage=[1],
                       parameters={"optimizer.lr": {"log_uniform": [0.001, 0.01]},
                                   "model.activation": {"values": ["relu", "gelu"]}})
    spec = load_sweep(path)
    assert spec.sampler == "grid"
    result = run_sweep(spec, sweep_dir=tmp_path / "out", trial_fn=_no_training)
    points = sorted((r["optimizer.lr"], r["model.activation"]) for r in result.rows)
    lrs = [float(v) for v in 10 ** np.linspace(-3, -2, 3)]
    assert points == sorted((lr, a) for lr in lrs for a in ("relu", "gelu"))


def test_narrowing_stays_inside_and_around_best():
    original = Param("lr", "log_uniform", 1e-5, 1.0)
    narrowed = original.narrow(1e-2, original)
    assert original.low <= narrowed.low < 1e-2 < narrowed.high <= original.high
    assert math.log10(narrowed.high / narrowed.low) == pytest.approx(2.5)  # sqrt of a 10^5 extent
    assert math.sqrt(narrowed.low * narrowed.high) == pytest.approx(1e-2)  # centred in log space
    again = narrowed.narrow(3e-2, original)
    assert narrowed.low <= again.low and again.high <= narrowed.high
    edge = original.narrow(2e-5, original)  # clipped to the original range
    assert edge.low == pytest.approx(1e-5) and edge.high < original.high
    lin = Param("wd", "uniform", 0.0, 0.1).narrow(0.05, Param("wd", "uniform", 0.0, 0.1))
    assert (lin.low, lin.high) == pytest.approx((0.025, 0.075))
    choice = parse_param("a", {"choice": [1, 2]}, "t")
    assert choice.narrow(1, choice) == choice


def test_edge_warning():
    params = [Param("optimizer.lr", "log_uniform", 1e-5, 1.0), Param("optimizer.weight_decay", "uniform", 0.0, 1.0)]
    notes = edge_warnings(params, {"optimizer.lr": 2e-5, "optimizer.weight_decay": 0.5})
    assert len(notes) == 1 and "optimizer.lr" in notes[0] and "lower edge" in notes[0]
    notes = edge_warnings(params, {"optimizer.lr": 1e-2, "optimizer.weight_decay": 0.95})
    assert len(notes) == 1 and "optimizer.weight_decay" in notes[0] and "upper edge" in notes[0]
    assert edge_warnings(params, {"optimizer.lr": 1e-2, "optimizer.weight_decay": 0.5}) == []


def test_override_text_round_trips():
    for value in (1e-5, 0.123456789, 3.0, 7, "gelu", True):
        keys, parsed = parse_override(override_text("a.b", value))
        assert keys == ["a", "b"] and parsed == value and type(parsed) is type(value)


def test_sweep_file_errors(tmp_path):
    with pytest.raises(ZooError, match="log_uniform"):
        load_sweep(write_sweep(tmp_path, parameters={"optimizer.lr": {"log_uniform": [0, 1]}}))
    with pytest.raises(ZooError, match="sampler: expected random | grid | tpe, got 'bayes'"):
        load_sweep(write_sweep(tmp_path, sampler="bayes"))
    with pytest.raises(ZooError, match="method: expected random | grid | tpe"):
        load_sweep(write_sweep(tmp_path, method="bayes"))
    with pytest.raises(ZooError, match="method: 'grid' contradicts sampler: 'random'"):
        load_sweep(write_sweep(tmp_path, method="grid", sampler="random"))
    with pytest.raises(ZooError, match="pruner: expected none | median | hyperband, got 'asha'"):
        load_sweep(write_sweep(tmp_path, pruner="asha"))
    with pytest.raises(ZooError, match=r"tpe_startup_trials: only with sampler: tpe \(this sweep has sampler: grid\)"):
        load_sweep(write_sweep(tmp_path, sampler="grid", tpe_startup_trials=3))
    with pytest.raises(ZooError, match="pruner_warmup_epochs: only with pruner: median"):
        load_sweep(write_sweep(tmp_path, pruner="hyperband", pruner_warmup_epochs=1))
    load_sweep(write_sweep(tmp_path, sampler="grid", pruner="median"))  # a grid with a pruner is fine
    with pytest.raises(ZooError, match=r"grid_points: only with sampler: grid \(this sweep has sampler: tpe\)"):
        load_sweep(write_sweep(tmp_path, sampler="tpe", grid_points=5))  # it would draw, not lay out, 5 points
    grid_trials = r"trials_per_stage: only with sampler: random \| tpe \(this sweep has sampler: grid\)"
    with pytest.raises(ZooError, match=grid_trials):
        load_sweep(write_sweep(tmp_path, sampler="grid", trials_per_stage=[4, 3]))  # 3 points a stage, not 4 and 3
    with pytest.raises(ZooError, match="unknown key 'trails'"):
        load_sweep(write_sweep(tmp_path, trails=3))
    with pytest.raises(ZooError, match="name: a run name is one folder name under runs/"):
        load_sweep(write_sweep(tmp_path, name="../../elsewhere"))


def test_wandb_definition(tmp_path):
    spec = load_sweep(write_sweep(tmp_path))
    d = wandb_definition(spec)
    assert d["method"] == "random" and d["program"] == "zoo"
    assert d["metric"] == {"name": "val/acc", "goal": "maximize"}
    assert d["parameters"]["optimizer.lr"] == {"distribution": "log_uniform_values", "min": 1e-5, "max": 1.0}
    assert d["parameters"]["trainer.max_epochs"] == {"value": 1}
    assert d["command"][:3] == ["${env}", "${program}", "train"] and d["command"][-1] == "${args_no_hyphens}"
    grid = wandb_definition(load_sweep(write_sweep(tmp_path, sampler="grid", grid_points=3)))
    assert grid["parameters"]["optimizer.lr"] == {"values": [float(v) for v in 10 ** np.linspace(-5, 0, 3)]}


def test_two_stage_sweep_on_digits(tmp_path):
    """The real thing, tiny: stage 2 narrows around a good lr; too large rates diverge and stop early."""
    overrides = ["model.width=64", "model.depth=2"]  # width 32 x 1 prefers rates above 0.1 over 5 epochs
    spec = load_sweep(write_sweep(tmp_path, trials_per_stage=[5, 3], epochs_per_stage=[2, 5], overrides=overrides))
    result = run_sweep(spec, sweep_dir=tmp_path / "out")
    best = result.best
    assert best["val_acc"] > 0.8
    assert 1e-4 <= best["optimizer.lr"] <= 1e-1
    s1 = [r for r in result.rows if r["stage"] == 1]
    s2 = [r for r in result.rows if r["stage"] == 2]
    assert len(s1) == 5 and len(s2) == 3
    lo1, hi1 = spec.params[0].low, spec.params[0].high
    stage2 = [r["optimizer.lr"] for r in s2]
    assert min(stage2) >= lo1 and max(stage2) <= hi1
    assert max(stage2) / min(stage2) <= 10 ** 2.5  # sampled from the narrowed range
    assert result.ranges[0] != result.ranges[1]
    vals = [r["val_acc"] for r in result.rows]
    assert vals == sorted(vals, reverse=True)
    assert (tmp_path / "out" / "results.csv").is_file()
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["best"]["run_dir"] == best["run_dir"]


def test_exploding_trial_is_marked_diverged(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, stages=1, epochs_per_stage=[2], method="grid", grid_points=1,
                                  overrides=[*TINY, "model.norm=none", "optimizer=sgd"],
                                  parameters={"optimizer.lr": {"values": [50.0]}}))
    result = run_sweep(spec, sweep_dir=tmp_path / "out")
    (row,) = result.rows
    assert row["status"] == "diverged"


def test_workers_and_a_process_that_joins_share_the_study_and_run_exactly_the_asked_trials(tmp_path, capsys):
    """zoo sweep --workers 2 in a process of its own, and a second sweep (this process) joining it on the
    same storage: four trials in all, each run once, in both folders. The first trial of each of the three
    workers waits at its start until all three got there, so each process holds one, however fast."""
    from zoo.cli.main import main

    meet = {"name": "meet_peers", "folder": str(tmp_path / "met"), "count": 3}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({
        "base": str(BASE), "plugins": [str(ROOT / "tests" / "plugins" / "rendezvous.py")], "monitors": [meet]}))
    path = write_sweep(tmp_path, base="base.yaml", stages=1, trials_per_stage=[4], epochs_per_stage=[1],
                       overrides=["model.width=16", *TINY[1:]],
                       parameters={"optimizer.lr": {"log_uniform": [1e-3, 1e-2]}})
    storage = f"journal://{tmp_path}/study.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    first = subprocess.Popen([sys.executable, "-m", "zoo", "sweep", str(path), "--sweep-dir", "a", "--workers", "2",
                              "--storage", storage, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=tmp_path, env=env)
    try:
        joined = run_sweep(load_sweep(path), sweep_dir=tmp_path / "b", storage=storage)
        out, err = first.communicate(timeout=180)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert err.count("one torch thread each") == 1
    report = json.loads(out.strip().splitlines()[-1])
    assert "optimizer.lr" in out and "epochs" in out
    runs = sorted(r["run_dir"] for r in report["rows"])
    assert len(runs) == 4 and sorted(r["run_dir"] for r in joined.rows) == runs
    assert len({r["trial"] for r in report["rows"]}) == 4
    mine, theirs = list((tmp_path / "b").glob("s1-t*")), list((tmp_path / "a").glob("s1-t*"))
    assert mine and theirs and len(mine) + len(theirs) == 4
    assert all((d / "metrics.json").is_file() for d in mine + theirs)
    record = json.loads((tmp_path / "a" / "sweep.json").read_text())
    assert record["storage"] == storage and record["studies"] == ["sweep/stage-1"]
    assert main(["sweep", str(path), "--wandb"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["parameters"]["optimizer.lr"]["distribution"] == "log_uniform_values"


def test_a_pruned_trial_is_marked_and_never_best(tmp_path):
    """The median pruner, after one finished trial, stops a rate too small to learn after its first epoch."""
    spec = load_sweep(write_sweep(tmp_path, sampler="grid", stages=1, epochs_per_stage=[3],
                                  pruner="median", pruner_startup_trials=1, pruner_warmup_epochs=0,
                                  overrides=["model.width=16", "model.depth=1", "trainer.limit_train_batches=4"],
                                  parameters={"optimizer.lr": {"values": [0.03, 1e-5]}}))
    result = run_sweep(spec, sweep_dir=tmp_path / "out")
    by_lr = {r["optimizer.lr"]: r for r in result.rows}
    assert (by_lr[0.03]["status"], by_lr[0.03]["epochs"]) == ("ok", 3)
    assert (by_lr[1e-5]["status"], by_lr[1e-5]["epochs"]) == ("pruned", 1)
    assert result.best["optimizer.lr"] == 0.03
    assert ",pruned,1," in (tmp_path / "out" / "results.csv").read_text()
    assert json.loads((Path(by_lr[1e-5]["run_dir"]) / "metrics.json").read_text())["test_acc"] >= 0  # ended normally
    rows = [{"status": "pruned", "val_acc": 0.9}, {"status": "diverged", "val_acc": 0.2}, {"status": "ok", "val_acc": 0.5}]
    assert best_trial(rows, "val_acc", "maximize")["status"] == "ok"
    assert best_trial(rows[:2], "val_acc", "maximize")["status"] == "diverged"


@pytest.mark.parametrize(("args", "problem"), [
    (["--workers", "0"], "--workers: "),
    (["--storage", "nosuch://x"], "--storage nosuch://x: Optuna cannot open it"),
    (["--storage", "sqlite:////no/such/folder/study.db"], "Optuna cannot open it: (sqlite3.OperationalError)"),
    (["--storage", "journal:///no/such/folder/study.log"], "Optuna cannot open it: [Errno 2] No such file"),
    # options of the W&B definition and of a run, each ignored by the other
    (["--wandb-out", "w.yaml"], "--wandb-out FILE writes the W&B sweep definition: it goes with --wandb"),
    (["--wandb", "--workers", "2"], "--wandb only prints the W&B sweep definition and runs nothing: drop"),
])
def test_sweep_command_line_mistakes_are_refused_before_any_folder(tmp_path, monkeypatch, capsys, args, problem):
    from zoo.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(_tiny_grid(tmp_path)), *args]) == 2
    err = capsys.readouterr().err
    assert problem in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def _tiny_grid(tmp_path, file="sweep.yaml", **extra):
    """A one-stage grid of two real trials, a second or so each."""
    data = {"base": os.path.relpath(BASE, tmp_path), "sampler": "grid", "grid_points": 2, "epochs_per_stage": 1,
            "overrides": TINY, "parameters": {"optimizer.lr": {"log_uniform": [1e-3, 1e-2]}}, **extra}
    path = tmp_path / file
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_sweep_folder_follows_the_rules_of_a_run_folder(tmp_path, monkeypatch, capsys):
    """A user's folder (their own results.csv) is refused untouched; an existing sweep is continued or
    replaced only when asked; a sweep refused at its first trial leaves no folder behind."""
    from zoo.cli.main import main
    from zoo.training.run_folder import MARKER, RunLock

    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("my own numbers\n")
    path = _tiny_grid(tmp_path, grid_points=1)  # one trial
    assert main(["sweep", str(path), "--sweep-dir", "mine"]) == 2
    assert "--sweep-dir mine: not a zoo run folder, and not empty" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["results.csv"] and (mine / "results.csv").read_text() == "my own numbers\n"

    assert main(["sweep", str(path), "--sweep-dir", "done"]) == 0
    assert (tmp_path / "done" / MARKER).is_file() and not (tmp_path / "done" / ".zoo-lock").exists()
    assert main(["sweep", str(path), "--sweep-dir", "done"]) == 2
    assert "sweep folder done already exists; continue it with zoo sweep --resume done, or replace it with --overwrite" in (
        capsys.readouterr().err)
    (tmp_path / "done" / "results.json").unlink()  # a sweep still running has written none yet
    lock = RunLock.acquire(tmp_path / "done")  # and holds the lock
    try:
        assert main(["sweep", "--resume", "done"]) == 2
        assert f"is in use by zoo (pid {os.getpid()}" in capsys.readouterr().err
    finally:
        lock.release()
    assert main(["sweep", str(path), "--sweep-dir", "done", "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "done").glob("s*-t*")) == ["s1-t01"]

    bad = _tiny_grid(tmp_path, "bad.yaml", name="bad", parameters={"model.activation": {"values": ["rleu"]}})
    assert main(["sweep", str(bad)]) == 2
    assert "unknown activations 'rleu'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # neither runs/bad/<sweep> nor runs/bad


@pytest.mark.parametrize(("extra", "problem"), [
    ({"epochs_per_stage": 0}, "epochs_per_stage: expected positive whole numbers"),
    ({"epochs_per_stage": 1.5}, "epochs_per_stage: expected positive whole numbers"),
    ({"metric": "val_accuracy"}, "metric: 'val_accuracy' is not a metric a trial reports (did you mean: val_acc"),
])
def test_sweep_mistakes_are_refused_before_any_trial(tmp_path, monkeypatch, capsys, extra, problem):
    from zoo.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(_tiny_grid(tmp_path, **extra))]) == 2
    err = capsys.readouterr().err
    assert problem in err and "stage 1" not in err  # no trial began
    assert not (tmp_path / "runs").exists()


def test_the_edge_warning_is_printed_once(tmp_path, monkeypatch, capsys):
    from zoo.cli.main import main

    monkeypatch.chdir(tmp_path)
    # the larger rate wins two epochs of this tiny model: the best value sits at the upper edge
    assert main(["sweep", str(_tiny_grid(tmp_path, parameters={"optimizer.lr": {"log_uniform": [1e-4, 1e-2]}})),
                 "--sweep-dir", "sw"]) == 0
    out, err = capsys.readouterr()
    assert (out + err).count("lies at the upper edge of the searched range") == 1


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_a_signal_stops_a_sweep_like_a_run_and_resume_runs_only_what_is_left(tmp_path, signal_name):
    """SIGTERM (or kill -9) during the second of two trials: exit 143 with that trial checkpointed; --resume
    keeps the first trial as it was, resumes the second from its checkpoint (its figures are then those of
    an uninterrupted run: the first trial's, the same recipe but for the monitor that sent the signal), and
    runs no third. After kill -9 the study still says the second trial is running: the resume, which
    holds the folder's lock, knows it is not."""
    from zoo.cli.main import main

    faults = ROOT / "tests" / "plugins" / "faults.py"
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({
        "base": str(BASE), "plugins": [str(faults)], "model": {"width": 16},
        "trainer": {"limit_train_batches": 3, "max_epochs": 4}, "performance": {"steps_per_execution": 1}}))
    fired = tmp_path / "signalled"
    signal_once = {"name": "signal_at_step", "step": 5, "marker": str(fired), "signal_name": signal_name}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "base": "base.yaml", "method": "grid", "parameters": {"monitors": {"values": [[], [signal_once]]}}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "zoo", "sweep", "sweep.yaml", "--sweep-dir", "sw"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=180)
    sw = tmp_path / "sw"
    if signal_name == "SIGTERM":
        assert proc.returncode == 143, proc.stderr
        assert f"zoo: stopped by SIGTERM at epoch 1, step 5\nzoo: continue with: zoo sweep --resume sw --plugin {faults}\n" in (
            proc.stderr)
        assert "Traceback" not in proc.stderr and not (sw / ".zoo-lock").exists()
    else:
        assert proc.returncode == -9, proc.stderr
    assert (sw / "s1-t01" / "metrics.json").is_file() and (sw / "s1-t02" / "checkpoints" / "last.ckpt").is_file()
    assert not (sw / "s1-t02" / "metrics.json").exists()
    first = (sw / "s1-t01" / "metrics.json").stat().st_mtime_ns
    started = (sw / "s1-t02" / "recipe.yaml").stat().st_mtime_ns

    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        assert main(["sweep", "--resume", "sw", "--plugin", str(faults)]) == 0
    finally:
        os.chdir(old)
    assert sorted(p.name for p in sw.glob("s*-t*")) == ["s1-t01", "s1-t02"]
    assert (sw / "s1-t01" / "metrics.json").stat().st_mtime_ns == first  # kept, not trained again
    assert (sw / "s1-t02" / "recipe.yaml").stat().st_mtime_ns == started  # resumed in its folder, not replaced
    rows = json.loads((sw / "results.json").read_text())["rows"]
    assert len(rows) == 2 and rows[0]["val_acc"] == rows[1]["val_acc"]
    assert json.loads((sw / "s1-t02" / "metrics.json").read_text())["val_acc"] == rows[0]["val_acc"]
    assert sorted(r["epochs"] for r in rows) == [4, 4]
    # the stopped trial was taken again under a new number in the study; its row keeps its folder's
    assert sorted((r["trial"], Path(r["run_dir"]).name) for r in rows) == [(1, "s1-t01"), (2, "s1-t02")]


GRID_3M = {"optimizer.lr": {"log_uniform": [1e-5, 1.0]}, "optimizer.weight_decay": {"uniform": [0, 0.1]},
           "model.depth": {"values": [1, 2, 3]}}


@pytest.mark.parametrize("extra, message", [
    # each would have filled the memory with a list, or queued trials for years
    ({"stages": 10**9, "trials_per_stage": 1, "epochs_per_stage": 1},
     "stages: expected a whole number from 1 to 100, got 1000000000"),
    ({"trials_per_stage": [10**8, 3]}, "trials: expected whole numbers from 1 to 10,000"),
    ({"sampler": "grid", "grid_points": 1000, "parameters": GRID_3M}, "a grid of 3,000,000 trials; at most 10,000"),
    ({"sampler": "grid", "grid_points": 0}, "grid_points: expected a whole number from 1 to 1000, got 0"),
    # taken as written, as recipe values are: no silent int()
    ({"sampler": "grid", "grid_points": "3"}, "grid_points: expected a whole number from 1 to 1000, got '3'"),
    ({"seed": 1.5}, "seed: expected a whole number from 0 to 4294967295, got 1.5"),
    ({"seed": -1}, "seed: expected a whole number from 0 to 4294967295, got -1"),
])
def test_a_sweep_count_out_of_bounds_or_not_a_whole_number_is_refused(tmp_path, extra, message):
    with pytest.raises(ZooError) as caught:
        load_sweep(write_sweep(tmp_path, **extra))
    assert str(caught.value).startswith(f"{tmp_path / 'sweep.yaml'}: {message}")


def test_a_trial_whose_process_died_is_failed_and_queued_again_once_its_heartbeat_stops(tmp_path, monkeypatch):
    """On a shared SQL storage, a machine that died leaves its trial running; a worker that looks after the
    grace period fails it and enqueues its parameters again, with the run folder it ran in."""
    import optuna
    from optuna.trial import TrialState

    from zoo.tools import sweep_study

    monkeypatch.setattr(sweep_study, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(sweep_study, "GRACE_SECONDS", 1)
    study = optuna.create_study(storage=sweep_study.open_storage(f"sqlite:///{tmp_path}/study.db"), study_name="s")
    trial = sweep_study.ask(study)
    lr = trial.suggest_float("optimizer.lr", 1e-3, 1e-2, log=True)
    trial.set_user_attr("folder", "/elsewhere/sw")
    trial.set_user_attr("run_name", "s1-t01")
    with sweep_study._Heartbeat(study, trial):
        pass  # its last beat: the process is gone
    sweep_study.fail_dead_trials(study)
    assert study.trials[0].state == TrialState.RUNNING  # within the grace period
    time.sleep(2.1)
    sweep_study.fail_dead_trials(study)
    died, again = study.get_trials(deepcopy=False)
    assert died.state == TrialState.FAIL and again.state == TrialState.WAITING
    assert again.system_attrs["fixed_params"] == {"optimizer.lr": lr}
    assert again.user_attrs == {"folder": "/elsewhere/sw", "run_name": "s1-t01", "rerun_of": 0}


def test_the_sweep_passes_a_workers_stop_on_and_hands_a_killed_workers_trial_back(tmp_path):
    """What the sweep process does as its workers end (stand-ins here, not trainings): a worker stopped by
    SIGTERM sent to it alone stops the others with the same signal; the running trial of a worker killed
    outright is failed and enqueued again, to go on in its run folder."""
    import signal as signals

    import optuna
    from optuna.trial import TrialState

    from zoo.tools.sweep_study import ask, open_storage
    from zoo.tools.sweep_workers import _wait

    spec = load_sweep(write_sweep(tmp_path, stages=1, trials_per_stage=[2], epochs_per_stage=[1]))
    url, folder = f"sqlite:///{tmp_path}/study.db", tmp_path / "sw"
    received, lines = [], []

    def pass_on(signum, frame):
        received.append(signum)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    procs = [subprocess.Popen(["sh", "-c", "exit 143"]), subprocess.Popen(["sleep", "60"])]
    assert _wait(procs, received, pass_on, url, spec, folder, lines.append) == [143, -signals.SIGTERM]
    assert received == [signals.SIGTERM]

    killed = subprocess.Popen(["sleep", "60"])
    study = optuna.create_study(storage=open_storage(url), study_name="sweep/stage-1")
    trial = ask(study)
    trial.suggest_float("optimizer.lr", 1e-5, 1.0, log=True)
    for key, value in {"folder": str(folder.resolve()), "run_name": "s1-t01", "pid": killed.pid}.items():
        trial.set_user_attr(key, value)
    killed.kill()
    procs = [killed]
    assert _wait(procs, [], pass_on, url, spec, folder, lines.append) == [-signals.SIGKILL]
    assert lines == [f"a worker (pid {killed.pid}) was killed by SIGKILL; 1 trial(s) it ran go to the others"]
    died, again = study.get_trials(deepcopy=False)
    assert died.state == TrialState.FAIL and again.state == TrialState.WAITING
    assert again.user_attrs["run_name"] == "s1-t01" and again.system_attrs["fixed_params"] == died.params


def test_a_sweep_with_nothing_left_to_run_says_so(tmp_path, monkeypatch, capsys):
    """The same sweep on a storage where its studies already ran their count, or --resume of a finished sweep:
    one line saying so, no folder, nothing rewritten, rather than an empty run that prints the old trials as
    if it had found them."""
    from zoo.cli.main import main

    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path, name="lr-digits", stages=2, trials_per_stage=[3, 2])
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    run_sweep(load_sweep(path), sweep_dir=tmp_path / "first", storage=storage, trial_fn=_no_training)
    assert main(["sweep", str(path), "--sweep-dir", "second", "--storage", storage]) == 2
    err = capsys.readouterr().err
    assert (f"--storage {storage}: the studies of sweep lr-digits there (lr-digits/stage-1, lr-digits/stage-2) "
            "already ran their 5 trials: nothing to run; name the sweep anew (name: in ") in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "second").exists()

    results = (tmp_path / "first" / "results.json").read_text()
    assert main(["sweep", "--resume", "first"]) == 2
    assert ("--resume first: that sweep finished (see its results.json); there is nothing to resume"
            in capsys.readouterr().err)
    assert (tmp_path / "first" / "results.json").read_text() == results
