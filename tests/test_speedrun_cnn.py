"""The speed-run CNN, PyTorch's default initializer, the lr multiplier for 1-D parameters, and the
recipe that puts them together for CIFAR-10 on a CPU."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import zoo
from zoo.core.build import build_network, build_optimizer
from zoo.core.errors import ZooError
from zoo.core.recipe import load


def conv_params(c_in: int, c_out: int, k: int = 3) -> int:
    return c_in * c_out * k * k


def test_default_network_is_airbench94s_shape():
    net = build_network({"name": "speedrun_cnn"}, (3, 32, 32), 10)
    stem = conv_params(3, 24, 2) + 24
    groups = sum(conv_params(a, b) + conv_params(b, b) + 4 * b for a, b in [(24, 64), (64, 256), (256, 256)])
    assert sum(p.numel() for p in net.parameters()) == stem + groups + 256 * 10
    assert net(torch.randn(5, 3, 32, 32)).shape == (5, 10)
    # norm scales are frozen at 1; their shifts train
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 6 and all(not m.weight.requires_grad and m.bias.requires_grad for m in norms)
    assert norms[0].momentum == pytest.approx(0.4) and norms[0].eps == 1e-12


def test_initialize_whitens_the_stem_and_starts_groups_as_identities():
    torch.manual_seed(0)
    net = build_network({"name": "speedrun_cnn", "widths": [16, 32]}, (3, 16, 16), 10)
    sample = torch.randn(64, 3, 16, 16)
    net.initialize(sample)
    w = net.stem.weight
    assert not w.requires_grad  # whitening filters are fixed features
    assert torch.equal(w[0::2], -w[1::2])  # +/- pairs of eigen-filters
    conv = net.groups[1].conv1  # 16 -> 32 channels: its first 16 filters pass their channel through
    centre = conv.weight[:16, :, 1, 1]
    assert torch.equal(centre, torch.eye(16))
    assert conv.weight[:16].abs().sum() == 16
    assert conv.weight[16:].abs().sum() > 0  # the rest keep PyTorch's random start


def test_dirac_off_keeps_torch_default_weights():
    torch.manual_seed(0)
    net = build_network({"name": "speedrun_cnn", "widths": [8], "dirac": False}, (3, 8, 8), 10)
    net.initialize(torch.randn(32, 3, 8, 8))
    w = net.groups[0].conv1.weight
    bound = 1 / math.sqrt(w[0].numel())  # kaiming_uniform(a=sqrt(5)) leaves U(-1/sqrt(fan_in), +)
    assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound


def test_too_many_groups_for_the_input_is_refused_naming_the_widths():
    with pytest.raises(ZooError, match="use fewer widths"):
        build_network({"name": "speedrun_cnn"}, (1, 8, 8), 10)
    with pytest.raises(ZooError, match="image inputs"):
        build_network({"name": "speedrun_cnn"}, (64,), 10)


def test_torch_default_initializer_redraws_what_a_fresh_layer_holds():
    layer = nn.Linear(50, 20)
    with torch.no_grad():
        layer.weight.fill_(3.0)
    torch.manual_seed(1)
    zoo.initializers.build("torch_default").apply(layer)
    torch.manual_seed(1)
    fresh = nn.Linear(50, 20)
    torch.manual_seed(1)
    fresh.reset_parameters()
    assert torch.equal(layer.weight, fresh.weight) and torch.equal(layer.bias, fresh.bias)


def test_norm_and_bias_lr_multiplier_scales_only_one_dimensional_parameters():
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    opt = build_optimizer({"name": "sgd", "lr": 0.1, "weight_decay": 0.01}, net, norm_and_bias_lr=64)
    weights, vectors = opt.param_groups
    assert {p.ndim for p in weights["params"]} == {2} and {p.ndim for p in vectors["params"]} == {1}
    assert weights["lr"] == pytest.approx(0.1) and vectors["lr"] == pytest.approx(6.4)
    assert weights["weight_decay"] == 0.01 and vectors["weight_decay"] == 0.0
    assert "lr_scale" not in vectors
    # with decay on 1-D parameters the multiplier still needs its own group, decay kept
    opt = build_optimizer({"name": "sgd", "lr": 0.1, "weight_decay": 0.01}, net, True, 64)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.01]
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 6.4])


def test_switching_data_set_on_the_command_line_keeps_the_settings_it_shares():
    recipe = load("cifar10-cpu", ["data.name=imagefolder", "data.root=somewhere"])
    assert recipe.data["name"] == "imagefolder" and recipe.data["root"] == "somewhere"
    assert recipe.data["batch_size"] == 1024 and recipe.data["eval_batch_size"] == 2000
    # a setting the new data set does not take is dropped, not refused
    digits = load("cifar10-cpu", ["data.name=digits"])
    assert "root" not in digits.data and digits.data["batch_size"] == 1024
    # an override after the switch wins over what was carried
    assert load("cifar10-cpu", ["data.name=imagefolder", "data.batch_size=64"]).data["batch_size"] == 64
    # other components start from their own defaults, as before
    assert "momentum" not in load("cifar10-cpu", ["optimizer.name=adam"]).optimizer


def test_cifar10_cpu_recipe_trains_end_to_end_on_a_tiny_synthetic_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = zoo.train(
        "cifar10-cpu",
        [
            "data.name=synthetic", "data.n_train=256", "data.n_val=64", "data.n_test=64", "data.signal=2.0",
            "data.batch_size=64", "model.widths=[8,16,16]", "trainer.max_epochs=10",
            "schedule.warmup_epochs=0.5", "logger.wandb.mode=disabled",
        ],
        progress=False,
    )
    assert result.test_acc > 0.5  # 10 classes: chance is 0.1
