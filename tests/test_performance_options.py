"""Recipe section ``performance``: options that change how the network runs, not what it computes."""

from __future__ import annotations

import torch

from zoo.training.evaluation import load_model
from zoo.training.run import train

TINY = ["trainer.max_epochs=1", "trainer.limit_train_batches=4", "model.width=8", "data.batch_size=64",
        "schedule.warmup_epochs=0", "logger.wandb.mode=disabled"]


def test_channels_last_keeps_weights_and_batches_nhwc_and_trains(tmp_path):
    from zoo.core.recipe import load
    from zoo.training.classifier import Classifier

    recipe = load("resnet-digits", [*TINY, "performance.channels_last=true"]).to_dict()
    module = Classifier(recipe, (1, 8, 8), 10)
    module.configure_model()  # what the Trainer calls before training
    wide = next(m for m in module.net.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert wide.weight.is_contiguous(memory_format=torch.channels_last)
    assert not wide.weight.is_contiguous()
    x = module.standardize(torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8))
    assert x.is_contiguous(memory_format=torch.channels_last)
    result = train("resnet-digits", [*TINY, "performance.channels_last=true"], run_dir=tmp_path / "nhwc",
                   progress=False)
    plain = train("resnet-digits", TINY, run_dir=tmp_path / "nchw", progress=False)
    # the same model and data: the results agree up to the order of floating-point sums
    assert abs(result.metrics["val_loss"] - plain.metrics["val_loss"]) < 1e-3


def test_compile_compiles_the_network_in_place_and_checkpoints_load_uncompiled(tmp_path, monkeypatch):
    import zoo.training.classifier

    compiled = []
    original = zoo.training.classifier.Classifier.configure_model

    def spy(self):
        original(self)
        compiled.append(self.net._compiled_call_impl is not None)

    monkeypatch.setattr(zoo.training.classifier.Classifier, "configure_model", spy)
    # the eager backend: torch.compile's tracing without code generation, quick enough for a test
    options = ["performance.compile=true", "performance.compile_backend=eager"]
    result = train(None, [*TINY, *options], run_dir=tmp_path / "compiled", progress=False)
    assert compiled and all(compiled)
    plain = train(None, TINY, run_dir=tmp_path / "plain", progress=False)
    assert result.metrics == plain.metrics  # eager compilation runs the same operations
    model = load_model(result.best_checkpoint)  # state_dict names unchanged by in-place compilation
    assert model.net._compiled_call_impl is None
