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
