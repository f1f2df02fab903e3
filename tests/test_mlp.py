"""The mlp model: layer layout from the recipe, maxout widths, norm placement, gradient flow."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo


def build(**params):
    return zoo.models.build({"name": "mlp", **params}, input_shape=(1, 8, 8), num_classes=10)


def linears(net):
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


def test_depth_and_width_or_explicit_widths():
    net = build(depth=3, width=32)
    assert [(l.in_features, l.out_features) for l in linears(net)] == [(64, 32), (32, 32), (32, 32), (32, 10)]
    net = build(widths=[16, 8])
    assert [(l.in_features, l.out_features) for l in linears(net)] == [(64, 16), (16, 8), (8, 10)]
    assert build(depth=0).layers[-1].in_features == 64  # logistic regression
    assert build().forward(torch.randn(5, 1, 8, 8)).shape == (5, 10)


def test_maxout_widens_the_layer_in_front():
    net = build(widths=[16], activation={"name": "maxout", "k": 3}, norm="batch")
    first, head = linears(net)
    assert first.out_features == 48 and head.in_features == 16
    norm = next(m for m in net.modules() if isinstance(m, nn.BatchNorm1d))
    assert norm.num_features == 48  # before the activation: sees all pieces
    net = build(widths=[16], activation={"name": "maxout", "k": 3}, norm="batch", norm_position="after")
    norm = next(m for m in net.modules() if isinstance(m, nn.BatchNorm1d))
    assert norm.num_features == 16
    assert net(torch.randn(4, 1, 8, 8)).shape == (4, 10)


def test_norm_position_and_bias():
    before = build(widths=[8], norm="batch", activation="tanh")
    kinds = [type(m) for m in before.layers]
    assert kinds.index(nn.BatchNorm1d) < kinds.index(nn.Tanh)
    assert linears(before)[0].bias is None  # the norm's shift makes it redundant
    after = build(widths=[8], norm="layer", norm_position="after", activation="tanh")
    kinds = [type(m) for m in after.layers]
    assert kinds.index(nn.Tanh) < kinds.index(nn.LayerNorm)
    assert linears(after)[0].bias is not None


def test_dropout_only_when_asked():
    assert not any(isinstance(m, nn.Dropout) for m in build().modules())
    drops = [m for m in build(depth=2, dropout=0.3).modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 2 and drops[0].p == pytest.approx(0.3)


def test_gradients_reach_every_parameter_and_init_applies():
    net = build(depth=2, width=32, norm="batch", activation="tanh", init="xavier_normal")
    net.initialize(torch.randn(64, 1, 8, 8))
    w = linears(net)[1].weight
    assert w.std().item() == pytest.approx(5 / 3 * (2 / 64) ** 0.5, rel=0.2)  # Glorot, tanh gain 5/3
    loss = nn.functional.cross_entropy(net(torch.randn(16, 1, 8, 8)), torch.randint(0, 10, (16,)))
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_parameters_are_reported():
    with pytest.raises(zoo.ZooError, match=r"dropout: .*less than 1"):
        build(dropout=1.5)
    with pytest.raises(zoo.ZooError, match=r"model\.activation: unknown activations 'rel'"):
        zoo.models.build({"name": "mlp", "activation": "rel"}, where="model", input_shape=(4,), num_classes=2)
