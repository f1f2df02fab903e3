"""zoo init-explorer: the four classic outcomes of the initialization experiment, on the numbers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoo.core.errors import ZooError
from zoo.tools.init_explorer import explore, parse_spec

REPO = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)

# Smaller than the lecture's 10 x 500 with 1000 samples, but each layer's statistics are still
# averages over 512 x 256 numbers, so the outcomes are the same.
SIZE = {"depth": 10, "width": 256, "batch": 512, "seed": 0}


def test_tanh_small_gaussian_collapses_to_zero():
    result = explore("tanh", {"name": "normal", "std": 0.01}, **SIZE)
    stds = result.column("act_std")
    # each layer multiplies the std by about 0.01 * sqrt(256) = 0.16
    assert stds[0] == pytest.approx(0.16, rel=0.1)
    assert stds[-1] < 1e-6
    assert all(b < a for a, b in zip(stds, stds[1:]))
    # dW = (d loss / d pre-activation) x (input activation)^T: one factor shrinks going forward and the
    # other going backward, so every layer's weight gradient is equally tiny next to a healthy init's
    healthy = explore("tanh", "xavier_normal", **SIZE)
    assert max(result.column("weight_grad_std")) < 1e-4 * min(healthy.column("weight_grad_std"))


def test_tanh_unit_gaussian_saturates():
    result = explore("tanh", {"name": "normal", "std": 1.0}, **SIZE)
    saturated = result.column("saturated")
    assert min(saturated) > 0.5  # in fact about 0.87 at width 256 (0.9 at 500)
    assert all(s == pytest.approx(0.98, abs=0.02) for s in result.column("act_std"))


def test_tanh_xavier_stays_healthy():
    result = explore("tanh", "xavier_normal", **SIZE)
    stds = result.column("act_std")
    assert stds[-1] > 0.1 and max(stds) < 0.9
    assert max(result.column("saturated")) < 0.2
    assert stds[-1] / stds[0] > 0.5
    # the textbook gain-1 Glorot shrinks slowly but stays in the band too
    plain = explore("tanh", "xavier_normal", init_activation="identity", **SIZE)
    assert plain.column("act_std")[-1] > 0.1 and max(plain.column("saturated")) < 0.05


def test_relu_kaiming_keeps_the_scale_and_plain_xavier_halves_the_variance():
    he = explore("relu", "kaiming_normal", **SIZE)
    stds = he.column("act_std")
    assert 0.5 <= stds[-1] / stds[0] <= 2
    glorot = explore("relu", "xavier_normal", init_activation="identity", **SIZE)
    g = glorot.column("act_std")
    per_layer = (g[-1] / g[0]) ** (1 / (len(g) - 1))
    assert per_layer == pytest.approx(1 / math.sqrt(2), abs=0.05)
    # zoo's xavier scales by the activation's gain, which for ReLU is He's init
    assert explore("relu", "xavier_normal", **SIZE).column("act_std") == pytest.approx(stds, rel=0.2)


def test_plugin_specs_and_widening_activations_work():
    leaky = {"name": "leaky_relu", "negative_slope": 0.2}
    result = explore(leaky, {"name": "orthogonal"}, depth=3, width=32, batch=64)
    assert result.activation == {"name": "leaky_relu", "negative_slope": 0.2}
    assert all(s.dead == 0 and s.saturated is None for s in result.layers)
    wide = explore("maxout", "auto", depth=2, width=16, batch=32)
    assert len(wide.layers) == 2 and all(math.isfinite(s.act_std) for s in wide.layers)
    lsuv = explore("relu", "lsuv", depth=4, width=64, batch=256)  # data-dependent: gets the input batch
    assert all(s.act_std > 0.3 for s in lsuv.layers)


def test_spec_parsing_and_mistakes():
    assert parse_spec("xavier_normal", "init") == "xavier_normal"
    assert parse_spec("{name: normal, std: 1.0}", "init") == {"name": "normal", "std": 1.0}
    with pytest.raises(ZooError, match="space after each colon"):
        parse_spec("{name:normal}", "init")
    with pytest.raises(ZooError, match="unknown initializers 'xavier'"):
        explore("tanh", "xavier", depth=2, width=8, batch=8)
    with pytest.raises(ZooError, match="unknown parameter 'sd'"):
        explore("tanh", {"name": "normal", "sd": 1.0}, depth=2, width=8, batch=8)


def test_seeded_and_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = explore("relu", "kaiming_normal", depth=3, width=32, batch=64, seed=5)
    assert torch.rand(1) == expected
    b = explore("relu", "kaiming_normal", depth=3, width=32, batch=64, seed=5)
    assert a.to_dict() == b.to_dict()


def test_cli_json_and_picture(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "zoo", "init-explorer", "--activation", "tanh", "--init", "{name: normal, std: 1.0}",
         "--depth", "4", "--width", "64", "--batch", "128", "--out", "pic.png", "--json"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["init"] == {"name": "normal", "std": 1.0, "bias": 0.0}
    assert [layer["layer"] for layer in report["layers"]] == [1, 2, 3, 4]
    assert all(layer["saturated"] > 0.5 for layer in report["layers"])
    assert "saturated: |a| > 0.99" in out.stdout
    assert (tmp_path / "pic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
