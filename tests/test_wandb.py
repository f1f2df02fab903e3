"""Weights & Biases, offline (no server here): what a run really logged, read back from its .wandb file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from zoo.core.recipe import load
from zoo.monitoring.wandb_offline import offline_run_dirs, read_offline_run

TINY = ["trainer.max_epochs=1", "model.width=16", "trainer.limit_train_batches=5", "trainer.limit_val_batches=2",
        "trainer.log_every_n_steps=1"]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def _fit_with_wandb(tmp_path: Path, overrides: list[str]):
    """What zoo.training.fit.fit_one does, keeping hold of the trainer's W&B logger."""
    import lightning as L

    from zoo.core.build import build_data
    from zoo.monitoring.wandb_logging import ZooWandbLogger, finish_wandb
    from zoo.training.classifier import Classifier
    from zoo.training.fit import make_trainer
    from zoo.training.run_folder import write_recipe

    recipe = load(None, [*TINY, *overrides])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_recipe(recipe, run_dir)
    L.seed_everything(0, verbose=False)
    dm = build_data(recipe.data, seed=0)
    module = Classifier(recipe.to_dict(), dm.input_shape, dm.num_classes)
    module.set_input_stats(dm.mean, dm.std)
    trainer = make_trainer(recipe, run_dir, progress=False)
    logger = next((lg for lg in trainer.loggers if isinstance(lg, ZooWandbLogger)), None)
    trainer.fit(module, datamodule=dm)
    trainer.validate(module, datamodule=dm, verbose=False)
    trainer.test(module, datamodule=dm, verbose=False)
    finish_wandb(trainer)
    return recipe, run_dir, logger


def test_offline_run_logs_recipe_metrics_tables_and_artifacts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    recipe, run_dir, logger = _fit_with_wandb(tmp_path, ["logger.wandb.mode=offline", "logger.wandb.tags=[t1]"])
    assert logger is not None
    folders = offline_run_dirs(run_dir)
    assert len(folders) == 1
    run = read_offline_run(run_dir)
    assert (run_dir / "wandb_run_id.txt").read_text().strip() == run.run_id
    assert run.config == recipe.to_dict()  # nested: sections, not flattened keys
    assert run.name == "run" and run.project == "zoo" and run.tags == ["t1"]
    # metrics: train loss per step in history; final val/test metrics in the summary
    assert any("train/loss_step" in row for row in run.history)
    assert any(k.startswith("lr-AdamW") for k in run.history_keys())
    for key in ("test_acc", "test_loss", "val_acc", "val_loss", "test_macro_f1"):
        assert key in run.summary, key
    assert 0.0 <= run.summary["test_acc"] <= 1.0
    # per-class table, confusion matrix (a table behind a custom chart), the recipe artifact, the grid image
    assert {"test/per_class/_type", "test/confusion_counts/_type"} <= run.history_keys()
    assert any(k.startswith("test/confusion_matrix") for k in run.history_keys())
    assert {"name": f"recipe-{run.run_id}", "type": "recipe"} in run.artifacts
    assert "augmentations/_type" in run.history_keys()  # the default recipe crops
    err = capsys.readouterr().err
    assert err.count(f"wandb sync {folders[0]}") == 1, err


def test_disabled_mode_writes_no_wandb_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, run_dir, logger = _fit_with_wandb(tmp_path, ["logger.wandb.mode=disabled", "augment=[]"])
    assert logger is None
    assert not (run_dir / "wandb").exists() and not (tmp_path / "wandb").exists()
    assert not (run_dir / "wandb_run_id.txt").exists()


def test_auto_mode_is_offline_without_an_api_key(tmp_path, monkeypatch):
    from zoo.monitoring.wandb_logging import resolve_mode

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_mode("auto") == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password " + "x" * 40 + "\n")
    assert resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("offline") == "disabled"


def test_no_run_is_created_off_global_rank_zero(tmp_path, monkeypatch):
    import wandb
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from zoo.monitoring.wandb_logging import wandb_logger

    monkeypatch.chdir(tmp_path)
    logger = wandb_logger(load(None, ["logger.wandb.mode=offline"]), tmp_path)
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    experiment = logger.experiment  # Lightning's dummy: wandb.init is never called
    experiment.log({"x": 1})
    logger.log_metrics({"x": 1.0}, step=0)
    logger.finish()
    assert wandb.run is None
    assert not (tmp_path / "wandb").exists() and not (tmp_path / "wandb_run_id.txt").exists()


def test_resume_id_continues_the_same_run(tmp_path, monkeypatch):
    from zoo.monitoring.wandb_logging import read_run_id, wandb_logger

    monkeypatch.chdir(tmp_path)
    recipe = load(None, ["logger.wandb.mode=offline"])
    first = wandb_logger(recipe, tmp_path)
    run_id = first.experiment.id
    first.finish()
    assert read_run_id(tmp_path) == run_id
    second = wandb_logger(recipe, tmp_path, resume_id=run_id)
    assert second.experiment.id == run_id
    second.finish()


def test_real_training_run_logs_to_wandb(tmp_path, monkeypatch):
    """Through zoo.train: what the run really wrote, read back from its offline file."""
    import zoo

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    start = time.perf_counter()
    result = zoo.train(None, [*TINY, "augment=[]", "logger.wandb.mode=offline"], progress=False)
    run_dir = Path(result.run_dir)
    assert len(offline_run_dirs(run_dir)) == 1
    run = read_offline_run(run_dir)
    assert run.config == load(None, [*TINY, "augment=[]", "logger.wandb.mode=offline"]).to_dict()
    assert run.summary["test_acc"] == pytest.approx(result.test_acc)
    assert any("train/loss_step" in row for row in run.history)
    assert "test/per_class/_type" in run.history_keys()
    import torch

    ckpt = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["wandb_run_id"] == run.run_id == (run_dir / "wandb_run_id.txt").read_text().strip()
    assert time.perf_counter() - start < 60
