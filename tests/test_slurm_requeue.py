"""SLURM batch jobs: the requeue signal checkpoints the run and requeues the job, and the requeued job's same
``zoo train RECIPE --run-dir X`` goes on with the run, to the figures of a run that was never stopped."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from run_stops import one_torch_thread, train_with_faults

from zoo.cli.main import main
from zoo.monitoring.wandb_logging import read_run_id
from zoo.monitoring.wandb_offline import offline_run_dirs
from zoo.training import slurm
from zoo.training.run import train

# what Lightning's SLURMEnvironment.detect() and its ranks read in a one-task batch job
SLURM = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
         "SLURM_NODEID": "0", "SLURM_JOB_NAME": "digits"}
# 1257 training images in batches of 128: 10 steps an epoch, 30 in all; a stop at any step
OVERRIDES = ["trainer.max_epochs=3", "model.width=16", "data.batch_size=128", "performance.steps_per_execution=1"]


def _stand_in_scontrol(tmp_path: Path, exit_code: int = 0) -> tuple[Path, Path]:
    """A folder holding an ``scontrol`` that records its arguments (one call a line) and exits ``exit_code``;
    the folder and the record."""
    folder, calls = tmp_path / "bin", tmp_path / "scontrol-calls"
    folder.mkdir()
    script = folder / "scontrol"
    refusal = 'echo "scontrol: error: requeue refused" >&2\n' if exit_code else ""
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n{refusal}exit {exit_code}\n')
    script.chmod(0o755)
    return folder, calls


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "logs" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _in_job(monkeypatch, job: str | None) -> None:
    for key, value in SLURM.items():
        monkeypatch.setenv(key, value)
    if job is None:
        for key in SLURM:
            monkeypatch.delenv(key)
    else:
        monkeypatch.setenv("SLURM_JOB_ID", job)


def test_requeue_signal_checkpoints_requeues_and_the_requeued_job_goes_on(tmp_path, monkeypatch, capsys):
    run, fired = tmp_path / "run", tmp_path / "fired"
    bin_dir, calls = _stand_in_scontrol(tmp_path)
    body = f"monitors:\n  - {{name: signal_at_step, step: 14, marker: {fired}, signal_name: SIGUSR1}}\n"
    env = {**SLURM, "PATH": f"{bin_dir}:{os.environ['PATH']}", "WANDB_MODE": "offline",
           "WANDB_SILENT": "true"}
    with one_torch_thread():
        stopped = train_with_faults(tmp_path, body, OVERRIDES, run, env=env)
        # the job's first sitting: stopped after step 14, its exact-resume checkpoint written, the job requeued
        assert stopped.returncode == 128 + signal.SIGUSR1, stopped.stderr
        assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 14
        assert calls.read_text() == "requeue 4242\n"
        assert "zoo: requeued SLURM job 4242" in stopped.stderr
        assert not list(run.glob("hpc_ckpt_*"))  # Lightning's own mid-step checkpoint is not written
        first_id = read_run_id(run)
        assert first_id
        recipe = tmp_path / "faulted.yaml"
        command = ["train", str(recipe), *OVERRIDES, "--run-dir", str(run), "--json"]

        # the same folder named by another job, or outside SLURM: refused as ever, the folder untouched
        marker = (run / ".zoo-run").read_text()
        for job in ("4243", None):
            with monkeypatch.context() as patch:
                _in_job(patch, job)
                assert main(command) == 2
            assert "already exists; continue it with --resume" in capsys.readouterr().err
        assert (run / ".zoo-run").read_text() == marker and json.loads(marker)["slurm_job"] == "4242"
        # this job, with the recipe edited meanwhile: refused, naming the change, rather than going on with another
        with monkeypatch.context() as patch:
            _in_job(patch, "4242")
            assert main([*command, "model.width=32"]) == 2
        err = capsys.readouterr().err
        assert "SLURM job 4242 started this run with another recipe (model.width: 16 -> 32)" in err, err

        # a run never stopped, of the same recipe (its signal already fired), for the figures to reach
        reference = train(recipe, OVERRIDES, run_dir=tmp_path / "reference", progress=False)

        # the requeued job runs the same command again: it goes on with the run, the same W&B run included
        monkeypatch.delenv("WANDB_MODE", raising=False)
        monkeypatch.setenv("WANDB_SILENT", "true")
        with monkeypatch.context() as patch:
            _in_job(patch, "4242")
            assert main(command) == 0
    out, err = capsys.readouterr()
    assert "started by this SLURM job (4242), which was requeued: going on from its last checkpoint" in err
    assert json.loads(out.strip().splitlines()[-1])["metrics"] == reference.metrics
    assert _rows(run) == _rows(tmp_path / "reference")
    assert read_run_id(run) == first_id
    sittings = offline_run_dirs(run)
    assert len(sittings) == 2 and all(f.name.endswith(first_id) for f in sittings)
    # once finished, the run is not gone on with again: the same command is refused as ever
    with monkeypatch.context() as patch:
        _in_job(patch, "4242")
        assert main(command) == 2
    assert "already exists; continue it with --resume" in capsys.readouterr().err


def test_a_failed_requeue_is_one_line(tmp_path, monkeypatch):
    bin_dir, calls = _stand_in_scontrol(tmp_path, exit_code=1)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert slurm.requeue("4242") == "scontrol requeue 4242 exited with 1: scontrol: error: requeue refused"
    assert calls.read_text() == "requeue 4242\n"
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert slurm.requeue("4242") == "scontrol is not on PATH"


@pytest.mark.parametrize(
    ("variables", "job"),
    [
        ({}, "4242"),
        ({"SLURM_ARRAY_JOB_ID": "4240", "SLURM_ARRAY_TASK_ID": "2"}, "4240_2"),  # an array task, as scontrol names it
        ({"SLURM_JOB_NAME": "interactive"}, None),  # srun --job-name=interactive: not a batch job, as for Lightning
        ({"SLURM_JOB_NAME": "bash"}, None),
    ],
)
def test_which_slurm_job_is_requeued(monkeypatch, variables, job):
    _in_job(monkeypatch, "4242")
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    assert slurm.batch_job() == job


def test_a_batch_job_without_run_dir_is_told_a_requeue_starts_a_new_run(tmp_path, monkeypatch, capsys):
    import zoo.training.run as run_module
    from zoo.core.errors import ZooError

    def refused(*args, **kwargs):
        raise ZooError("refused here, before any folder is made")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run_module, "prepare_fit", refused)
    _in_job(monkeypatch, "4242")
    assert main(["train", "mlp-digits"]) == 2
    err = capsys.readouterr().err
    assert "in a SLURM batch job without --run-dir: if the job is requeued, it starts a new run" in err
    assert not (tmp_path / "runs").exists()
