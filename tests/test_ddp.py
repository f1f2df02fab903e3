"""DDP on the CPU: two gloo processes from the CLI, one run folder and one report, every test sample once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from zoo.core.recipe import load
from zoo.monitoring.wandb_offline import offline_run_dirs, read_offline_run

REPO = Path(__file__).resolve().parent.parent
FAULTS = REPO / "tests" / "plugins" / "faults.py"
DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
# 629 training images per rank in batches of 32: 20 steps an epoch, 40 in all
DDP_RUN = [*DDP, "trainer.max_epochs=2", "data.batch_size=32"]


def zoo(*args: str, cwd: Path, timeout: float = 300, wandb: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("ZOO_RUN_DIR", None)
    if wandb:
        env.pop("WANDB_MODE", None)  # tests turn W&B off by default; here it runs offline, as for a user
        env.pop("WANDB_SERVICE", None)  # and with a wandb service of its own, as for a user
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """One uninterrupted 2-process run (W&B offline): what the tests below check and compare against."""
    tmp_path = tmp_path_factory.mktemp("ddp")
    out = zoo("train", str(REPO / "recipes" / "mlp-digits.yaml"), *DDP_RUN, "--json", cwd=tmp_path, wandb=True)
    return out, tmp_path


def test_two_process_ddp_reports_once_like_a_single_process_run(ddp_run):
    out, tmp_path = ddp_run
    overrides = DDP_RUN
    assert out.returncode == 0, out.stderr[-3000:]
    json_lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(json_lines) == 1  # rank 1 trains too, but only rank 0 reports
    summary = json.loads(json_lines[0])
    assert summary["world_size"] == 2 and 0.8 < summary["test_acc"] <= 1
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [Path(summary["run_dir"]).name]
    # the sharded test pass scored each of the 360 test images exactly once: one process agrees exactly
    again = zoo("eval", summary["run_dir"], "--json", cwd=tmp_path)
    report = json.loads(again.stdout.strip().splitlines()[-1])
    assert report["samples"] == 360 and report["acc"] == summary["test_acc"]
    # one W&B run for the job, not one per process, holding the resolved recipe and the test metrics
    run_dir = tmp_path / summary["run_dir"]
    assert len(offline_run_dirs(run_dir)) == 1
    run = read_offline_run(run_dir)
    assert {k: v for k, v in run.config.items() if k != "run"} == load(
        REPO / "recipes" / "mlp-digits.yaml", overrides).to_dict()
    assert run.config["run"]["world_size"] == 2
    assert run.summary["test/acc"] == summary["test_acc"]
    assert out.stderr.count("wandb sync") == 1


KILLER = """
    import os, signal
    import lightning as L
    from zoo import monitors

    class DieAt(L.Callback):
        def __init__(self, rank, step):
            self.rank, self.step = rank, step

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_rank == self.rank and trainer.global_step == self.step:
                os.kill(os.getpid(), signal.SIGKILL)

    @monitors.register("die_at_step")
    def die_at_step(*, rank: int = 1, step: int = 5):
        '''Test helper: SIGKILL this process when it is the given rank at the given step.'''
        return DieAt(rank, step)
"""


def test_a_killed_worker_ends_the_job_with_an_error_within_a_minute(tmp_path):
    (tmp_path / "killer.py").write_text(textwrap.dedent(KILLER))
    (tmp_path / "r.yaml").write_text(
        f"base: {REPO / 'recipes' / 'mlp-digits.yaml'}\nplugins: [killer.py]\n"
        "monitors: [{name: die_at_step, rank: 1, step: 5}]\ntrainer: {max_epochs: 200}\n"
    )
    start = time.monotonic()
    out = zoo("train", str(tmp_path / "r.yaml"), *DDP, cwd=tmp_path, timeout=120)
    assert out.returncode == 2 and "zoo: error: " in out.stderr
    assert time.monotonic() - start < 60
    assert not (tmp_path / "runs").exists()  # it died before its first checkpoint: nothing to resume, nothing kept


def test_sync_batchnorm_on_cpu_is_refused_clearly(tmp_path):
    out = zoo("train", str(REPO / "recipes" / "mlp-digits.yaml"), "trainer.sync_batchnorm=true", cwd=tmp_path)
    assert out.returncode == 2 and "SyncBatchNorm runs only on CUDA" in out.stderr and "Traceback" not in out.stderr
    out = zoo("train", str(REPO / "recipes" / "mlp-digits.yaml"), "trainer.accelerator=gpu", cwd=tmp_path)
    assert out.returncode == 2 and "no CUDA device" in out.stderr and "Traceback" not in out.stderr


def _alive_with(text: str) -> list[int]:
    """Processes whose command line holds ``text`` (a run folder's path: every rank of that job)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def test_sigterm_to_one_rank_stops_every_rank_at_one_step_and_resumes_exactly(tmp_path, ddp_run):
    """SIGTERM to one process of a 2-process job, as a scheduler or ``kill PID`` sends it: first to the
    worker (rank 1) alone, then, after a resume, to the launching process (rank 0) alone. Each time both
    ranks stop at the same step within seconds, exit 143, and last.ckpt holds that step; the twice
    resumed run ends exactly where the uninterrupted one does."""
    reference = json.loads(ddp_run[0].stdout.strip().splitlines()[-1])["metrics"]
    run = tmp_path / "run"
    (tmp_path / "r.yaml").write_text(
        f"base: {REPO / 'recipes' / 'mlp-digits.yaml'}\nplugins: [{FAULTS}]\nmonitors:\n"
        f"  - {{name: signal_at_step, step: 3, rank: 1, signal_name: SIGTERM, marker: {tmp_path / 'to-rank-1'}}}\n"
        f"  - {{name: signal_at_step, step: 23, rank: 0, signal_name: SIGTERM, marker: {tmp_path / 'to-rank-0'}}}\n"
    )
    resume = ("train", "--resume", str(run), "--plugin", str(FAULTS))  # its recipe names the plugin
    attempts = [("train", str(tmp_path / "r.yaml"), *DDP_RUN, "--run-dir", str(run)), resume]
    # the ranks agree on stopping every 10 steps: a signal after step 3 stops both after step 10 (mid-epoch)
    for args, marker, stopped_at in zip(attempts, ("to-rank-1", "to-rank-0"), (10, 30)):
        out = zoo(*args, cwd=tmp_path, timeout=300)
        ended = time.time()
        assert out.returncode == 143, out.stderr[-3000:]
        assert out.stderr.count(f"zoo: stopped by SIGTERM at epoch {stopped_at // 20}, step {stopped_at}") == 1
        assert f"continue with: zoo train --resume {run}" in out.stderr and "Traceback" not in out.stderr
        sent = float((tmp_path / marker).read_text().split()[1])
        assert ended - sent < 20  # seconds, start-up of nothing included: it stops, it does not hang
        assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == stopped_at
        deadline = time.monotonic() + 10
        while _alive_with(str(run)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive_with(str(run))  # no rank left behind
    done = zoo(*resume, "--json", cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["metrics"] == reference
