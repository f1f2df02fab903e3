"""Training through the Python API: results, checkpoints that rebuild themselves, every model family."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.training.classifier import Classifier

# No regularization and a flat learning rate, so a few steps show clear learning.
FAST = ["augment=[]", "model.dropout=0", "schedule=constant"]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_python_api_trains_and_checkpoint_reloads_with_same_accuracy(in_tmp):
    result = zoo.train(None, ["trainer.max_epochs=2", "model.width=64", *FAST], progress=False)
    assert 0.8 < result.test_acc <= 1.0
    module = Classifier.load_from_checkpoint(result.best_checkpoint, map_location="cpu", weights_only=True)
    module.eval()
    dm = zoo.datasets.build(module.recipe["data"])
    acc = (module.predict_proba(dm.test.x).argmax(-1) == dm.test.y).float().mean().item()
    assert acc == pytest.approx(result.test_acc, abs=1e-6)
    # the standardization travelled inside the checkpoint
    assert torch.allclose(module.input_mean, dm.mean.expand(1, 8, 8))


@pytest.mark.parametrize(
    "overrides",
    [
        ["model={name: resnet, depth: 8, width: 8}"],
        ["model={name: resnet, depth: 8, width: 16, preact: true, activation: gelu, norm: {name: group, groups: 4}}"],
        ["model={name: timm, arch: test_resnet}"],
        ["model={name: mlp, width: 32, init: lsuv, activation: tanh}"],
    ],
    ids=["resnet8", "preact-gelu-group", "timm", "mlp-lsuv"],
)
def test_every_model_family_trains_from_a_recipe(in_tmp, overrides):
    result = zoo.train(None, [*FAST, *overrides, "trainer.max_epochs=2", "trainer.limit_train_batches=10"], progress=False)
    assert result.test_acc > 0.4  # chance is 0.1; 20 steps take every family well past it


def test_recipe_monitors_log_and_guard(in_tmp):
    result = zoo.train(None, [*FAST, "trainer.max_epochs=1", "monitors=[{name: activations, every_n_steps: 5}, "
                              "{name: update_ratio, every_n_steps: 5}, divergence]"], progress=False)
    header = (in_tmp / result.run_dir / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert any(c.startswith("activations/") for c in header.split(","))
    assert any(c.startswith("update_ratio/") for c in header.split(","))
    with pytest.warns(UserWarning, match="diverg|NaN|initial loss"):
        blown = zoo.train(None, [*FAST, "optimizer={name: sgd, lr: 10000.0}", "model.norm=none",
                                 "trainer.max_epochs=3", "monitors=[divergence]"], progress=False)
    import csv

    with open(in_tmp / blown.run_dir / "logs" / "metrics.csv") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("step")]
    assert max(steps) < 20  # stopped inside the first of 3 epochs (20 steps each)


def test_overwrite_replaces_the_old_run_once_the_new_one_trains(tmp_path, monkeypatch):
    from zoo.training.run import train

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "mine"
    run.mkdir()
    (run / ".zoo-run").write_text("{}")  # a run folder: --overwrite replaces nothing else
    (run / "old.txt").write_text("old")
    train(None, ["trainer.max_epochs=1", "model.width=8", "logger.wandb.mode=disabled"], run_dir=run,
          overwrite=True, progress=False)
    assert not (run / "old.txt").exists() and (run / "metrics.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
