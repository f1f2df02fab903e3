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



CSV_HEADER = "epoch,step,train/acc,train/loss_epoch,train/lr/pg1,val/acc,val/loss\n"


def _logged_run(folder: Path) -> Path:
    """A finished run folder as zoo writes it, with its files written out by hand."""
    (folder / "logs").mkdir(parents=True)
    (folder / "metrics.json").write_text('{"test_acc": 0.5, "val_acc": 0.5, "metrics": {}, "members": null}\n')
    (folder / "recipe.yaml").write_text("# resolved from recipes/mlp-digits.yaml\nmodel: {name: mlp}\n")
    (folder / "logs" / "metrics.csv").write_text(
        CSV_HEADER + ",0,,,0.002,,\n0,9,0.3,2.1,,0.4,1.9\n1,19,0.6,1.5,,0.5,1.4\n"
    )
    return folder


@pytest.mark.parametrize(
    "file, damage, message",
    [
        ("metrics.json", lambda t: t[:20], "metrics.json: not valid JSON (Unterminated string starting at: line 1, "
         "column 19): the file is cut short or damaged"),
        ("metrics.json", lambda t: "[1, 2]\n", "metrics.json: expected a JSON object of a run's results, got list"),
        ("logs/metrics.csv", lambda t: t[:-12], "metrics.csv: line 4 has 4 values for the 7 columns of the header: "
         "the file is cut short or damaged"),
        ("logs/metrics.csv", lambda t: t.replace("0.4", "0.\x004"), "metrics.csv: line 3, column val/acc: '0.\\x004' "
         "is not a number: the file is damaged"),
        ("logs/metrics.csv", lambda t: t.replace("1.9", "1.9,7"), "metrics.csv: line 3 has 8 values for the 7"),
        ("logs/metrics.csv", lambda t: "\x89PNG garbage\n", "metrics.csv: not a metrics log: its first line has no "
         "'step' column"),
        ("recipe.yaml", lambda t: t + "model: [\n", "recipe.yaml:4:1: not valid YAML"),
    ],
    ids=["json-cut", "json-list", "csv-cut", "csv-garbled", "csv-extra-value", "csv-not-csv", "yaml-garbled"],
)
def test_damaged_logs_are_named_with_what_is_wrong(tmp_path, capsys, file, damage, message):
    from zoo.cli.main import main

    run = _logged_run(tmp_path / "run")
    assert main(["report", str(run), "--no-confusion", "--out", str(tmp_path / "ok.html")]) == 0
    path = run / file
    path.write_text(damage(path.read_text()))
    capsys.readouterr()
    assert main(["report", str(run), "--no-confusion", "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"zoo: error: {path.parent}/") and message in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r.html").exists()
