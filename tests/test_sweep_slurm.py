"""zoo sweep in a SLURM batch job: the requeue signal stops the sweep as SIGTERM does and requeues the job,
and the requeued job's same ``zoo sweep FILE --sweep-dir X`` goes on with the sweep it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from test_slurm_requeue import SLURM, _in_job, _stand_in_scontrol

from zoo.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
FAULTS = ROOT / "tests" / "plugins" / "faults.py"


def test_requeue_signal_stops_the_sweep_requeues_and_the_requeued_job_goes_on(tmp_path, monkeypatch, capsys):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({
        "base": str(ROOT / "recipes" / "mlp-digits.yaml"), "plugins": [str(FAULTS)], "model": {"width": 16},
        "trainer": {"limit_train_batches": 2, "max_epochs": 2}, "performance": {"steps_per_execution": 1}}))
    signal_once = {"name": "signal_at_step", "step": 3, "marker": str(tmp_path / "fired"), "signal_name": "SIGUSR1"}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "base": "base.yaml", "sampler": "grid", "parameters": {"monitors": {"values": [[], [signal_once]]}}}))
    bin_dir, calls = _stand_in_scontrol(tmp_path)
    command = ["sweep", "sweep.yaml", "--sweep-dir", "sw", "--plugin", str(FAULTS)]
    env = {**os.environ, **SLURM, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "WANDB_MODE": "disabled"}
    stopped = subprocess.run([sys.executable, "-m", "zoo", *command], capture_output=True, text=True, cwd=tmp_path,
                             env=env, timeout=180)
    sw = tmp_path / "sw"
    assert stopped.returncode == 128 + signal.SIGUSR1, stopped.stderr
    assert calls.read_text() == "requeue 4242\n"
    assert "zoo: requeued SLURM job 4242" in stopped.stderr and "Traceback" not in stopped.stderr
    assert (sw / "s1-t01" / "metrics.json").is_file() and (sw / "s1-t02" / "checkpoints" / "last.ckpt").is_file()
    assert not (sw / "s1-t02" / "metrics.json").exists()
    first = (sw / "s1-t01" / "metrics.json").stat().st_mtime_ns
    monkeypatch.chdir(tmp_path)

    # another job, or no SLURM: the folder is refused as ever, untouched
    for job in ("4243", None):
        with monkeypatch.context() as patch:
            _in_job(patch, job)
            assert main(command) == 2
        assert "sweep folder sw already exists; continue it with zoo sweep --resume sw" in capsys.readouterr().err
    assert not (sw / "s1-t02" / "metrics.json").exists()

    # the requeued job runs the same command: the finished trial kept, the stopped one resumed, no third
    with monkeypatch.context() as patch:
        _in_job(patch, "4242")
        assert main(command) == 0
    assert "started by this SLURM job (4242), which was requeued" in capsys.readouterr().err
    assert sorted(p.name for p in sw.glob("s*-t*")) == ["s1-t01", "s1-t02"]
    assert (sw / "s1-t01" / "metrics.json").stat().st_mtime_ns == first
    rows = json.loads((sw / "results.json").read_text())["rows"]
    assert len(rows) == 2 and rows[0]["val_acc"] == rows[1]["val_acc"] and [r["epochs"] for r in rows] == [2, 2]


def test_the_requeue_signal_between_trials_stops_the_sweep_rather_than_the_process(tmp_path, monkeypatch):
    """Outside the training of a trial (here one that trains nothing) the sweep itself handles SIGUSR1, whose
    default action would end the process there and then, with no requeue."""
    from test_sweep import _no_training, write_sweep

    from zoo.tools.sweep import load_sweep, run_sweep
    from zoo.training.checkpoints import Interrupted

    _in_job(monkeypatch, "4242")
    trials: list[str] = []

    def signal_after_first(recipe, overrides, run_dir, callbacks):
        trials.append(run_dir.name)
        if len(trials) == 1:
            os.kill(os.getpid(), signal.SIGUSR1)  # arrives as the trial returns
        return _no_training(recipe, overrides, run_dir, callbacks)

    unhandled: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: unhandled.append(signum))  # not the default
    try:
        spec = load_sweep(write_sweep(tmp_path, stages=1, trials_per_stage=[3], epochs_per_stage=[1]))
        try:
            run_sweep(spec, sweep_dir=tmp_path / "sw", trial_fn=signal_after_first)
            stop = None
        except Interrupted as caught:
            stop = caught
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert unhandled == [] and stop is not None and stop.requeue and stop.exit_code == 128 + signal.SIGUSR1
    assert trials == ["s1-t01"] and stop.run_dir == tmp_path / "sw"
