"""Lightning callbacks (trainer.callbacks) and loggers (logger.tensorboard, logger.mlflow, logger.extra) named by
recipes: what they do in a real run beside zoo's own, that a run stopped and resumed ends as the run that was
never stopped, and the entries refused before a run folder exists."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch
from run_stops import CrashAt, one_torch_thread, with_callback

from zoo.cli.main import main
from zoo.training.run import train

# 1257 training images in batches of 128: 10 optimizer steps an epoch, 50 in all
BASE = ["trainer.max_epochs=5", "data.batch_size=128", "model.width=16", "logger.wandb.mode=disabled",
        "performance.steps_per_execution=1", "augment=[]"]
# val/acc never improves by a whole 1.0 after the first epoch: a plateau from epoch 2, stopped after epoch 3
EARLY_STOPPING = ("trainer.callbacks=[{class_path: lightning.pytorch.callbacks.EarlyStopping, "
                  "init_args: {monitor: val/acc, mode: max, patience: 2, min_delta: 1.0}}]")
WEIGHT_AVERAGING = "trainer.callbacks=[{class_path: WeightAveraging}]"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # mlruns/ and runs/ land here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ZOO_RUN_DIR", raising=False)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory, _one_thread):
    """BASE with TensorBoard on and no callback of the recipe's."""
    run = tmp_path_factory.mktemp("plain") / "run"
    return train(None, [*BASE, "logger.tensorboard.enabled=true"], run_dir=run, progress=False)


def _crash_and_resume(run: Path, overrides: list[str], monkeypatch, step: int = 25):
    with monkeypatch.context() as patch:
        with_callback(patch, CrashAt(step))
        with pytest.raises(SystemExit):
            train(None, overrides, run_dir=run, progress=False)
    stopped = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    return stopped, train(resume=run, progress=False)


def _val_acc_rows(run: Path) -> list[tuple[int, float]]:
    with open(run / "logs" / "metrics.csv") as f:
        return [(int(r["step"]), float(r["val/acc"])) for r in csv.DictReader(f) if r["val/acc"]]


@pytest.mark.parametrize("entry", [EARLY_STOPPING, WEIGHT_AVERAGING], ids=["early_stopping", "weight_averaging"])
def test_a_recipe_callback_acts_and_a_resumed_run_ends_as_the_whole_one(entry, tmp_path, monkeypatch, plain_run):
    whole = train(None, [*BASE, entry], run_dir=tmp_path / "whole", progress=False)
    last = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
    if entry == EARLY_STOPPING:
        assert last["global_step"] == 30  # stopped after 3 of 5 epochs
    else:  # the average is what was validated, saved and tested
        assert whole.metrics != plain_run.metrics
        best = torch.load(whole.best_checkpoint, weights_only=True)["state_dict"]
        plain_best = torch.load(plain_run.best_checkpoint, weights_only=True)["state_dict"]
        assert any(not torch.equal(best[k], plain_best[k]) for k in best)
    # zoo's own callbacks and logger are in place: checkpoints, metrics.csv rows for each epoch validated
    assert len(_val_acc_rows(tmp_path / "whole")) == last["epoch"] + 1 + 1  # each epoch, and the best's evaluation

    # stopped mid-epoch 3, after the checkpoint of epoch 2 (where EarlyStopping had counted one epoch without
    # improvement: forgetting it would train two more epochs)
    stopped, resumed = _crash_and_resume(tmp_path / "stopped", [*BASE, entry], monkeypatch)
    assert stopped["global_step"] == 20
    if entry == EARLY_STOPPING:
        (state,) = [v for k, v in stopped["callbacks"].items() if k.startswith("EarlyStopping")]
        assert state["wait_count"] == 1
    assert resumed.metrics == whole.metrics
    again = torch.load(tmp_path / "stopped" / "checkpoints" / "last.ckpt", weights_only=True)
    assert again["global_step"] == last["global_step"]


def test_a_callback_acting_per_epoch_keeps_steps_grouped():
    from zoo.core.recipe import load
    from zoo.training.step_groups import group_size

    recipe = load("mlp-digits", [EARLY_STOPPING, "performance.steps_per_execution=4"])
    assert group_size(recipe.to_dict()) == (4, None)


def test_tensorboard_writes_the_run_metrics_into_the_run_folder(plain_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = Path(plain_run.run_dir)
    events = EventAccumulator(str(run / "logs" / "tensorboard"))
    events.Reload()
    logged = [(e.step, pytest.approx(e.value)) for e in events.Scalars("val/acc")]
    assert len(logged) == 6 and logged == _val_acc_rows(run)  # each epoch, then the best checkpoint's evaluation
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_mlflow_and_tensorboard_go_on_in_one_place_across_a_resume(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    overrides = [*BASE, "trainer.max_epochs=3", "logger.mlflow.enabled=true", "logger.mlflow.experiment=digits",
                 "logger.tensorboard.enabled=true"]
    _, resumed = _crash_and_resume(run, overrides, monkeypatch)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "digits"]
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    assert mlflow_run.info.run_id == (run / "mlflow_run_id.txt").read_text().strip()
    assert mlflow_run.info.run_name == "run" and mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.params["recipe/model/width"] == "16"
    history = {(m.step, m.value) for m in client.get_metric_history(mlflow_run.info.run_id, "val/acc")}
    # both sittings' values (the epochs replayed after the checkpoint once more), the last the best's evaluation
    assert history == set(_val_acc_rows(run))
    assert (mlflow_run.data.metrics["test/acc"], mlflow_run.data.metrics["val/acc"]) == pytest.approx(
        (resumed.test_acc, resumed.val_acc))
    events = EventAccumulator(str(run / "logs" / "tensorboard"))
    events.Reload()
    assert {(e.step, e.value) for e in events.Scalars("val/acc")} == history  # both sittings' files, one folder


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("trainer.callbacks=[{class_path: EarlyStoping}]", "class_path EarlyStoping: lightning.pytorch.callbacks has "
         "no class EarlyStoping (did you mean: EarlyStopping?)"),
        ("trainer.callbacks=[{class_path: EarlyStopping, init_args: {monitor: val/acc, patiense: 3}}]",
         "EarlyStopping(monitor='val/acc', patiense=3): TypeError"),
        ("trainer.callbacks=[{class_path: EarlyStopping, init_args: {monitor: val/acc, mode: maximum}}]",
         "`mode` can be min, max, got maximum"),
        ("trainer.callbacks=[{class_path: lightning.pytorch.callbacks.ModelCheckpoint}]",
         "ModelCheckpoint: zoo writes checkpoints/last.ckpt and best.ckpt itself"),
        ("trainer.callbacks=[{class_path: StochasticWeightAveraging, init_args: {swa_lrs: 0.01}}]",
         "StochasticWeightAveraging: its average replaces the weights only after the last epoch"),
        ("trainer.callbacks=[{class_path: WeightAveraging}]\nema={}", "WeightAveraging: the weights are averaged already"),
        ("trainer.callbacks=[{class_path: json.JSONDecoder}]", "json.decoder.JSONDecoder is not a lightning"),
        ("trainer.callbacks=[{class_path: SpikeDetection}]", "SpikeDetection: zoo's divergence guard stops a run"),
        ("trainer.callbacks=[{class_path: BackboneFinetuning}]", "zoo's models have none"),
        ("trainer.callbacks=[{class_path: LearningRateFinder}]", "use zoo lr-find"),
        ("trainer.callbacks=[{class_path: Timer}, {class_path: Timer}]", "would collide with trainer.callbacks[0]'s"),
        ("logger.extra=[{class_path: TensorBoardLogger, init_args: {save_dir: tb}}]", "use the logger.tensorboard section"),
        ("trainer.callbacks=[{class_path: EarlyStopping, init_args: {monitor: val_accuracy, mode: max}}]",
         "EarlyStopping: monitor 'val_accuracy' is not a metric zoo logs (did you mean: val/acc?)"),
        ("trainer.callbacks=[EarlyStopping]", "expected {class_path: ..., init_args: {...}}, "
         "got 'EarlyStopping'"),
        ("logger.extra=[TensorBoardLogger]", "expected {class_path: ..., init_args: {...}}, "
         "got 'TensorBoardLogger'"),
    ],
    ids=["unknown-class", "unknown-argument", "bad-value", "checkpoint", "swa", "second-average", "not-a-callback",
         "spike-detection", "backbone", "tuner", "same-state-twice", "tensorboard-as-extra",
         "unlogged-monitor", "callback-as-a-name", "logger-as-a-name"],
)
def test_entries_refused_before_the_run_folder(override, fragment, tmp_path, capsys):
    code = main(["train", "mlp-digits", *override.split("\n"), "trainer.max_epochs=1"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    last = max(override.count("{class_path") - 1, 0)
    where = "logger.extra[0]" if override.startswith("logger") else f"trainer.callbacks[{last}]"
    assert f": {where}: " in err and fragment in err, err
    assert not (tmp_path / "runs").exists()


def test_the_metric_names_zoo_checks_a_monitor_against_are_those_a_run_logs(plain_run):
    from zoo.core.logged_metrics import LEARNING_RATE_GROUP, TRAINING_METRICS

    with open(Path(plain_run.run_dir) / "logs" / "metrics.csv") as f:
        columns = set(next(csv.reader(f)))
    logged = {c for c in columns if c.startswith(("train/", "val/"))}
    # this recipe has two parameter groups, so its learning rates are train/lr/pg1 and pg2, not train/lr
    assert logged - set(TRAINING_METRICS) == {"train/lr/pg1", "train/lr/pg2"}
    assert all(LEARNING_RATE_GROUP.fullmatch(c) for c in logged - set(TRAINING_METRICS))
    assert set(TRAINING_METRICS) - logged == {"train/lr"}


@pytest.mark.parametrize("monitors, callback", [
    ("monitors=[{name: update_ratio}]",
     "{class_path: EarlyStopping, init_args: {monitor: grad_norm/net.0, mode: min}}"),
    ("monitors=[]", "{class_path: EarlyStopping, init_args: {monitor: train/lr/pg2, mode: min}}"),
])
def test_a_monitor_on_a_name_zoo_logs_is_accepted(monitors, callback, capsys):
    code = main(["show", "mlp-digits", monitors, f"trainer.callbacks=[{callback}]"])
    assert code == 0, capsys.readouterr().err


def test_a_class_path_imports_no_module_zoo_does_not_trust(tmp_path, capsys):
    """A recipe (one a run folder wrote, say) cannot make zoo import code: `this` prints when imported."""
    assert "this" not in sys.modules
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("base: mlp-digits\ntrainer: {callbacks: [{class_path: this.Zen}]}\n".replace(
        "mlp-digits", str(Path(__file__).resolve().parents[1] / "recipes" / "mlp-digits.yaml")))
    assert main(["show", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "trainer.callbacks[0]: class_path this.Zen: zoo imports" in err and "list it under plugins:" in err, err
    assert "this" not in sys.modules


@pytest.mark.parametrize("setting, fragment", [
    ("env", "MLFLOW_TRACKING_URI: the MLflow store sqlite:///"),
    ("recipe", ": logger.mlflow.tracking_uri: the MLflow store file:///"),
])
def test_an_mlflow_store_that_cannot_be_written_is_refused_before_the_run_folder(setting, fragment, tmp_path,
                                                                                  monkeypatch, capsys):
    (tmp_path / "a-file").write_text("")  # no folder can be made under it, even by root
    overrides = ["logger.mlflow.enabled=true", "trainer.max_epochs=1", "model.width=16",
                 "logger.wandb.mode=disabled"]
    if setting == "env":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/a-file/mlflow.db")
    else:
        overrides.append(f"logger.mlflow.tracking_uri=file://{tmp_path}/a-file/mlruns")
    assert main(["train", "mlp-digits", *overrides]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "runs").exists()


def test_a_logger_whose_package_is_missing_says_what_to_install(capsys, monkeypatch):
    from zoo.core import recipe_callbacks

    monkeypatch.setitem(recipe_callbacks.LOGGER_PACKAGES, "mlflow", ("no_such_package_here",))
    assert main(["show", "mlp-digits", "logger.mlflow.enabled=true"]) == 2
    err = capsys.readouterr().err
    assert "logger.mlflow.enabled: the no_such_package_here package is not installed (pip install 'zoo[loggers]')" in err
