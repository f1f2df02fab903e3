"""Weight averaging (recipe section ``ema``): the average is what gets validated, saved and tested."""

from __future__ import annotations

import torch

from zoo.training.evaluation import evaluate, load_model
from zoo.training.run import train

TINY = ["trainer.max_epochs=2", "model.width=32", "data.batch_size=128", "logger.wandb.mode=disabled"]


def test_ema_weights_are_saved_and_evaluated(tmp_path):
    result = train(None, [*TINY, "ema={decay: 0.9}"], run_dir=tmp_path / "run", progress=False)
    ckpt = torch.load(result.best_checkpoint, weights_only=True)
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    weights = [k for k in averaged if k.startswith("net.") and averaged[k].is_floating_point()]
    assert weights and any(not torch.equal(averaged[k], raw[k]) for k in weights)
    # the reported test accuracy is the averaged model's: evaluating the saved weights again gives it
    model = load_model(result.best_checkpoint)
    assert all(torch.equal(model.state_dict()[k], averaged[k]) for k in weights)
    assert evaluate(model, model.recipe["data"], "test")["acc"] == result.test_acc


def test_without_ema_checkpoints_hold_the_trained_weights(tmp_path):
    result = train(None, TINY, run_dir=tmp_path / "run", progress=False)
    ckpt = torch.load(result.best_checkpoint, weights_only=True)
    assert "current_model_state" not in ckpt and "averaging_state" not in ckpt


def test_before_its_first_update_the_average_is_the_current_weights(tmp_path):
    # 3 epochs of 12 steps end before start_step 1000: validation, checkpoints and the final model must be
    # the trained weights, as without ema (Lightning's callback alone kept the untrained copy: 0.04 val acc
    # here against 0.16)
    late = train(None, [*TINY, "trainer.max_epochs=3", "ema={decay: 0.9, start_step: 1000}"],
                 run_dir=tmp_path / "late", progress=False)
    plain = train(None, [*TINY, "trainer.max_epochs=3"], run_dir=tmp_path / "plain", progress=False)
    ckpt = torch.load(late.best_checkpoint, weights_only=True)
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert all(torch.equal(averaged[k], raw[k]) for k in raw if k.startswith("net."))
    assert (late.val_acc, late.test_acc) == (plain.val_acc, plain.test_acc)
