"""Test-wide settings; running a benchmark script the way its users do; what W&B wrote, checked."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs in tests write no W&B files unless a test asks for them (tests/test_wandb.py does, offline).
os.environ.setdefault("WANDB_MODE", "disabled")


def _run_benchmark(script: str, *args: str, timeout: int = 300) -> dict:
    """Runs ``benchmarks/<script>`` with ``args``; its exit code must be 0, and its last stdout line is the JSON."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        check=False, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:] or done.stdout[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def run_benchmark():
    return _run_benchmark


def _would_sync(path: Path) -> list[Path]:
    """The .wandb files ``wandb sync PATH`` would upload, asked of wandb itself (``--dry-run`` needs no
    network or login), each resolved."""
    cli = "import sys; from wandb.cli.cli import cli; sys.exit(cli())"
    done = subprocess.run([sys.executable, "-c", cli, "sync", "--dry-run", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    listed = [line.split()[-1] for line in done.stderr.splitlines() if line.rstrip().endswith(".wandb")]
    return sorted(Path(name).resolve() for name in listed)


@pytest.fixture
def would_sync():
    return _would_sync


def _wandb_whole_and_once(run_dir: Path, wandb_dir: Path | None = None) -> None:
    """Fails unless the W&B run of a run folder, read back from all its sittings' .wandb files (under
    ``wandb_dir``, by default the run folder's own wandb/), holds every value its logs/metrics.csv holds
    (less the best checkpoint's evaluation after training, which goes to the summary), each once."""
    from zoo.monitoring.wandb_logging import read_run_id
    from zoo.monitoring.wandb_offline import (
        BOOKKEEPING,
        merged_history,
        read_run_file,
        run_file,
        sitting_dirs,
    )

    folders = sitting_dirs(wandb_dir or run_dir / "wandb", read_run_id(run_dir))
    held: dict[tuple[int, str], object] = {}
    for row in merged_history([read_run_file(run_file(f)) for f in folders]):
        for key, value in row.items():
            if key not in BOOKKEEPING:
                cell = (row["trainer/global_step"], key)
                assert cell not in held, f"{cell} logged twice"
                held[cell] = value
    with open(run_dir / "logs" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    trained = max(int(r["epoch"]) for r in rows if r.get("train/loss_epoch"))
    logged = {
        (int(r["step"]), k): float(v)
        for r in rows if not r.get("epoch") or int(r["epoch"]) <= trained
        for k, v in r.items() if k != "step" and v != ""
    }
    assert logged
    keys = {k for _, k in logged}
    assert {cell: v for cell, v in held.items() if cell[1] in keys} == pytest.approx(logged)


@pytest.fixture
def wandb_whole_and_once():
    return _wandb_whole_and_once


@pytest.fixture
def full_disk(monkeypatch):
    """A disk that is full: making a written file durable (os.fsync, where delayed allocation reports a
    full disk) fails with ENOSPC. Folders still sync, as they do on a full disk."""
    import errno

    real_fsync = os.fsync

    def full(fd):
        if os.path.isfile(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
