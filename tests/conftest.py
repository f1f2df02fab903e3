"""Test-wide settings, and running a benchmark script the way its users do."""

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
