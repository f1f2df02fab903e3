"""performance.steps_per_execution: K optimizer steps per Lightning step train exactly as one step per batch."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from zoo.core.recipe import load
from zoo.data.datamodule import BatchGroups, Split, TensorBatches
from zoo.monitoring.monitors import UpdateRatio
from zoo.training.checkpoints import Interrupted
from zoo.training.ensemble_training import SnapshotCheckpoints
from zoo.training.fit import fit_one, make_trainer
from zoo.training.run import train
from zoo.training.step_groups import group_size

# 1257 training images in batches of 128: 10 optimizer steps an epoch, 20 in all
SMALL = ["trainer.max_epochs=2", "data.batch_size=128", "model.width=64", "logger.wandb.mode=disabled",
         "trainer.log_every_n_steps=4"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # identical sums in every run
    yield
    torch.set_num_threads(threads)


class StepRecorder(L.Callback):
    """What every optimizer step saw: its number, learning rate and loss (hooks that fire per step)."""

    def __init__(self) -> None:
        self.losses: list[tuple[int, float]] = []
        self.lrs: list[tuple[int, float]] = []

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.losses.append((trainer.global_step, loss.item()))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lrs.append((trainer.global_step, optimizer.param_groups[0]["lr"]))


def _fit(tmp_path: Path, name: str, group: int, *extra: str, callbacks=()):
    recipe = load("mlp-digits", [*SMALL, f"performance.steps_per_execution={group}", *extra])
    run = tmp_path / name
    result = fit_one(recipe, run, progress=False, callbacks=list(callbacks))
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    with open(run / "logs" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return result, last, rows


def _epoch_rows(rows: list[dict]) -> list[dict]:
    keys = ("train/acc", "train/loss_epoch", "val/acc", "val/loss")
    return [{k: r[k] for k in keys if r.get(k)} for r in rows if any(r.get(k) for k in keys)]


@pytest.fixture(scope="module")
def one_per_batch(tmp_path_factory):
    recorder = StepRecorder()
    result, last, rows = _fit(tmp_path_factory.mktemp("k1"), "run", 1, callbacks=[recorder])
    return result, last, rows, recorder


@pytest.mark.parametrize("group", [4, 7])  # 4: groups of 4, 4, 2 an epoch; 7: of 7, 3
def test_grouped_steps_train_exactly_as_one_step_per_batch(group, tmp_path, one_per_batch):
    base, base_last, base_rows, base_steps = one_per_batch
    recorder = StepRecorder()
    result, last, rows = _fit(tmp_path, "run", group, callbacks=[recorder])
    assert last["global_step"] == base_last["global_step"] == 20
    # every optimizer step saw the same loss and learning rate, and the hooks fired once per step
    assert recorder.losses == base_steps.losses
    assert recorder.lrs == base_steps.lrs
    assert [s for s, _ in recorder.lrs] == list(range(20))
    for name, tensor in base_last["state_dict"].items():
        assert torch.equal(last["state_dict"][name], tensor), name
    assert result.metrics == base.metrics
    assert _epoch_rows(rows) == _epoch_rows(base_rows)
    # the loggers' step axis is optimizer steps: the step loss logged at a step is that step's loss
    losses = dict(base_steps.losses)
    logged = [(int(r["step"]), float(r["train/loss_step"])) for r in rows if r.get("train/loss_step")]
    assert logged, "no step loss was logged"
    for step, value in logged:
        assert value == pytest.approx(losses[step], rel=1e-6)
    # and the learning-rate monitor still writes rows, each the rate of the step it names
    lrs = dict(base_steps.lrs)
    logged_lr = [(int(r["step"]), float(r["train/lr/pg1"])) for r in rows if r.get("train/lr/pg1")]
    assert logged_lr, "no learning rate was logged"
    for step, value in logged_lr:
        assert value == pytest.approx(lrs[step], rel=1e-6)


class FinalWeights(L.Callback):
    """The weights and step count as training ends (a max_steps stop writes no checkpoint of its own)."""

    def on_train_end(self, trainer, pl_module) -> None:
        self.step = trainer.global_step
        self.weights = {k: v.clone() for k, v in pl_module.state_dict().items()}


def test_gradient_clipping_and_max_steps_act_per_optimizer_step(tmp_path):
    clip = ["trainer.gradient_clip_val=0.05", "trainer.max_steps=13"]
    ends = {}
    for name, group, extra in (("k1", 1, clip), ("k4", 4, clip), ("free", 4, ["trainer.max_steps=13"])):
        ends[name] = FinalWeights()
        _fit(tmp_path, name, group, *extra, callbacks=[ends[name]])
    one, grouped, unclipped = ends["k1"], ends["k4"], ends["free"]
    assert grouped.step == one.step == 13  # stopped inside a group, not at its end
    for name, tensor in one.weights.items():
        assert torch.equal(grouped.weights[name], tensor), name
    assert any(not torch.equal(unclipped.weights[n], t) for n, t in one.weights.items())


def test_update_ratio_measures_one_step_inside_a_group(tmp_path):
    # armed on steps 0, 3, ..., 18; step 18 sits inside the group of steps 16-19, so its ratio must be
    # measured before step 19's update, not after the group
    ratios = {}
    for group in (1, 4):
        monitor = UpdateRatio(every_n_steps=3, band=(0.0, 1.0))
        _fit(tmp_path, f"k{group}", group, callbacks=[monitor])
        ratios[group] = monitor.last
    assert ratios[1] and ratios[4] == ratios[1]


def test_divergence_guard_stops_a_grouped_run(tmp_path):
    recipe = load("mlp-digits", [*SMALL, "performance.steps_per_execution=4", "optimizer.lr=1000",
                                 "model.norm=none", "trainer.max_epochs=3"])
    end = FinalWeights()
    with pytest.warns(UserWarning, match="DivergenceGuard: stopping training at step"):
        result = fit_one(recipe, tmp_path / "run", progress=False, callbacks=[end])
    assert result.diverged is not None
    bad = int(result.diverged.split()[1].rstrip(":"))
    # examined once per group: the stop comes at the latest with the group after the bad step
    assert bad < end.step <= bad + 4 + 1
    assert end.step < 30


def test_resume_after_a_stop_inside_an_epoch_is_exact(tmp_path, monkeypatch):
    import zoo.training.fit as training

    base = train(None, [*SMALL, "performance.steps_per_execution=4"], run_dir=tmp_path / "base", progress=False)

    class StopAt(L.Callback):  # what SIGTERM does: zoo's StopOnSignal, asked at a group's end
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step == 14:
                stopper = next(c for c in trainer.callbacks if type(c).__name__ == "StopOnSignal")
                stopper.received = 15

    make = training.make_trainer
    monkeypatch.setattr(training, "make_trainer",
                        lambda *a, **k: make(*a, **{**k, "extra_callbacks": [*(k.get("extra_callbacks") or []), StopAt()]}))
    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(None, [*SMALL, "performance.steps_per_execution=4"], run_dir=run, progress=False)
    monkeypatch.setattr(training, "make_trainer", make)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 14
    assert train(resume=run, progress=False).metrics == base.metrics


@pytest.mark.parametrize(
    "override, reason",
    [
        ("ema={decay: 0.99}", "ema"),
        ("trainer.accumulate_grad_batches=2", "accumulate_grad_batches"),
        ("trainer.precision=16-mixed", "precision 16-mixed"),
        # a weight average updated once per group would average far fewer weights
        ("trainer.callbacks=[{class_path: WeightAveraging}]", "trainer.callbacks[0] (WeightAveraging acts on every "
         "training batch)"),
        # under manual optimization Lightning refuses it once fit has begun
        ("trainer.callbacks=[{class_path: GradientAccumulationScheduler, init_args: {scheduling: {0: 2}}}]",
         "trainer.callbacks[0] (GradientAccumulationScheduler accumulates gradients)"),
    ],
)
def test_what_needs_lightnings_optimizer_step_takes_one_step_per_batch(override, reason, tmp_path, capsys):
    recipe = load("mlp-digits", [*SMALL, "trainer.max_epochs=1", "performance.steps_per_execution=4", override])
    assert group_size(recipe.to_dict()) == (1, f"performance.steps_per_execution=4 does not apply with {reason}: "
                                               "one step per batch")
    if "precision" in override:
        return  # fp16 autocast has no CPU kernels for every op here; the decision above is what matters
    end = FinalWeights()
    fit_one(recipe, tmp_path / "run", progress=False, callbacks=[end])
    assert f"zoo: performance.steps_per_execution=4 does not apply with {reason}" in capsys.readouterr().err
    assert end.step == (10 if "accumulat" not in override.lower() else 5)


def test_several_processes_take_one_step_per_batch(tmp_path, capsys):
    recipe = load("mlp-digits", ["performance.steps_per_execution=4", "trainer.accelerator=cpu",
                                 "trainer.devices=2", "trainer.strategy=ddp"])
    assert group_size(recipe.to_dict(), world_size=2)[0] == 1
    trainer = make_trainer(recipe, tmp_path / "run", progress=False)
    assert trainer.world_size == 2
    assert "does not apply with 2 processes: one step per batch" in capsys.readouterr().err
    assert trainer.gradient_clip_val is None or trainer.gradient_clip_val == recipe.trainer.gradient_clip_val


def test_batch_groups_resume_counts_batches():
    split = Split(torch.arange(10.0).reshape(10, 1), torch.zeros(10, dtype=torch.long))
    groups = BatchGroups(TensorBatches(split, 2, shuffle=True, seed=0), 3)
    assert len(groups) == 2
    first_epoch = list(groups)
    assert [len(g) for g in first_epoch] == [3, 2]
    assert sorted(torch.cat([x for g in first_epoch for x, _ in g]).flatten().tolist()) == list(range(10))
    # a checkpoint taken after epoch 1's first group goes on with that epoch's fourth batch
    reference = TensorBatches(split, 2, shuffle=True, seed=0)
    reference.epoch = 1
    epoch1 = list(reference)
    resumed = BatchGroups(TensorBatches(split, 2, shuffle=True, seed=0), 3)
    resumed.batches.epoch = 1
    resumed.load_state_dict({"epoch": 1, "batches_done": 3})
    rest = list(resumed)
    assert [len(g) for g in rest] == [2]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(rest[0], epoch1[3:]))


def test_snapshots_are_taken_when_a_group_passes_a_cycle_end(tmp_path):
    saved = []
    snap = SnapshotCheckpoints({}, tmp_path)
    snap.steps, snap._seen = {10, 20}, 0
    trainer = SimpleNamespace(global_step=0, save_checkpoint=lambda path: saved.append(path.name))
    for step in (4, 8, 12, 16, 20):  # groups of 4 steps: 10 falls inside the group ending at 12
        trainer.global_step = step
        snap.on_train_batch_end(trainer, None, None, None, 0)
    assert saved == ["cycle-0-step12.ckpt", "cycle-1-step20.ckpt"]


def test_default_recipe_groups_its_steps():
    # the default recipe runs an epoch's 20 steps as one group (benchmarks/framework_overhead.py)
    assert load("mlp-digits").performance.steps_per_execution == 20


def test_a_data_module_that_cannot_group_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    import zoo.core.build
    from zoo.cli.main import main

    class ForeignData(SimpleNamespace):  # a plugin's own data module, without zoo's grouping
        pass

    monkeypatch.setattr(zoo.core.build, "build_data", lambda spec, seed=0: ForeignData())
    code = main(["train", "mlp-digits", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "gives a ForeignData, not a zoo.data.datamodule.DataModule" in err and "steps_per_execution=1" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()
