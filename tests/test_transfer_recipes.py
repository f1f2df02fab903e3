"""The transfer recipes: two halves of CIFAR-10's classes, and a fine-tune that differs from its scratch
baseline only in the weights it starts from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zoo.core.recipe import load

FOLDER = Path(__file__).resolve().parent.parent / "recipes" / "transfer"
RECIPES = sorted(FOLDER.glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_transfer_recipe_says_how_to_run_it_and_what_it_reached(path):
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert path.read_text().startswith("#")
    assert any(f"zoo train recipes/transfer/{path.name}" in line for line in header)
    assert any("reached" in line for line in header)


def test_pretraining_and_target_classes_are_the_two_halves_of_cifar10():
    first, scratch, finetune = (load(FOLDER / f"cifar10-{n}.yaml") for n in ("first5", "last5-scratch", "last5-finetune"))
    assert first.data["classes"] == ["airplane", "automobile", "bird", "cat", "deer"]
    assert scratch.data["classes"] == ["dog", "frog", "horse", "ship", "truck"]
    assert first.data["limit_per_class"] is None
    assert scratch.data["limit_per_class"] == 120 and scratch.data["limit_parts"] == ["train"]
    # the same images, split alike, and the same budget: only the starting weights differ
    for section in ("data", "model", "optimizer", "schedule", "augment", "trainer", "ema", "tta"):
        assert getattr(finetune, section) == getattr(scratch, section), section


def _transfer_benchmark(monkeypatch):
    import importlib

    monkeypatch.syspath_prepend(str(FOLDER.parent.parent / "benchmarks"))
    return importlib.import_module("transfer")


def test_transfer_benchmark_reuses_finished_runs_and_compares_per_seed(monkeypatch, tmp_path, capsys):
    bench = _transfer_benchmark(monkeypatch)
    for arm, accs in {"scratch": [0.70, 0.74], "finetune": [0.88, 0.86]}.items():
        for seed, acc in enumerate(accs):
            (tmp_path / arm / f"seed{seed}").mkdir(parents=True)
            summary = {"test_acc": acc, "val_acc": acc, "seconds": 10.0 + seed}
            (tmp_path / arm / f"seed{seed}" / "metrics.json").write_text(json.dumps(summary))
    (tmp_path / "scratch" / "seed2").mkdir()  # a run stopped before it finished: trained again

    def train_once(recipe, overrides, seed, runs, threads):
        return {"summary": {"test_acc": 0.5, "val_acc": 0.5}, "wall_s": 1.0, "load": [0, 0], "trained": recipe}

    monkeypatch.setattr(bench, "train_once", train_once)
    rows = []
    for seed in (0, 1):
        row = {"seed": seed}
        for arm, recipe in bench.ARMS.items():
            done = bench.run_or_reuse(recipe, [], seed, tmp_path / arm, None)
            assert done["reused"] and done["wall_s"] == 10.0 + seed
            row[arm] = {"test_acc": done["summary"]["test_acc"]}
        rows.append(row)
    again = bench.run_or_reuse(bench.ARMS["scratch"], [], 2, tmp_path / "scratch", None)
    assert not again["reused"] and again["trained"].endswith("cifar10-last5-scratch.yaml")
    summary = bench.summarize(rows)
    assert summary["scratch_test_acc"]["mean"] == 0.72 and summary["finetune_test_acc"]["mean"] == 0.87
    assert summary["gain_points"]["per_seed"] == [18.0, 12.0] and summary["gain_points"]["mean"] == 15.0
