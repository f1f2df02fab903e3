"""zoo show --stats: parameters, FLOPs per image and training-step memory, checked against independent counts."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from torch import nn

from zoo.core.recipe import load
from zoo.tools.model_stats import _module, forward_flops, recipe_stats, training_memory

DIGITS = ((1, 8, 8), 10)


def hooked_flops(module) -> int:
    """FLOPs of one image's forward pass counted another way: forward hooks on every conv and linear layer."""
    macs = []

    def conv(m: nn.Conv2d, inputs, out):
        macs.append(out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1])

    def linear(m: nn.Linear, inputs, out):
        macs.append(out[0].numel() * m.in_features)

    hooks = [m.register_forward_hook(conv) for m in module.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear) for m in module.modules() if isinstance(m, nn.Linear)]
    module.eval()
    with torch.no_grad():
        module(module.standardize(torch.rand(1, *module.input_shape)))
    for h in hooks:
        h.remove()
    return 2 * sum(macs)  # a multiply-add is two FLOPs


def test_mlp_parameters_and_flops_match_the_arithmetic():
    stats = recipe_stats(load("mlp-digits"), *DIGITS)
    # 64 -> 512 -> 512 -> 10; the hidden linears have no bias (batch norm follows), batch norm has 2 x 512 each
    assert stats.parameters == stats.trainable_parameters == 64 * 512 + 512 * 512 + (512 * 10 + 10) + 2 * (2 * 512)
    assert stats.flops_per_image == 2 * (64 * 512 + 512 * 512 + 512 * 10)
    assert stats.members == 1 and stats.views == 1


def test_resnet_flops_match_a_count_by_forward_hooks():
    for overrides, shape in ((["model.depth=20"], (1, 8, 8)), (["model.depth=18", "model.width=16"], (3, 32, 32))):
        module = _module(load("resnet-digits", overrides), shape, 10)
        assert forward_flops(module) == hooked_flops(module) > 0
    stats = recipe_stats(load("resnet-digits"), *DIGITS)
    assert stats.views == 5 and stats.flops_per_prediction == 5 * stats.flops_per_image  # the image and 4 shifts


def test_training_memory_counts_what_one_step_holds():
    recipe = load("mlp-digits")  # AdamW: two moments per parameter
    module = _module(recipe, *DIGITS)
    n = sum(p.numel() for p in module.net.parameters())
    memory = training_memory(module, recipe)
    assert memory.parameters == memory.gradients == 4 * n and memory.optimizer_state == 8 * n and memory.ema == 0
    assert memory.batch_size == 64 and memory.total == 16 * n + memory.activations
    # activations grow with the batch, by at least the inputs of the three linear layers per sample
    sizes = [training_memory(_module(load("mlp-digits", [f"data.batch_size={b}"]), *DIGITS),
                             load("mlp-digits", [f"data.batch_size={b}"])).activations for b in (64, 128, 192)]
    assert sizes[1] - sizes[0] == sizes[2] - sizes[1] >= 64 * 4 * (64 + 512 + 512)
    nesterov = load("resnet-digits")  # momentum: one buffer per parameter
    memory = training_memory(_module(nesterov, *DIGITS), nesterov)
    assert memory.optimizer_state == memory.parameters


def test_bf16_autocast_shrinks_the_activations_and_ema_keeps_a_copy():
    plain = load("resnet-digits", ["model.depth=8"])
    fp32 = training_memory(_module(plain, *DIGITS), plain)
    mixed = load("resnet-digits", ["model.depth=8", "trainer.precision=bf16-mixed", "ema={decay: 0.99}"])
    bf16 = training_memory(_module(mixed, *DIGITS), mixed)
    assert bf16.precision == "bf16-mixed" and bf16.activations < 0.75 * fp32.activations
    assert bf16.ema == bf16.parameters == fp32.parameters


def test_frozen_whitened_filters_count_as_parameters_not_trainable_ones():
    stats = recipe_stats(load("resnet-digits", ["model.depth=8", "model.init=whitening"]), (3, 32, 32), 10)
    module = _module(load("resnet-digits", ["model.depth=8"]), (3, 32, 32), 10)
    first_conv = next(m for m in module.net.modules() if isinstance(m, nn.Conv2d))
    assert stats.parameters - stats.trainable_parameters == first_conv.weight.numel()


def test_ensembles_add_up_their_members():
    single = recipe_stats(load("mlp-digits"), *DIGITS)
    five = recipe_stats(load("mlp-digits-ensemble"), *DIGITS)
    assert five.members == 5 and five.parameters == 5 * single.parameters
    assert five.flops_per_image == 5 * single.flops_per_image
    snapshots = recipe_stats(load("mlp-digits-snapshot"))  # reads the digits for the steps per epoch
    assert snapshots.members == 8 and snapshots.parameters == 8 * single.parameters  # warmup + 8 cycles of 15


def test_zoo_show_stats_on_the_command_line():
    out = subprocess.run([sys.executable, "-m", "zoo", "show", "resnet-digits", "--stats"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "parameters:" in out.stdout and "FLOPs per image:" in out.stdout and "activations" in out.stdout
    out = subprocess.run([sys.executable, "-m", "zoo", "show", "resnet20-cifar10", "--stats", "--json",
                          "--input-shape", "3x32x32", "--classes", "10"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["input_shape"] == [3, 32, 32] and 0.26e6 < stats["parameters"] < 0.28e6  # He et al.: 0.27 M
    assert stats["memory"]["total"] > stats["memory"]["activations"] > 0
    out = subprocess.run([sys.executable, "-m", "zoo", "show", "mlp-digits", "--stats", "--input-shape", "3x32"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "--input-shape and --classes go together" in out.stderr
