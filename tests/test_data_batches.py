"""TensorBatches sharding and reshuffling, statistics on uint8 pixels, and DataModule device placement."""

from __future__ import annotations

import pytest
import torch

from zoo.data.datamodule import DataModule, Split, TensorBatches, stratified_split


def _split(n: int) -> Split:
    # y holds each sample's own index, so batches show exactly which samples they drew
    return Split(torch.arange(n).view(n, 1).to(torch.uint8), torch.arange(n))


def _epoch(batches: TensorBatches) -> torch.Tensor:
    return torch.cat([y for _, y in batches])


@pytest.mark.parametrize("n, world", [(12, 2), (10, 3), (5, 4), (2, 3)])
def test_training_shards_are_disjoint_equal_and_cover_the_epoch(n, world):
    ranks = [TensorBatches(_split(n), 3, shuffle=True, seed=7, rank=r, world_size=world) for r in range(world)]
    shards = [_epoch(b) for b in ranks]
    per_rank = -(-n // world)
    assert all(len(s) == per_rank for s in shards) and len({len(b) for b in ranks}) == 1
    assert set(torch.cat(shards).tolist()) == set(range(n))
    # disjoint slices of one permutation, padded by wrapping: only the padding repeats samples
    counts = torch.bincount(torch.cat(shards), minlength=n)
    assert counts.sum() == per_rank * world and counts.max() - counts.min() <= 1
    if n % world == 0:
        assert counts.max() == 1
    one = TensorBatches(_split(n), 3, shuffle=True, seed=7)
    padded = torch.stack(shards, 1).flatten()  # rank r took every world-th index from r
    assert torch.equal(padded[:n], _epoch(one))


@pytest.mark.parametrize("n, world, batch", [(10, 3, 2), (7, 2, 4), (9, 1, 4), (3, 3, 8)])
def test_eval_shards_score_every_sample_exactly_once(n, world, batch):
    ranks = [TensorBatches(_split(n), batch, shuffle=False, rank=r, world_size=world) for r in range(world)]
    seen = torch.cat([_epoch(b) for b in ranks])
    assert torch.equal(seen, torch.arange(n))  # contiguous blocks in rank order, no padding
    sizes = [b.num_samples() for b in ranks]
    assert max(sizes) - min(sizes) <= 1 and sum(len(list(b)) for b in ranks) == sum(len(b) for b in ranks)


def test_same_seed_and_epoch_give_the_same_order_so_a_resumed_run_repeats_it():
    a = TensorBatches(_split(50), 8, shuffle=True, seed=3)
    epochs = [_epoch(a) for _ in range(3)]  # iterating advances the epoch
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])
    resumed = TensorBatches(_split(50), 8, shuffle=True, seed=3)
    resumed.set_epoch(2)
    assert torch.equal(_epoch(resumed), epochs[2])
    trainer_epoch = [1]  # a DataModule under a trainer reads the trainer's epoch at each pass
    follows = TensorBatches(_split(50), 8, shuffle=True, seed=3, epoch_fn=lambda: trainer_epoch[0])
    assert torch.equal(_epoch(follows), epochs[1]) and torch.equal(_epoch(follows), epochs[1])
    trainer_epoch[0] = 2
    assert torch.equal(_epoch(follows), epochs[2])
    other_seed = TensorBatches(_split(50), 8, shuffle=True, seed=4)
    assert not torch.equal(_epoch(other_seed), epochs[0])
    for rank in range(2):
        shard = TensorBatches(_split(50), 8, shuffle=True, seed=3, rank=rank, world_size=2)
        shard.set_epoch(1)
        assert torch.equal(_epoch(shard), epochs[1][rank::2])


def test_batch_counts_and_bad_ranks():
    assert len(TensorBatches(_split(10), 4, shuffle=True)) == 3
    assert len(TensorBatches(_split(10), 4, shuffle=True, drop_last=True)) == 2
    assert [len(y) for _, y in TensorBatches(_split(10), 4, shuffle=True, drop_last=True)] == [4, 4]
    with pytest.raises(ValueError, match="rank 2"):
        TensorBatches(_split(10), 4, shuffle=True, rank=2, world_size=2)


def test_statistics_of_uint8_are_on_the_unit_scale():
    x = torch.randint(0, 256, (300, 3, 5, 4), dtype=torch.uint8)
    for per, dims in (("channel", (0, 2, 3)), ("feature", (0,))):
        mean, std = DataModule.statistics(x, per)
        ref = x.double() / 255
        assert torch.allclose(mean, ref.mean(dims, keepdim=True)[0].float(), atol=1e-6)
        assert torch.allclose(std, ref.std(dims, keepdim=True)[0].float(), atol=1e-6)
    # a constant channel keeps std 1 instead of dividing by zero
    flat = torch.full((10, 2, 3, 3), 200, dtype=torch.uint8)
    _, std = DataModule.statistics(flat, "channel")
    assert torch.equal(std, torch.ones(2, 1, 1))


def test_stratified_split_is_seeded_disjoint_and_balanced():
    labels = torch.arange(200) % 4
    rest, val, test = stratified_split(labels, [0.1, 0.2], seed=0)
    assert torch.equal(torch.cat([rest, val, test]).sort().values, torch.arange(200))
    assert torch.bincount(labels[val]).tolist() == [5] * 4 and torch.bincount(labels[test]).tolist() == [10] * 4
    again = stratified_split(labels, [0.1, 0.2], seed=0)
    assert all(torch.equal(a, b) for a, b in zip(again, (rest, val, test)))
    assert not torch.equal(stratified_split(labels, [0.1, 0.2], seed=1)[1], val)


def _module(n_train: int = 64) -> DataModule:
    x = torch.randint(0, 256, (n_train, 3, 4, 4), dtype=torch.uint8)
    small = Split(x[:8], torch.zeros(8, dtype=torch.long))
    return DataModule(Split(x, torch.arange(n_train) % 2), small, small, num_classes=2, batch_size=16)


def test_placement_moves_what_fits_and_teardown_drops_it():
    dm = _module()
    train_bytes, val_bytes = dm.train.nbytes, dm.val.nbytes
    meta = torch.device("meta")  # a stand-in device: tensors there have shapes but no storage
    # room for the training split in half the free memory, not for validation on top of it
    moved = dm.place(["train", "val"], meta, free=2 * train_bytes + val_bytes)
    assert moved == ["train"]
    assert dm.train_dataloader().split.x.device == meta and dm.val_dataloader().split.x.device.type == "cpu"
    assert dm.train.x.device.type == "cpu"  # the host copy stays for everything outside the trainer
    assert dm.place(["train", "val"], meta, free=2 * (train_bytes + val_bytes)) == ["val"]
    dm.teardown("fit")
    assert dm.train_dataloader().split.x.device.type == "cpu"
    assert dm.place(["train"], torch.device("cpu"), free=10**12) == []
    assert dm.place(["train"], meta, free=None) == []  # unknown free memory: keep the data on the host


def test_loaders_without_a_trainer_and_sample_as_floats():
    dm = _module()
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (16, 3, 4, 4)
    assert len(dm.val_dataloader()) == 1
    sample = dm.sample(5)
    assert sample.dtype == torch.float32 and torch.allclose(sample * 255, dm.train.x[:5].float())
