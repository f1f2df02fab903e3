"""Weights & Biases, offline (no server here): what a run really logged, read back from its .wandb file."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers.logger import DummyExperiment

from zoo.core.errors import ZooError
from zoo.core.recipe import load
from zoo.monitoring.wandb_offline import offline_run_dirs, read_offline_run
from zoo.training.evaluation import load_model

TINY = ["trainer.max_epochs=1", "model.width=16", "trainer.limit_train_batches=5", "trainer.limit_val_batches=2",
        "trainer.log_every_n_steps=1"]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def _fit_with_wandb(tmp_path: Path, overrides: list[str], recipe_path: Path | None = None):
    """What zoo.training.fit.fit_one does, keeping hold of the trainer's W&B logger."""
    import lightning as L

    from zoo.core.build import build_data
    from zoo.monitoring.wandb_logging import ZooWandbLogger, finish_wandb
    from zoo.training.classifier import Classifier
    from zoo.training.fit import make_trainer
    from zoo.training.run_folder import write_recipe

    recipe = load(recipe_path, [*TINY, *overrides])
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
    recipe, run_dir, logger = _fit_with_wandb(
        tmp_path, ["logger.wandb.mode=offline", "logger.wandb.tags=[t1]", "logger.wandb.log_model=best"])
    assert logger is not None
    folders = offline_run_dirs(run_dir)
    assert len(folders) == 1
    run = read_offline_run(run_dir)
    assert (run_dir / "wandb_run_id.txt").read_text().strip() == run.run_id
    # nested: sections, not flattened keys; and what the run was, besides its recipe
    assert {k: v for k, v in run.config.items() if k != "run"} == recipe.to_dict()
    params = sum(p.numel() for p in load_model(run_dir).parameters())
    assert run.config["run"] == {"world_size": 1, "parameters": params, "trainable_parameters": params}
    assert run.name == "run" and run.project == "zoo" and run.tags == ["t1"]
    # metrics: train loss per step and the learning rate of each optimizer group (AdamW: weights; biases
    # and norm scales) in the history; each final metric once in the summary, under its logged name
    assert any("train/loss_step" in row for row in run.history)
    assert {"train/lr/pg1", "train/lr/pg2"} <= run.history_keys()
    for key in ("test/acc", "test/loss", "val/acc", "val/loss", "test/macro_f1", "test/top5_acc"):
        assert key in run.summary, key
    assert not [k for k in run.summary if k.startswith(("test_", "val_"))], sorted(run.summary)
    assert 0.0 <= run.summary["test/acc"] <= 1.0
    # the post-fit evaluation of the best checkpoint is the summary's, and no extra point of the curve
    val_points = [row for row in run.history if "val/acc" in row]
    epoch_end = [row["trainer/global_step"] for row in run.history if "train/loss_epoch" in row]
    assert len(val_points) == 1 and [val_points[0]["trainer/global_step"]] == epoch_end  # one epoch
    # the confusion matrix once, as an image; per-class precision and recall as a table
    assert {k.split("/")[1] for k in run.history_keys() if k.startswith("test/conf")} == {"confusion_matrix"}
    rows = [row for row in run.history if "test/confusion_matrix/_type" in row]
    assert len(rows) == 1 and rows[0]["test/confusion_matrix/_type"] == "image-file"
    assert "test/per_class/_type" in run.history_keys()
    # the recipe and the best checkpoint as artifacts, staged inside the run folder
    artifacts = {a["name"]: a for a in run.artifacts}
    assert artifacts[f"recipe-{run.run_id}"]["type"] == "recipe"
    model = artifacts[f"model-{run.run_id}"]
    assert model["type"] == "model" and model["files"] == ["best.ckpt"]
    assert {a["type"] for a in run.artifacts} == {"recipe", "model", "run_table"}  # a logged table is one too
    for artifact in run.artifacts:
        assert all(Path(p).resolve().is_relative_to(run_dir.resolve()) for p in artifact["local_paths"]), artifact
    assert "augmentations/_type" in run.history_keys()  # the default recipe crops
    assert "wandb sync" not in capsys.readouterr().err  # zoo.train says it once, at the end (see below)


def test_a_streamed_test_split_gets_its_confusion_matrix_and_per_class_table(tmp_path, monkeypatch):
    from streaming_data import prepared
    from test_streaming import recipe_file

    monkeypatch.chdir(tmp_path)
    root = prepared(tmp_path / "prepared", {"train": 12, "val": 6, "test": 9})
    _, run_dir, _ = _fit_with_wandb(tmp_path, ["logger.wandb.mode=offline"], recipe_file(tmp_path, root))
    run = read_offline_run(run_dir)
    assert {"test/confusion_matrix/_type", "test/per_class/_type"} <= run.history_keys()
    assert "test/macro_f1" in run.summary and 0.0 <= run.summary["test/macro_f1"] <= 1.0


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
    logger.start()
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
    assert isinstance(first.experiment, DummyExperiment)  # nothing until started
    first.start()
    run_id = first.experiment.id
    first.finish()
    assert read_run_id(tmp_path) == run_id
    second = wandb_logger(recipe, tmp_path, resume_id=run_id)
    second.start()
    assert second.experiment.id == run_id
    second.finish()


def test_log_model_true_uploads_best_and_last(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, run_dir, _ = _fit_with_wandb(tmp_path, ["logger.wandb.mode=offline", "logger.wandb.log_model=true", "augment=[]"])
    run = read_offline_run(run_dir)
    model = next(a for a in run.artifacts if a["type"] == "model")
    assert sorted(model["files"]) == ["best.ckpt", "last.ckpt"]


class RefuseInSetup(L.Callback):
    def setup(self, trainer, pl_module, stage):
        raise ZooError("refused while Lightning sets up")


def test_a_run_refused_before_training_leaves_no_wandb_run(tmp_path, monkeypatch):
    """Lightning asks the logger for its run while it sets up, before anything can be refused; the W&B run
    must only start once training does."""
    from zoo.core.build import build_data
    from zoo.training.classifier import Classifier
    from zoo.training.fit import make_trainer

    monkeypatch.chdir(tmp_path)
    recipe = load(None, [*TINY, "logger.wandb.mode=offline"])
    dm = build_data(recipe.data, seed=0)
    module = Classifier(recipe.to_dict(), dm.input_shape, dm.num_classes)
    trainer = make_trainer(recipe, tmp_path, progress=False, extra_callbacks=[RefuseInSetup()])
    with pytest.raises(ZooError):
        trainer.fit(module, datamodule=dm)
    import wandb

    assert wandb.run is None
    assert not (tmp_path / "wandb").exists() and not (tmp_path / "wandb_run_id.txt").exists()


def test_real_training_run_logs_to_wandb(tmp_path, monkeypatch, capsys):
    """Through zoo.train: what the run really wrote, read back from its offline file."""
    import zoo

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    start = time.perf_counter()
    result = zoo.train(None, [*TINY, "augment=[]", "logger.wandb.mode=offline"], progress=False)
    run_dir = Path(result.run_dir)
    assert len(offline_run_dirs(run_dir)) == 1
    run = read_offline_run(run_dir)
    assert run.config["run"]["world_size"] == 1
    assert {k: v for k, v in run.config.items() if k != "run"} == load(
        None, [*TINY, "augment=[]", "logger.wandb.mode=offline"]).to_dict()
    assert run.summary["test/acc"] == pytest.approx(result.test_acc)
    assert run.summary["val/acc"] == pytest.approx(result.val_acc)
    assert any("train/loss_step" in row for row in run.history)
    assert "test/per_class/_type" in run.history_keys()
    import torch

    ckpt = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["wandb_run_id"] == run.run_id == (run_dir / "wandb_run_id.txt").read_text().strip()
    assert time.perf_counter() - start < 60
    err = capsys.readouterr().err
    assert err.count("wandb sync") == 1 and f"upload it with: wandb sync {run_dir / 'wandb'}" in err, err


def _sittings(wandb_dir: Path) -> dict[str, list]:
    """Every W&B run under a wandb/ folder, by run id: its sittings, read back, oldest first."""
    from zoo.monitoring.wandb_offline import read_run_file, run_file, sitting_dirs

    ids = {p.name.rsplit("-", 1)[-1] for p in wandb_dir.glob("offline-run-*")}
    return {i: [read_run_file(run_file(f)) for f in sitting_dirs(wandb_dir, i)] for i in ids}


def test_ensemble_logs_a_run_of_its_own_next_to_members_named_by_its_folder(
        tmp_path, monkeypatch, capsys, would_sync, wandb_whole_and_once):
    import zoo

    monkeypatch.chdir(tmp_path)
    overrides = [*TINY, "augment=[]", "logger.wandb.mode=offline", "ensemble={members: 2}"]
    result = zoo.train(None, overrides, run_dir=tmp_path / "duo", progress=False)
    run_dir = tmp_path / "duo"
    runs = {sittings[0].name: sittings for sittings in _sittings(run_dir / "wandb").values()}
    # every W&B run of the ensemble is in its own wandb/ folder (none in the members' folders), one sitting each
    assert sorted(runs) == ["duo", "duo-m0", "duo-m1"]
    assert all(len(s) == 1 and s[0].complete for s in runs.values())
    assert not list((run_dir / "members").glob("*/wandb"))
    assert {s[0].group for s in runs.values()} == {"duo"}  # grouped by the run folder, not the recipe's name
    ensemble = runs["duo"][0]
    assert ensemble.run_id == (run_dir / "wandb_run_id.txt").read_text().strip()
    assert ensemble.config["ensemble"]["combine"] == "mean" and ensemble.config["run"]["combine"] == "mean"
    assert ensemble.summary["test/acc"] == pytest.approx(result.ensemble_acc)
    assert ensemble.summary["val/acc"] == pytest.approx(result.val_acc)
    assert ensemble.summary["test/mean_member_acc"] == pytest.approx(
        sum(m["test_acc"] for m in result.members) / 2)
    assert ensemble.summary["ensemble/combine"] == "mean"
    assert {"ensemble/members/_type", "test/confusion_matrix/_type", "test/per_class/_type"} <= ensemble.history_keys()
    for sittings in runs.values():  # every artifact staged inside the run folder
        for artifact in sittings[0].artifacts:
            assert all(Path(p).resolve().is_relative_to(run_dir.resolve()) for p in artifact["local_paths"])
    assert [row["ensemble/members/nrows"] for row in ensemble.history if "ensemble/members/nrows" in row] == [2]
    # each member's row names its W&B run; and a member's run is an ordinary run of its own
    member_ids = [m["wandb_run_id"] for m in result.members]
    assert member_ids == [runs["duo-m0"][0].run_id, runs["duo-m1"][0].run_id]
    for i, member in enumerate(result.members):
        assert runs[f"duo-m{i}"][0].summary["test/acc"] == pytest.approx(member["test_acc"])
        wandb_whole_and_once(run_dir / "members" / f"m{i}", run_dir / "wandb")
    for sittings in runs.values():  # each metric once in every summary
        assert not [k for k in sittings[0].summary if k.startswith(("test_", "val_"))]
    # one command uploads all three runs: wandb's own sync, asked what it would upload, names each run's file
    err = capsys.readouterr().err
    command = f"wandb sync {run_dir / 'wandb'}"
    assert err.count("wandb sync") == 1 and f"3 W&B runs logged offline; upload them with: {command}" in err
    uploaded = {f.stem.removeprefix("run-") for f in would_sync(run_dir / "wandb")}
    assert uploaded == {s[0].run_id for s in runs.values()}



@pytest.fixture
def api_key(tmp_path, monkeypatch):
    """An API key configured, and a W&B server that refuses every connection (a bound port nobody listens
    on): whatever tries to go online fails at once, here, instead of reaching the internet."""
    import socket

    from zoo.monitoring import wandb_target

    monkeypatch.setattr(wandb_target, "_said", set())  # each test sees its own warnings
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    for name in ("WANDB_PROJECT", "WANDB_DISABLED", "WANDB_ENTITY", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed.getsockname()[1]}")
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "2")
    yield
    closed.close()


def test_wandb_environment_variables_are_obeyed(tmp_path, monkeypatch, capsys, api_key):
    """WANDB_MODE=offline keeps a run offline with an API key configured, WANDB_PROJECT names its project,
    WANDB_MODE=disabled and WANDB_DISABLED=true turn W&B off; a recipe's own project and mode win over the
    environment except where the environment turns W&B down."""
    from zoo.monitoring.wandb_logging import read_run_id, wandb_logger
    from zoo.monitoring.wandb_target import project, resolve_mode

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "from-env")
    logger = wandb_logger(load(None, []), tmp_path)
    assert logger.mode == "offline"
    logger.start()
    logger.finish()
    run = read_offline_run(tmp_path)
    assert run.project == "from-env" and run.run_id == read_run_id(tmp_path)
    assert "warning" not in capsys.readouterr().err  # nothing tried to go online
    assert project("mine") == "mine" and project(None) == "from-env"
    assert resolve_mode("online") == "offline"
    for name, value in (("WANDB_MODE", "disabled"), ("WANDB_DISABLED", "true")):
        monkeypatch.delenv("WANDB_MODE", raising=False)
        monkeypatch.setenv(name, value)
        assert wandb_logger(load(None, ["logger.wandb.mode=online"]), tmp_path / name) is None
        monkeypatch.delenv(name)
    monkeypatch.setenv("WANDB_MODE", "online")
    assert resolve_mode("auto") == "online" and resolve_mode("offline") == "offline"
    monkeypatch.delenv("WANDB_API_KEY")
    assert resolve_mode("auto") == "offline"  # online asked for, no key: offline, and said once
    assert resolve_mode("auto") == "offline"
    err = capsys.readouterr().err
    assert err.count("zoo: warning: WANDB_MODE=online, but no W&B API key is configured") == 1


def test_an_unreachable_server_means_offline_within_seconds(tmp_path, monkeypatch, capsys, api_key):
    """Online asked for, the server refusing: the run starts offline after WANDB_INIT_TIMEOUT (2 s here), with
    one warning line, and leaves nothing of the failed attempt for wandb sync to upload."""
    from zoo.monitoring.wandb_logging import read_run_id, wandb_logger

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "online")
    logger = wandb_logger(load(None, []), tmp_path)
    assert logger.mode == "online"
    start = time.perf_counter()
    logger.start()
    waited = time.perf_counter() - start
    assert logger.mode == "offline" and waited < 12, waited
    err = capsys.readouterr().err
    assert err.count("zoo: warning:") == 1
    assert "the W&B server did not answer within 2 s" in err and f"wandb sync {tmp_path / 'wandb'}" in err
    logger.finish()
    assert read_offline_run(tmp_path).run_id == read_run_id(tmp_path)
    assert not list((tmp_path / "wandb").glob("run-*"))  # only the offline run
