"""``zoo report``: one self-contained HTML file comparing finished runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zoo
from zoo.reporting.html_report import load_run, read_curves

TINY = ["trainer.max_epochs=2", "model.width=16", "augment=[]", "trainer.limit_train_batches=5"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    torch.set_num_threads(1)
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("runs")
    mp.chdir(root)
    mp.setenv("WANDB_MODE", "disabled")
    try:
        single = zoo.train(None, TINY, run_dir=root / "single", progress=False)
        ensemble = zoo.train(None, [*TINY, "ensemble={members: 2}"], run_dir=root / "duo", progress=False)
    finally:
        mp.undo()
    return root, Path(single.run_dir).resolve(), Path(ensemble.run_dir).resolve()


def test_report_command_writes_self_contained_html(two_runs):
    root, single, duo = two_runs
    out = root / "report.html"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "zoo", "report", str(single), str(duo), "--out", str(out)],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert single.name in text and duo.name in text
    assert "test_acc" in text and "<table>" in text
    assert f"{load_run(single).metrics['test_acc']:.4f}" in text
    assert "ensemble_acc" in text and "m1: " in text  # the ensemble's members
    pngs = re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", text)
    assert len(pngs) >= 4 + 2  # train/val loss and acc curves, one confusion matrix per run
    assert "http://" not in text and "https://" not in text
    assert "<link" not in text and "<script" not in text


def test_curves_are_per_epoch(two_runs):
    _, single, duo = two_runs
    curves = read_curves(single / "logs" / "metrics.csv")
    assert sorted(curves["val/acc"]) == [0, 1] and sorted(curves["train/loss_epoch"]) == [0, 1]
    run = load_run(duo)
    assert run.metrics["ensemble_acc"] is not None and len(run.member_curves) == 2
