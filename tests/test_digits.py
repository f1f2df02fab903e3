"""The digits data set: a fixed stratified split, standardized with training statistics only."""

from __future__ import annotations

import pytest
import torch

import zoo


@pytest.fixture(scope="module")
def dm():
    return zoo.datasets.build("digits")


def test_split_sizes_are_disjoint_and_fixed(dm):
    sizes = len(dm.train), len(dm.val), len(dm.test)
    assert sum(sizes) == 1797
    assert sizes[2] == pytest.approx(0.2 * 1797, abs=1) and sizes[1] == pytest.approx(0.1 * 1797, abs=1)
    rows = torch.cat([dm.train.x, dm.val.x, dm.test.x]).flatten(1)
    # digits has a handful of identical images, so compare counts of distinct rows per split instead
    assert len(torch.unique(rows, dim=0)) >= 1797 - 20
    again = zoo.datasets.build("digits")
    assert torch.equal(again.test.x, dm.test.x) and torch.equal(again.test.y, dm.test.y)
    other = zoo.datasets.build({"name": "digits", "split_seed": 1})
    assert not torch.equal(other.test.y, dm.test.y)


def test_split_is_stratified(dm):
    for split in (dm.train, dm.val, dm.test):
        counts = torch.bincount(split.y, minlength=10).float()
        share = counts / counts.sum()
        assert share.min() > 0.08 and share.max() < 0.12


def test_pixels_in_unit_range_and_statistics_from_training_split_only(dm):
    assert dm.train.x.min() == 0 and dm.train.x.max() == 1
    x = ((dm.train.x - dm.mean) / dm.std).flatten(1)
    varying = dm.train.x.flatten(1).std(0) > 0
    assert x.mean(0)[varying].abs().max() < 1e-4
    assert (x.std(0)[varying] - 1).abs().max() < 1e-3
    assert x[:, ~varying].abs().max() == 0  # blank border pixels stay zero rather than blowing up
    held_out = ((dm.test.x - dm.mean) / dm.std).flatten(1)[:, varying]
    assert held_out.mean(0).abs().max() > 1e-3  # test statistics were not used
    assert dm.input_shape == (1, 8, 8) and dm.num_classes == 10
    channel = zoo.datasets.build({"name": "digits", "standardize": "channel"})
    assert channel.mean.shape == (1, 1, 1)
    z = (channel.train.x - channel.mean) / channel.std
    assert z.mean().abs() < 1e-4 and (z.std() - 1).abs() < 1e-3


def test_batches_cover_the_split_once_per_epoch(dm):
    batches = dm.train_dataloader()
    first = torch.cat([y for _, y in batches])
    second = torch.cat([y for _, y in batches])
    assert len(first) == len(dm.train) and len(batches) == -(-len(dm.train) // dm.batch_size)
    assert torch.equal(first.sort().values, dm.train.y.sort().values)
    assert not torch.equal(first, second)  # reshuffled each epoch


def test_bad_fractions_are_a_user_error():
    with pytest.raises(zoo.ZooError, match="below 1"):
        zoo.datasets.build({"name": "digits", "val_fraction": 0.5, "test_fraction": 0.6})
    with pytest.raises(zoo.ZooError, match=r"test_fraction: .*less than 1"):
        zoo.datasets.build({"name": "digits", "test_fraction": 1.5})
