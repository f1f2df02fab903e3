"""The learning-rate range test: sensible suggestions, early stop on explosion, plot, --write, CLI."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from zoo.tools.lr_find import lr_find, plot, suggest, write_recipe

torch.set_num_threads(1)
TINY = ["model.width=32", "model.depth=1"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_suggestion_in_sensible_range(optimizer):
    result = lr_find("mlp-digits", [*TINY, f"optimizer={optimizer}"], steps=80)
    assert 1e-4 <= result.suggestion <= 1.0
    assert result.min_lr_div10 <= 1.0
    assert result.lrs[0] == pytest.approx(1e-6)
    assert all(b > a for a, b in zip(result.lrs, result.lrs[1:]))  # exponential, increasing


def test_stops_early_when_loss_explodes():
    # no batch norm and plain SGD: rates up to 100 blow the loss up well before the end
    result = lr_find("mlp-digits", [*TINY, "model.norm=none", "optimizer=sgd"], min_lr=1e-3, max_lr=1e3, steps=80)
    assert result.stopped_early
    assert result.steps_run < 80
    last = result.smoothed[-1]
    assert not math.isfinite(last) or last > 4 * min(result.smoothed[:-1])
    assert result.suggestion < result.lrs[-1]


def test_smoothing_is_bias_corrected():
    result = lr_find("mlp-digits", TINY, steps=5, min_lr=1e-6, max_lr=2e-6)
    # with bias correction the first smoothed value is the first loss itself, not 2% of it
    assert result.smoothed[0] == pytest.approx(result.losses[0])


def test_suggest_picks_steepest_descent():
    lrs = [10 ** (-6 + i * 0.1) for i in range(61)]
    # flat, then a steep drop centred at 1e-3, then a rise
    smoothed = [2.3 - 2.0 / (1 + math.exp(-(math.log10(lr) + 3) * 4)) + (max(0, math.log10(lr) + 1) * 3) for lr in lrs]
    steep, at_min = suggest(lrs, smoothed)
    assert steep == pytest.approx(1e-3, rel=0.3)
    best = min(range(len(lrs)), key=smoothed.__getitem__)
    assert at_min == pytest.approx(lrs[best] / 10)


def test_plot_and_write(tmp_path):
    result = lr_find("mlp-digits", TINY, steps=20)
    png = plot(result, tmp_path / "lr.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    recipe = tmp_path / "r.yaml"
    recipe.write_text((ROOT / "recipes" / "mlp-digits.yaml").read_text())
    out = write_recipe(recipe, 0.0123456, TINY)
    assert out.name == "r.lr.yaml"
    data = yaml.safe_load(out.read_text())
    assert data["base"] == "r.yaml"
    assert data["optimizer"]["lr"] == pytest.approx(0.0123)
    assert data["model"] == {"width": 32, "depth": 1}
    from zoo.core.recipe import load

    resolved = load(out)
    assert resolved.optimizer["lr"] == pytest.approx(0.0123)
    assert resolved.optimizer["weight_decay"] == 0.05  # the rest comes from the base


def test_cli_json(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "zoo", "lr-find", str(ROOT / "recipes" / "mlp-digits.yaml"), *TINY,
         "--steps", "30", "--out", str(tmp_path / "lr.png"), "--json"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 1e-6 <= report["suggestion"] <= 1.0
    assert report["steps_run"] <= 30
    assert (tmp_path / "lr.png").is_file()


def test_cli_rejects_bad_range(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "zoo", "lr-find", "mlp-digits", "--min", "1", "--max", "0.1"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=60,
    )
    assert proc.returncode == 2
    assert "--min" in proc.stderr
