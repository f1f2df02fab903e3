"""The command line, end to end: train, show, list, and how user mistakes are reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent


def zoo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "zoo", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_train_default_recipe_end_to_end(tmp_path):
    out = zoo("train", str(REPO / "recipes" / "mlp-digits.yaml"), "trainer.max_epochs=3", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"test_acc", "val_acc", "run_dir", "seconds"} <= summary.keys()
    assert 0.8 < summary["test_acc"] <= 1.0 and 0.8 < summary["val_acc"] <= 1.0  # chance: 0.1
    run = tmp_path / summary["run_dir"]
    assert run.parent == tmp_path / "runs"
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert saved["trainer"]["max_epochs"] == 3 and saved["model"]["name"] == "mlp"
    assert json.loads((run / "metrics.json").read_text())["test_acc"] == summary["test_acc"]
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["recipe"]["model"]["width"] == saved["model"]["width"]
    assert (run / "logs" / "metrics.csv").is_file()

    # the saved recipe alone reproduces the run
    again = zoo("train", str(run / "recipe.yaml"), "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    second = json.loads(again.stdout.strip().splitlines()[-1])
    assert second["test_acc"] == summary["test_acc"] and second["run_dir"] != summary["run_dir"]


def test_show_prints_the_resolved_recipe_with_overrides(tmp_path):
    out = zoo("show", "mlp-digits", "model.activation=gelu", "optimizer.lr=0.01", cwd=REPO)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert resolved["model"]["activation"] == {"name": "gelu", "approximate": "none"}
    assert resolved["optimizer"]["lr"] == 0.01
    assert resolved["data"]["name"] == "digits" and "batch_size" in resolved["data"]


def test_list_shows_every_registry_with_summaries(tmp_path):
    out = zoo("list", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    registries = {r["registry"] for r in rows}
    assert {"activations", "normalizers", "initializers", "optimizers", "schedules", "models", "datasets"} <= registries
    names = {(r["registry"], r["name"]) for r in rows}
    assert {("models", "mlp"), ("models", "resnet"), ("models", "timm"), ("activations", "maxout"), ("initializers", "lsuv")} <= names
    text = zoo("list", "models", cwd=tmp_path).stdout
    assert "mlp(depth: int >= 0 = 2" in text and "resnet(" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "no-such-recipe"], "recipe no-such-recipe not found"),
        (["train", "mlp-digits", "model.activation=rleu"], "unknown activations 'rleu' (did you mean: relu"),
        (["train", "mlp-digits", "optimizer.lr=-0.1"], "optimizer.lr: Input should be greater than 0"),
        (["train", "mlp-digits", "trainer.max_epochs=0"], "trainer.max_epochs: Input should be greater than or equal to 1"),
        (["show", "mlp-digits", "modle.depth=3"], "unknown key 'modle' (did you mean: model?)"),
        (["list", "activation"], "unknown registry 'activation' (did you mean: activations"),
    ],
)
def test_user_mistakes_exit_2_with_one_clear_message(tmp_path, args, message):
    out = zoo(*args, cwd=tmp_path if args[0] == "list" else REPO)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    sandbox = tmp_path / "sandbox"
    (sandbox / "recipes").mkdir(parents=True)
    (sandbox / "precious.txt").write_text("precious")
    out = zoo("train", str(REPO / "recipes" / "mlp-digits.yaml"), "--run-dir", str(sandbox), "--overwrite", cwd=tmp_path)
    assert out.returncode == 2 and "not a zoo run folder" in out.stderr and "Traceback" not in out.stderr
    assert (sandbox / "precious.txt").read_text() == "precious" and (sandbox / "recipes").is_dir()
    assert sorted(p.name for p in sandbox.iterdir()) == ["precious.txt", "recipes"]  # no lock or marker left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sandbox"]  # nothing set aside


def test_augmentation_grid_and_mixing_training_from_the_cli(tmp_path):
    out = zoo("augment", str(REPO / "recipes" / "mlp-digits.yaml"), "augment=[flip, {name: cutmix}]", "--n", "6",
              "--out", str(tmp_path / "grid.png"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    png = (tmp_path / "grid.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    run = zoo("train", str(REPO / "recipes" / "mlp-digits.yaml"), "data={name: synthetic, shape: [3, 8, 8], n_train: 512, signal: 1.0}",
              "augment=[flip, {name: crop, padding: 1}, {name: cutmix, p: 0.5}]", "tta.flip=true",
              "regularization.label_smoothing=0.1", "trainer.max_epochs=3", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["test_acc"] > 0.3  # 10 synthetic classes: chance is 0.1
