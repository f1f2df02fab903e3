"""Helpers for tests that stop runs and resume them: identical arithmetic in every process, and a callback
in every Trainer zoo makes (where a test stops the run)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch

import zoo.training.fit as training

ROOT = Path(__file__).resolve().parents[1]
FAULTS = ROOT / "tests" / "plugins" / "faults.py"  # monitors that signal or crash a run at a step


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """One torch thread here and in the subprocesses started meanwhile: in-process runs and subprocesses
    must sum in the same order to give identical figures, whatever thread count earlier tests left behind."""
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp


class CrashAt(L.Callback):
    """Dies after optimizer step ``step`` the way a killed process does: no handler, no cleanup."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise SystemExit("simulated kill")


def with_callback(monkeypatch, callback) -> None:
    """Every Trainer zoo makes while ``monkeypatch`` holds gets ``callback`` too."""
    make = training.make_trainer

    def patched(*args, **kwargs):
        kwargs["extra_callbacks"] = [*(kwargs.get("extra_callbacks") or []), callback]
        return make(*args, **kwargs)

    monkeypatch.setattr(training, "make_trainer", patched)


def train_with_faults(
    tmp_path: Path, recipe_body: str, overrides: list[str], run: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``zoo train`` in a process of its own, of mlp-digits with the faults plugin and ``recipe_body`` (YAML
    lines: the monitor that stops it) on top, in ``run``; W&B off unless ``env`` (more environment variables)
    says otherwise. The recipe is ``tmp_path/faulted.yaml``."""
    recipe = tmp_path / "faulted.yaml"
    recipe.write_text(f"base: {ROOT / 'recipes' / 'mlp-digits.yaml'}\nplugins: [{FAULTS}]\n{recipe_body}")
    return subprocess.run(
        [sys.executable, "-m", "zoo", "train", str(recipe), *overrides, "--run-dir", str(run)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "WANDB_MODE": "disabled", **(env or {})},
    )
