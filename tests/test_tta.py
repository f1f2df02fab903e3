"""Test-time augmentation: which views are taken, and that predictions average over them."""

from __future__ import annotations

import torch

from zoo.core.recipe import load
from zoo.data.tta import shift_batch, views
from zoo.training.classifier import Classifier


def test_shift_moves_content_and_fills_zeros():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    down = shift_batch(x, 1, 0)
    assert torch.equal(down[0, 0, 1:], x[0, 0, :3]) and down[0, 0, 0].abs().sum() == 0
    left = shift_batch(x, 0, -2)
    assert torch.equal(left[0, 0, :, :2], x[0, 0, :, 2:]) and left[0, 0, :, 2:].abs().sum() == 0


def test_view_counts_and_flips():
    x = torch.rand(3, 1, 8, 8)
    assert len(views(x, flip=False, crops=0, shift=2)) == 1
    got = views(x, flip=True, crops=4, shift=1)
    assert len(got) == 10
    assert torch.equal(got[5], x.flip(-1)) and torch.equal(got[1], shift_batch(x, 1, 0))


def test_predictions_average_over_views():
    recipe = load(None, ["model.width=8", "model.depth=1", "tta.flip=true", "tta.crops=2", "tta.shift=1"]).to_dict()
    m = Classifier(recipe, (1, 8, 8), 10).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        by_hand = torch.stack([m(m.standardize(v)).softmax(-1) for v in views(x, True, 2, 1)]).mean(0)
        plain = m(m.standardize(x)).softmax(-1)
    got = m.predict_proba(x)
    assert torch.allclose(got, by_hand, atol=1e-6) and not torch.allclose(got, plain, atol=1e-4)
