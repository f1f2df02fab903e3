"""zoo sanity: the pre-training checks pass on the shipped recipes and name what breaks on broken ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoo.core.recipe import load
from zoo.tools import sanity

REPO = Path(__file__).resolve().parent.parent

# Tiny workloads: extra threads only contend with each other on a busy machine.
torch.set_num_threads(1)

# Two broken models for the gradient check, as a recipe plugin: one cuts the graph between the hidden
# layer and the head, the other hands back logits cut off from every parameter.
PLUGIN = '''
from math import prod
from torch import nn
from zoo import models


class Cut(nn.Module):
    def __init__(self, input_shape, num_classes, whole):
        super().__init__()
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(prod(input_shape), 32), nn.ReLU())
        self.head = nn.Linear(32, num_classes)
        self.whole = whole

    def forward(self, x):
        out = self.head(self.hidden(x).detach())
        return out.detach() if self.whole else out


@models.register("sanity_cut_hidden")
def cut_hidden(input_shape, num_classes):
    """Hidden features detached from the head."""
    return Cut(input_shape, num_classes, whole=False)


@models.register("sanity_cut_output")
def cut_output(input_shape, num_classes):
    """Logits detached from every parameter."""
    return Cut(input_shape, num_classes, whole=True)
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("plugins") / "sanity_cut.py"
    path.write_text(PLUGIN)
    return str(path)


def by_name(results):
    return {r.name: r for r in results}


@pytest.mark.parametrize("recipe", ["mlp-digits", "resnet-digits"])
def test_shipped_recipes_pass_every_check(recipe):
    results = by_name(sanity.run(recipe))
    assert list(results) == ["initial_loss", "regularization", "overfit", "gradients"]
    assert all(r.passed for r in results.values()), sanity.format_table(list(results.values()))
    loss = float(results["initial_loss"].measured)
    assert 2.05 <= loss <= 4.3  # ln 10 = 2.30, plus what the init spread of the logits adds


def test_zero_init_fails_the_overfit_and_gradient_checks():
    results = by_name(sanity.run("mlp-digits", ["model.init=zeros", "model.width=64"]))
    # all-zero weights give uniform logits: exactly ln(10) at first, so only learning can expose them
    assert results["initial_loss"].passed
    assert not results["overfit"].passed and results["overfit"].measured.startswith(("10%", "15%", "20%"))
    grads = results["gradients"]
    assert not grads.passed and "zero gradient" in grads.detail and "net.layers.1.weight" in grads.detail


def test_constant_init_cannot_break_symmetry():
    results = by_name(sanity.run("mlp-digits", ["model.init={name: constant, value: 0.05}", "model.width=64"]))
    assert not results["overfit"].passed


def test_detached_hidden_layer_is_named_by_the_gradient_check(plugin):
    results = by_name(sanity.run("mlp-digits", [f"plugins=[{plugin}]", "model=sanity_cut_hidden"]))
    grads = results["gradients"]
    assert not grads.passed
    assert grads.measured == "2/4 reached"
    assert "no gradient: net.hidden.1.weight, net.hidden.1.bias" in grads.detail


def test_detached_output_fails_without_crashing(plugin):
    results = by_name(sanity.run("mlp-digits", [f"plugins=[{plugin}]", "model=sanity_cut_output"]))
    assert not results["gradients"].passed and "does not depend on any parameter" in results["gradients"].detail
    assert not results["overfit"].passed and results["overfit"].measured == "error"
    assert "does not require grad" in results["overfit"].detail


def test_oversized_init_fails_the_initial_loss_check():
    results = by_name(sanity.run("mlp-digits", ["model.init={name: normal, std: 1.0}", "model.width=64"]))
    check = results["initial_loss"]
    assert not check.passed and float(check.measured) > 4.3 and "init scale" in check.detail


def test_a_loss_that_ignores_l2_fails_the_regularization_check(monkeypatch):
    from zoo.training.classifier import Classifier

    monkeypatch.setattr(Classifier, "penalty", lambda self: torch.zeros(()))
    setup = sanity.prepare(load("mlp-digits", ["model.width=64"]))
    result = sanity.check_regularization(setup)
    assert not result.passed and "ignores regularization.l2" in result.detail


def test_gradients_gated_by_a_zero_scale_at_init_still_pass():
    setup = sanity.prepare(load("resnet-digits", ["model.zero_init_residual=true"]))
    result = sanity.check_gradients(setup)
    assert result.passed, result.detail
    assert "zero at init, flowing after one step: net.blocks.0.convs.0.weight" in result.detail


def test_checks_leave_the_shared_model_untouched():
    setup = sanity.prepare(load("mlp-digits", ["model.width=64"]))
    before = {k: v.clone() for k, v in setup.module.state_dict().items()}
    for check in sanity.CHECKS.values():
        check(setup)
    after = setup.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def zoo(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "zoo", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=300
    )


def test_cli_exit_status_and_table():
    ok = zoo("sanity", "mlp-digits", "--json")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "4/4 checks passed" in ok.stdout
    report = json.loads(ok.stdout.strip().splitlines()[-1])
    assert report["passed"] and [c["verdict"] for c in report["checks"]] == ["pass"] * 4

    broken = zoo("sanity", "mlp-digits", "model.init=zeros", "model.width=64")
    assert broken.returncode == 1, broken.stderr[-2000:]
    row = next(line for line in broken.stdout.splitlines() if line.startswith("overfit"))
    assert row.rstrip().endswith("FAIL")
    assert "failed: regularization, overfit, gradients" in broken.stdout


def test_cli_user_mistake_exits_2(capsys):
    from zoo.cli.main import main

    assert main(["sanity", "mlp-digits", "model.init=zeroes"]) == 2
    assert "unknown initializers 'zeroes'" in capsys.readouterr().err
    assert main(["sanity", "mlp-digits", "--steps", "0"]) == 2
