"""zoo report SWEEP_DIR: a sweep's trials best first, its plots and its parameters' importance, from the
sweep folder's results.csv and sweep.json alone."""

import csv
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

from zoo.cli.main import main
from zoo.reporting.sweep_results import importance, read_sweep

PARAMS = [
    {"key": "optimizer.lr", "kind": "log_uniform", "low": 1e-4, "high": 1.0, "options": []},
    {"key": "optimizer.weight_decay", "kind": "uniform", "low": 0.0, "high": 0.1, "options": []},
    {"key": "model.width", "kind": "values", "low": None, "high": None, "options": [32, 64]},
]


def fabricate(folder: Path, trials: int = 30, params=PARAMS, goal: str = "maximize", seed: int = 0) -> Path:
    """A finished sweep's folder whose val_acc peaks at lr 1e-2 and ignores weight decay and width; one
    pruned trial logged the highest val_acc of all before it was stopped, one diverged to nan."""
    rng = np.random.default_rng(seed)
    keys = [p["key"] for p in params]
    widths = next((p["options"] for p in params if p["key"] == "model.width"), [32, 64])
    rows = []
    for t in range(1, trials + 1):
        lr = float(10 ** rng.uniform(-4, 0))
        values = {"optimizer.lr": lr, "optimizer.weight_decay": float(rng.uniform(0, 0.1)),
                  "model.width": widths[int(rng.integers(len(widths)))]}
        acc = 0.95 - 0.1 * (math.log10(lr) + 2) ** 2 + float(rng.normal(0, 0.005))
        rows.append({"trial": t, **{k: values[k] for k in keys}, "val_acc": acc, "status": "ok"})
    rows += [{"trial": trials + 1, **{k: rows[0][k] for k in keys}, "val_acc": 0.999, "status": "pruned"},
             {"trial": trials + 2, **{k: rows[-1][k] for k in keys}, "val_acc": math.nan,
              "status": "diverged"}]
    folder.mkdir(parents=True)
    with open(folder / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["stage", "trial", *keys, "val_acc", "status", "seconds", "run_dir"])
        writer.writeheader()
        writer.writerows({"stage": 1, **row, "seconds": 1.5,
                          "run_dir": str(folder / f"s1-t{row['trial']:02d}")} for row in rows)
    sweep = {"name": "lr-digits", "metric": "val_acc", "goal": goal, "params": params, "method": "random"}
    (folder / "sweep.json").write_text(json.dumps({"sweep_file": "x.yaml", "sweep": sweep, "trials": {}}))
    return folder


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """One sweep folder, reported on by the command."""
    folder = fabricate(tmp_path_factory.mktemp("sweep") / "lr-digits")
    assert main(["report", str(folder)]) == 0
    return folder


def test_importance_ranks_the_parameter_the_metric_depends_on(reported):
    found = json.loads((reported / "importance.json").read_text())
    ranked = list(found["importances"])
    assert ranked[0] == "optimizer.lr", found
    assert found["importances"]["optimizer.lr"] > 0.8
    assert max(found["importances"][k] for k in ranked[1:]) < 0.1
    assert found["trials"] == 30 and found["goal"] == "maximize" and found["note"] is None


def test_the_report_has_the_table_best_first_and_the_plots_embedded(reported):
    page = (reported / "report.html").read_text()
    assert len(re.findall(r"<img alt='[^']+' src='data:image/png;base64,[A-Za-z0-9+/=]{1000,}'>", page)) == 2
    assert "src='http" not in page and "<script" not in page
    table = page[page.index("Trials, best first"):]
    runs = re.findall(r"<td title='[^']*'>(s1-t\d+)</td>", table)
    results = read_sweep(reported)
    assert len(runs) == 32 and runs == [Path(r["run_dir"]).name for r in results.rows]
    accuracies = [r["val_acc"] for r in results.rows[:30]]
    assert accuracies == sorted(accuracies, reverse=True) and results.best["status"] == "ok"
    # the pruned trial's 0.999 is the highest number of all, but it is neither the best nor ranked above
    # a finished trial; the best row is the best finished trial's
    best_row = re.search(r"<tr class='best'>(.*?)</tr>", table).group(1)
    assert f">{Path(results.best['run_dir']).name}<" in best_row and "ok &#9733; best" in best_row
    assert re.search(r"<tr class='stopped'><td class='num'>31</td>.*?pruned.*?s1-t31</td></tr>", table)
    assert page.count("&#9733; best") == 1


def test_minimize_ranks_lowest_first_and_importance_needs_two_trials_two_parameters_and_a_spread(tmp_path):
    low_first = read_sweep(fabricate(tmp_path / "min", trials=6, goal="minimize"))
    finished = [r["val_acc"] for r in low_first.rows if r["status"] == "ok"]
    assert finished == sorted(finished) and low_first.best["val_acc"] == min(finished)
    assert "at least 2" in importance(read_sweep(fabricate(tmp_path / "one", trials=1))).note
    same = read_sweep(fabricate(tmp_path / "same", trials=4))
    for row in same.rows:
        row["val_acc"] = 0.5
    assert "every finished trial has the same val_acc" in importance(same).note
    alone = importance(read_sweep(fabricate(tmp_path / "lr", trials=6, params=PARAMS[:1])))
    assert alone.values == {} and "one parameter was searched" in alone.note
    assert main(["report", str(tmp_path / "lr"), "--out", str(tmp_path / "lr.html")]) == 0
    assert "No importance: one parameter was searched" in (tmp_path / "lr.html").read_text()
    assert json.loads((tmp_path / "importance.json").read_text())["importances"] == {}
    assert not (tmp_path / "lr" / "report.html").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "results.csv").unlink(), "no results.csv: the sweep has not finished"),
    (lambda f: (f / "results.csv").write_text((f / "results.csv").read_text().rsplit(",diverged", 1)[0]),
     "results.csv: line 6 does not have the header's 9 columns"),
    (lambda f: (f / "results.csv").write_text((f / "results.csv").read_text().replace("val_acc", "acc")),
     "results.csv: no column 'val_acc'"),
    (lambda f: (f / "sweep.json").write_text("{"), "sweep.json: not valid JSON"),
], ids=["no-results", "cut-short", "no-metric-column", "damaged-record"])
def test_a_damaged_sweep_folder_is_one_line_and_nothing_written(tmp_path, capsys, damage, message):
    folder = fabricate(tmp_path / "sweep", trials=3)
    damage(folder)
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"zoo: error: {folder}") and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (folder / "report.html").exists() and not (folder / "importance.json").exists()


def test_a_folder_that_is_neither_a_run_nor_a_sweep_says_what_it_is(tmp_path, capsys):
    sweep = fabricate(tmp_path / "lr-digits" / "20260101-120000-ab12", trials=3)
    (tmp_path / "stopped").mkdir()
    (tmp_path / "stopped" / "recipe.yaml").write_text("{}\n")
    (tmp_path / "empty").mkdir()
    told = {
        "lr-digits": f"holds sweep folders, and is not one: report one of them (zoo report {sweep})",
        "stopped": "no metrics.json: the run has not finished (zoo train --resume continues it)",
        "empty": "no metrics.json and no sweep.json: neither a finished run folder nor a sweep folder",
        "missing": "no such folder",
    }
    for name, message in told.items():
        assert main(["report", str(tmp_path / name), "--out", str(tmp_path / "r.html")]) == 2
        err = capsys.readouterr().err
        assert err.strip() == f"zoo: error: {tmp_path / name}: {message}", err
    assert not (tmp_path / "r.html").exists()


def test_an_out_path_zoo_report_cannot_write_is_one_line_before_anything_is_written(tmp_path, capsys):
    sweep = fabricate(tmp_path / "sweep", trials=3)
    missing = tmp_path / "no-such"
    cases = [([str(sweep), "--out", str(missing / "lr.html")], f"no folder {missing}"),
             ([str(sweep), "--out", str(sweep)], f"a directory; name the HTML file to write, e.g. --out "
                                                 f"{sweep / 'report.html'}"),
             # a run report is checked the same way, before its run folders are read
             ([str(tmp_path / "run"), "--out", str(tmp_path / "no-such" / "r.html")], "no folder")]
    for args, message in cases:
        assert main(["report", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"zoo: error: --out {args[-1]}: ") and message in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "--debug" not in err, err
    assert not (tmp_path / "no-such").exists() and not (tmp_path / "importance.json").exists()
    assert not (sweep / "report.html").exists() and not (sweep / "importance.json").exists()


def test_parallel_coordinates_ticks_are_round_values_powers_of_ten_on_a_log_axis():
    from zoo.reporting.sweep_report import axis_ticks
    from zoo.reporting.sweep_results import SearchedParam

    lr = axis_ticks(SearchedParam("optimizer.lr", "log_uniform", 1e-5, 1.0))
    assert [label for _, label in lr] == ["1e-05", "0.0001", "0.001", "0.01", "0.1", "1"]
    assert [place for place, _ in lr] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1])
    # a log range that does not span a whole decade has its ends as ticks
    assert [label for _, label in axis_ticks(SearchedParam("lr", "log_uniform", 2e-3, 8e-3))] == ["0.002", "0.008"]
    dropout = axis_ticks(SearchedParam("model.dropout", "uniform", 0.0, 0.5))
    assert [label for _, label in dropout] == ["0", "0.1", "0.2", "0.3", "0.4", "0.5"]
    assert axis_ticks(SearchedParam("model.depth", "choice", options=(1, 2, 3))) == [(0, "1"), (0.5, "2"), (1, "3")]


def test_a_sweep_still_running_is_reported_as_running_not_stopped(tmp_path, capsys):
    from zoo.training.run_folder import RunLock

    folder = fabricate(tmp_path / "sweep", trials=3)
    (folder / "results.csv").unlink()  # written only as the sweep ends
    lock = RunLock.acquire(folder)  # the sweep's process holds its folder's lock
    try:
        assert main(["report", str(folder)]) == 2
    finally:
        lock.release()
    err = capsys.readouterr().err
    assert f"{folder}: the sweep is still running, in zoo (pid {os.getpid()} on" in err, err
    assert "report it once it has finished" in err and "--resume" not in err, err
    assert len(err.strip().splitlines()) == 1 and not (folder / "report.html").exists()


def test_choices_of_any_kind_are_ranked(tmp_path):
    """Optuna takes only plain values as choices; a choice of lists (layer widths) is ranked all the same."""
    lists = [*PARAMS[:2], {"key": "model.width", "kind": "choice", "low": None, "high": None,
                           "options": [[32, 32], [64], None]}]
    found = importance(read_sweep(fabricate(tmp_path / "lists", trials=12, params=lists)))
    assert found.trials == 12 and next(iter(found.values)) == "optimizer.lr" and set(found.values) == {
        "optimizer.lr", "optimizer.weight_decay", "model.width"}
