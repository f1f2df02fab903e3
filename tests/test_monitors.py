"""The training monitors, each on a tiny Lightning fit of a few steps."""

from __future__ import annotations

import math
import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from zoo.monitoring.monitors import (
    ActivationStats,
    DivergenceGuard,
    DivergenceWarning,
    UpdateRatio,
    UpdateRatioWarning,
    activation_types,
)

torch.set_num_threads(1)


class Tiny(L.LightningModule):
    """Linear -> activation -> linear on 8 features, 3 classes, plain SGD."""

    def __init__(self, lr: float = 0.1, act: type[nn.Module] = nn.ReLU, bias: float = 0.0, weight_std=None):
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(8, 32), act(), nn.Linear(32, 3))
        nn.init.constant_(self.net[0].bias, bias)
        if weight_std is not None:
            nn.init.normal_(self.net[0].weight, std=weight_std)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def data(n: int = 64, batch: int = 16) -> DataLoader:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def fit(module: L.LightningModule, callbacks: list, steps: int = 6, **kwargs) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=steps,
        max_epochs=100,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **kwargs,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        trainer.fit(module, train_dataloaders=data())
    return trainer


# --- ActivationStats ----------------------------------------------------------------------------------


def test_activation_types_come_from_the_registry():
    types = activation_types()
    assert {nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.LeakyReLU} <= set(types)
    assert nn.Identity not in types


def test_relu_layer_with_very_negative_bias_is_reported_dead():
    torch.manual_seed(0)
    stats = ActivationStats(every_n_steps=1)
    trainer = fit(Tiny(bias=-100.0), [stats], steps=3)
    assert stats.last["net.1"]["dead"] == 1.0
    assert stats.last["net.1"]["mean"] == 0.0
    assert trainer.callback_metrics["activations/net.1/dead"] == 1.0

    healthy = ActivationStats(every_n_steps=1)
    fit(Tiny(bias=0.0), [healthy], steps=3)
    assert healthy.last["net.1"]["dead"] < 0.5


def test_tanh_saturation_and_check_steps_only(monkeypatch):
    torch.manual_seed(0)
    stats = ActivationStats(every_n_steps=3)
    measured = []
    original = stats._stats
    monkeypatch.setattr(stats, "_stats", lambda m, out: measured.append(1) or original(m, out))
    fit(Tiny(act=nn.Tanh, weight_std=10.0, lr=0.0), [stats], steps=7)
    assert len(measured) == 3  # steps 0, 3 and 6 of 0..6, one activation module
    assert set(stats.last["net.1"]) == {"mean", "std", "saturated"}
    assert stats.last["net.1"]["saturated"] > 0.5


# --- UpdateRatio --------------------------------------------------------------------------------------


def test_update_ratio_of_plain_sgd_is_lr_times_gradient_over_weight():
    torch.manual_seed(0)
    module = Tiny(lr=0.01)
    w0 = module.net[0].weight.detach().clone()
    monitor = UpdateRatio(every_n_steps=100, band=(0.0, 1.0))
    fit(module, [monitor], steps=1)
    assert set(monitor.last) == {"net.0.weight", "net.2.weight"}  # biases left out
    expected = 0.01 * monitor.last_grad_norm["net.0.weight"] / w0.norm().item()
    assert monitor.last["net.0.weight"] == pytest.approx(expected, rel=1e-4)
    assert monitor.warned == []


def test_update_ratio_warns_when_the_learning_rate_is_far_too_high():
    torch.manual_seed(0)
    monitor = UpdateRatio(every_n_steps=1, patience=2)
    with pytest.warns(UpdateRatioWarning, match=r"layer net\.\d\.weight: update/weight ratio .* too high"):
        fit(Tiny(lr=50.0), [monitor], steps=3)
    assert monitor.warned and all(ratio > 1e-2 for _, _, ratio in monitor.warned)
    # once per excursion: two layers out of band from step 0, each warned at its second check only
    assert sorted(step for step, _, _ in monitor.warned) == [1, 1]


# --- DivergenceGuard ----------------------------------------------------------------------------------


def test_divergence_guard_stops_a_huge_learning_rate_and_says_why():
    torch.manual_seed(0)
    guard = DivergenceGuard()
    with pytest.warns(DivergenceWarning, match=r"stopping training at step \d+ .*(exceeds 3 x the initial loss|is nan|is inf)"):
        trainer = fit(Tiny(lr=1e4), [guard], steps=50)
    assert guard.stopped and guard.stopped_step is not None
    assert trainer.global_step == guard.stopped_step + 1 < 50
    assert guard.initial_loss == pytest.approx(math.log(3), abs=0.5)
    # the bad step's update was skipped, so the weights stay finite
    assert all(torch.isfinite(p).all() for p in trainer.lightning_module.parameters())


def test_divergence_guard_leaves_a_healthy_run_alone():
    torch.manual_seed(0)
    guard = DivergenceGuard(check_every_n_steps=4)
    trainer = fit(Tiny(lr=0.1), [guard], steps=10)
    assert not guard.stopped and trainer.global_step == 10
    assert guard.initial_loss is not None
    resumed = DivergenceGuard()
    resumed.load_state_dict(guard.state_dict())  # what a checkpoint carries
    assert resumed.initial_loss == guard.initial_loss


class NanInBackward(Tiny):
    def training_step(self, batch, batch_idx):
        x, y = batch
        # log(0) is -inf forward; its backward 1/0 times 0 is NaN, which anomaly mode traces to MulBackward
        return torch.log(self.net(x).sum() * 0.0 + 0.0) * 0.0 + F.cross_entropy(self.net(x), y)


def test_anomaly_detection_names_the_backward_op_and_is_restored():
    assert not torch.is_anomaly_enabled()
    guard = DivergenceGuard(detect_anomaly=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="returned nan values"):
            fit(NanInBackward(), [guard], steps=2)
    assert not torch.is_anomaly_enabled()
    said = [str(w.message) for w in caught if issubclass(w.category, DivergenceWarning)]
    assert len(said) == 1 and "anomaly detection stopped the run at step 0" in said[0]
    assert "LogBackward0" in said[0]


def test_divergence_guard_with_the_zoo_training_loop(tmp_path, monkeypatch):
    """End to end through fit_one: a huge SGD step on digits stops early, the checkpoints stay finite."""
    monkeypatch.chdir(tmp_path)
    from zoo.core.recipe import load
    from zoo.training.fit import _quiet_lightning, fit_one

    _quiet_lightning()
    recipe = load("mlp-digits", [
        "model.width=32", "optimizer={name: sgd, lr: 10000.0}", "schedule=constant", "augment=[]",
        "trainer.max_epochs=3", "trainer.limit_train_batches=8", "trainer.enable_progress_bar=false",
    ])
    guard = DivergenceGuard()
    with pytest.warns(DivergenceWarning, match="stopping training at step"):
        result = fit_one(recipe, tmp_path / "run", callbacks=[guard])
    assert guard.stopped and guard.stopped_step < 3 * 8
    for ckpt in (tmp_path / "run" / "checkpoints").glob("*.ckpt"):
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert 0.0 <= result.test_acc <= 1.0
