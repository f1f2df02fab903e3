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
from zoo.reporting.html_report import curve_lines, load_run, rate_lines, read_curves, read_rates

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
    # the ensemble's members, each in a row of its own under the ensemble
    duo_metrics = load_run(duo).metrics
    assert "ensemble of 2: mean" in text
    for member in duo_metrics["members"]:
        assert f"&#8627; m{member['member']}</td><td>seed {member['seed']}</td>" in text
        assert f"{member['test_acc']:.4f}" in text
    pngs = re.findall(r"data:image/png;base64,[A-Za-z0-9+/=]+", text)
    assert len(pngs) == 4 + 1 + 2  # train/val loss and acc curves, the learning rate, a confusion matrix per run
    assert "learning rate per optimizer step" in text
    assert "http://" not in text and "https://" not in text
    assert "<link" not in text and "<script" not in text


def test_curves_are_per_epoch(two_runs):
    _, single, duo = two_runs
    curves = read_curves(single / "logs" / "metrics.csv")
    assert sorted(curves["val/acc"]) == [0, 1] and sorted(curves["train/loss_epoch"]) == [0, 1]
    run = load_run(duo)
    assert run.metrics["ensemble_acc"] is not None and len(run.member_curves) == 2


def test_an_ensemble_is_drawn_with_its_members_and_the_learning_rate_per_step(two_runs):
    _, single, duo = two_runs
    runs = [load_run(single), load_run(duo)]
    lines, levels = curve_lines(runs, "val/acc")
    assert [label for label, _, _ in lines] == ["single", "duo m0", "duo m1"]
    assert levels == [(f"duo ensemble ({runs[1].metrics['val_acc']:.4f})", runs[1].metrics["val_acc"])]
    assert curve_lines(runs, "val/loss")[1] == []  # the level is the ensemble's accuracy alone
    rates = rate_lines(runs)
    # AdamW's two groups follow one schedule: one line a run; the ensemble's from its (identical) members
    assert [label for label, _, _ in rates] == ["single", "duo (members)"]
    assert all(0 < v <= 0.002 for _, points, _ in rates for v in points.values())
    assert rates[0][1] == read_rates(single / "logs" / "metrics.csv")["train/lr/pg1"]

