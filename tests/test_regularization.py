"""Regularization and learning-rate scaling as the training loop applies them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.core.recipe import load
from zoo.training.classifier import Classifier


def module(*overrides):
    """A small classifier in eval mode, so dropout and batch statistics do not change its output between calls."""
    m = Classifier(load(None, ["model.width=16", "model.depth=1", *overrides]).to_dict(), (1, 8, 8), 10)
    m.log = lambda *a, **k: None  # outside a Trainer
    return m.eval()


def test_l1_l2_penalties_cover_weights_not_biases_or_norms():
    m = module("regularization.l1=0.01", "regularization.l2=0.1")
    weights = [p for p in m.net.parameters() if p.ndim > 1]
    expected = 0.01 * sum(w.abs().sum() for w in weights) + 0.1 * sum(w.pow(2).sum() for w in weights)
    assert m.penalty().item() == pytest.approx(expected.item(), rel=1e-5)
    everything = module("regularization.l2=0.1", "regularization.decay_norm_and_bias=true")
    assert len(everything.penalized()) == len(list(everything.net.parameters())) > len(m.penalized())


def test_label_smoothing_enters_the_training_loss_only():
    m = module("regularization.label_smoothing=0.2")
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))
    logits = m(x)
    assert m._step((x, y), "train").item() == pytest.approx(F.cross_entropy(logits, y, label_smoothing=0.2).item(), rel=1e-5)
    assert m._step((x, y), "val").item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)


def test_regularization_raises_the_initial_loss():
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    plain = module()
    strong = module("regularization.l2=0.01")
    strong.load_state_dict(plain.state_dict())
    assert strong._step((x, y), "train") > plain._step((x, y), "train")


def test_learning_rate_scales_with_the_global_batch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = {}

    import lightning as L

    class Spy(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["lr"] = trainer.optimizers[0].param_groups[0]["lr"]

    from zoo.training import fit as training

    original = training.make_trainer
    monkeypatch.setattr(training, "make_trainer", lambda *a, **k: original(*a, **{**k, "extra_callbacks": [Spy()]}))
    zoo.train(None, ["optimizer.lr=0.01", "data.batch_size=64", "lr_scaling.reference_batch_size=16",
                     "trainer.max_steps=1", "schedule=constant"], progress=False)
    assert seen["lr"] == pytest.approx(0.04)  # 0.01 x 64 / 16
