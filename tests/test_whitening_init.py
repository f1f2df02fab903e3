"""The data-dependent `whitening` initializer: the first conv decorrelates its input patches."""

from __future__ import annotations

import csv
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from zoo import initializers
from zoo.core.build import param_groups
from zoo.core.errors import RegistryError

EPS = 5e-4


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def smooth_images(n: int = 64, channels: int = 3, size: int = 16) -> torch.Tensor:
    """Noise blurred by a 5x5 box, channels mixed: neighbouring pixels and channels strongly correlate."""
    noise = torch.randn(n, channels, size + 4, size + 4)
    blurred = F.avg_pool2d(noise, 5, stride=1)
    mix = torch.eye(channels) + 0.5  # every channel shares half of the others
    return torch.einsum("dc,nchw->ndhw", mix, blurred)


def patch_covariance(x: torch.Tensor, kernel: int) -> torch.Tensor:
    patches = F.unfold(x.double(), kernel).transpose(1, 2).reshape(-1, x.shape[1] * kernel * kernel)
    return torch.cov(patches.T)


def output_covariance(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Channel covariance of the conv's outputs over every position, no padding (the patches whitened)."""
    out = F.conv2d(x.double(), weight.double())
    return torch.cov(out.transpose(0, 1).reshape(out.shape[1], -1))


def conv_net(out_channels: int = 16, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, out_channels, kernel, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.Conv2d(out_channels, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def test_registered_with_its_parameters():
    entry = initializers.get("whitening")
    assert "Coates" in entry.summary
    defaults = {p.name: p.default for p in entry.params}
    assert defaults == {"rest": "auto", "eps": EPS, "freeze": True, "bias": 0.0}
    assert initializers.validate({"name": "whitening", "rest": "orthogonal"})["rest"] == {
        "name": "orthogonal",
        "bias": 0.0,
    }
    with pytest.raises(RegistryError, match="eps"):
        initializers.build({"name": "whitening", "eps": 0})


def test_positive_filters_whiten_the_patches_and_negatives_mirror_them():
    x = smooth_images()
    model = conv_net(out_channels=16)
    initializers.build("whitening").apply(model, sample=x)
    w = model[0].weight.detach()
    # the sample really is correlated: its patch spectrum spans orders of magnitude
    values = torch.linalg.eigvalsh(patch_covariance(x, 3)).flip(0)
    assert values[0] / values[7] > 20
    # filters 2i+1 are exactly -(filter 2i)
    assert torch.equal(w[1::2], -w[0::2])
    # outputs of the 8 positive filters: decorrelated, variance l / (l + eps) (1 up to eps), largest first
    cov = output_covariance(w[0::2], x)
    expected = values[:8] / (values[:8] + EPS)
    torch.testing.assert_close(cov, torch.diag(expected), atol=1e-4, rtol=1e-4)
    assert float((cov - torch.eye(8)).abs().max()) < EPS / values[7] + 1e-4
    # the rest was initialized by `rest` (auto: He normal) and stays trainable
    assert not torch.equal(model[3].weight, torch.zeros_like(model[3].weight))
    assert torch.equal(model[0].bias, torch.zeros(16))


def test_odd_width_ends_on_a_lone_positive_filter_and_extra_channels_keep_rest():
    x = smooth_images(channels=1)
    model = nn.Sequential(nn.Conv2d(1, 7, 2))
    initializers.build({"name": "whitening", "bias": 0.1}).apply(model, sample=x)
    w = model[0].weight.detach()
    torch.testing.assert_close(w[1:6:2], -w[0:6:2], atol=0, rtol=0)
    cov = output_covariance(w[0::2], x)  # filters 0, 2, 4, 6: the four directions of a 2x2 patch
    values = torch.linalg.eigvalsh(patch_covariance(x, 2)).flip(0)
    torch.testing.assert_close(cov, torch.diag(values / (values + EPS)), atol=1e-4, rtol=1e-4)
    assert torch.equal(model[0].bias, torch.full((7,), 0.1))
    # a 1-channel 2x2 patch has 4 directions, so 8 filters at most: a 9th would keep its `rest` weights
    wide = nn.Sequential(nn.Conv2d(1, 10, 2))
    rest = {"name": "constant", "value": 0.25}
    initializers.build({"name": "whitening", "rest": rest}).apply(wide, sample=x)
    assert torch.equal(wide[0].weight[8:], torch.full((2, 1, 2, 2), 0.25))
    assert torch.equal(wide[0].weight[1:8:2], -wide[0].weight[0:8:2])


def test_freeze_takes_only_the_whitened_weight_out_of_training():
    model = conv_net()
    initializers.build("whitening").apply(model, sample=smooth_images(16))
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["0.weight"]
    # the optimizer is built from the trainable parameters only
    optimized = {id(p) for group in param_groups(model) for p in group["params"]}
    assert id(model[0].weight) not in optimized and id(model[0].bias) in optimized
    initializers.build({"name": "whitening", "freeze": False}).apply(model, sample=smooth_images(16))
    assert all(p.requires_grad for p in model.parameters())


class _Backwards(nn.Module):
    """The conv registered first runs second: forward order, not registration order, picks the conv."""

    def __init__(self) -> None:
        super().__init__()
        self.second = nn.Conv2d(6, 6, 3)
        self.first = nn.Conv2d(3, 6, 3)
        self.norm = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(self.norm(x)))


def test_the_first_conv_in_forward_order_on_its_actual_input_is_whitened():
    model = _Backwards()
    with torch.no_grad():
        model.norm.weight.fill_(2.0)  # the conv's input is the norm's output, not the raw sample
    x = smooth_images(32)
    initializers.build("whitening").apply(model, sample=x)
    assert not model.first.weight.requires_grad and model.second.weight.requires_grad
    # measured in eval mode: the norm's running statistics did not move, and its mode came back
    assert model.training and model.norm.num_batches_tracked.item() == 0
    model.eval()
    with torch.no_grad():
        seen = model.norm(x)  # in eval mode, as the initializer saw it
    cov = output_covariance(model.first.weight[0::2], seen)
    assert float((cov.diagonal() - 1).abs().max()) < 0.05


def test_resnet20_whitened_through_the_registry():
    shape = (1, 8, 8)
    model = zoo.models.build(
        {"name": "resnet", "depth": 20, "width": 8, "init": "whitening"}, input_shape=shape, num_classes=10
    )
    x = F.avg_pool2d(torch.randn(64, 1, 10, 10), 3, stride=1)  # smooth 8x8 images
    model.initialize(x)
    stem = model.stem[0]
    assert not stem.weight.requires_grad
    assert sum(not p.requires_grad for p in model.parameters()) == 1
    w = stem.weight.detach()
    assert torch.equal(w[1::2], -w[0::2])
    cov = output_covariance(w[0::2], x)
    values = torch.linalg.eigvalsh(patch_covariance(x, 3)).flip(0)[:4]
    torch.testing.assert_close(cov, torch.diag(values / (values + EPS)), atol=1e-4, rtol=1e-4)
    out = model(x)
    assert out.shape == (64, 10) and bool(torch.isfinite(out).all())
    out.sum().backward()
    assert stem.weight.grad is None and model.head.weight.grad is not None


def test_trains_end_to_end(tmp_path):
    result = zoo.train(
        "resnet-digits",
        [
            "model.init=whitening",
            "model.width=8",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=5",
            "schedule.warmup_epochs=0",
            "trainer.limit_val_batches=1",
            "tta={crops: 0}",
            "logger.wandb.mode=disabled",
        ],
        run_dir=tmp_path / "run",
        progress=False,
    )
    assert math.isfinite(result.metrics["val_loss"]) and math.isfinite(result.metrics["test_loss"])
    with open(tmp_path / "run" / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    train_losses = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    assert train_losses and all(math.isfinite(v) for v in train_losses)
    assert 0.0 <= result.test_acc <= 1.0


def test_without_a_sample_errors():
    with pytest.raises(RegistryError, match="'whitening' needs a sample batch"):
        initializers.build("whitening").apply(conv_net())


def test_model_without_a_conv_errors():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    with pytest.raises(RegistryError, match="'whitening'.*has none"):
        initializers.build("whitening").apply(mlp, sample=torch.randn(8, 3, 2, 2))


def test_grouped_conv_errors():
    model = nn.Sequential(nn.Conv2d(3, 6, 3, groups=3))
    with pytest.raises(RegistryError, match="groups=3"):
        initializers.build("whitening").apply(model, sample=smooth_images(8))


def test_conv_the_sample_never_reaches_errors():
    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            return self.head(x.mean((2, 3)))

    with pytest.raises(RegistryError, match="no nn.Conv2d ran on the sample"):
        initializers.build("whitening").apply(Unused(), sample=smooth_images(8))
