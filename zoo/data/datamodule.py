"""In-memory data: whole splits held as tensors and batched by index, no per-sample Python work.

Images are stored as uint8 (N, C, H, W), a quarter of the memory of float32; the model turns a batch
into floats in [0, 1] on the device. When a trainer is attached, each split is copied to the training
device whole if it fits, so every batch is one gather on the device and Lightning's transfer is a no-op.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import lightning as L
import torch


@dataclass
class Split:
    """Inputs and integer labels of one split."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"split has {len(self.x)} inputs but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def nbytes(self) -> int:
        return self.x.nbytes + self.y.nbytes

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


def to_unit_float(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Inputs as floats, uint8 pixels scaled to [0, 1] (the scale every model and statistic works on).

    Images are stored as uint8 (a quarter of the memory) and become floats only on the device.
    """
    return x.to(dtype).div_(255) if x.dtype == torch.uint8 else x.to(dtype)


def stratified_split(labels: torch.Tensor, fractions: Sequence[float], seed: int) -> list[torch.Tensor]:
    """Sorted index tensors ``[rest, part_1, ...]``: part i takes ``fractions[i]`` of every class, seeded.

    Per-class counts are rounded, so each part has (nearly) the class balance of the whole.
    """
    gen = torch.Generator().manual_seed(seed)
    # One stable sort groups the indices by class; a boolean mask per class would rescan the labels.
    by_class = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels).tolist() if len(labels) else []
    parts: list[list[torch.Tensor]] = [[] for _ in range(len(fractions) + 1)]
    offset = 0
    for count in counts:
        members = by_class[offset : offset + count][torch.randperm(count, generator=gen)]
        offset += count
        start = 0
        for i, fraction in enumerate(fractions, 1):
            take = min(int(count * fraction + 0.5), count - start)
            parts[i].append(members[start : start + take])
            start += take
        parts[0].append(members[start:])
    empty = torch.zeros(0, dtype=torch.long)
    return [torch.cat(p).sort().values if p else empty for p in parts]


def shuffled_shard(n: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Rank ``rank``'s indices of ``n`` samples in epoch ``epoch``'s shuffled order (see TensorBatches)."""
    # Generated on the CPU whatever the data's device, so every device and every rank agrees.
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=gen)
    if world_size == 1 or n == 0:
        return order
    total = math.ceil(n / world_size) * world_size
    if total > n:
        order = torch.cat([order, order.repeat(math.ceil((total - n) / n))[: total - n]])
    return order[rank:total:world_size]


def lone_last_batch(samples: int, batch_size: int) -> bool:
    """Whether an epoch of ``samples`` would end on a batch of one sample, which stops batch norm ("expected
    more than 1 value per channel"): such a batch is dropped, and the next epoch's shuffle puts that sample
    into a full batch."""
    return samples > batch_size and samples % batch_size == 1


class TensorBatches:
    """Batches of a Split drawn by index, reshuffled per epoch from (seed, epoch) so a resumed run repeats them.

    A DataLoader would index one sample at a time and collate; slicing whole tensors is the same data
    with one gather per batch, on whatever device the split lives on.

    With ``world_size > 1`` each rank sees its own shard, as DistributedSampler would give it:

    * shuffled (training): every rank draws the same (seed, epoch) permutation; it is padded by
      wrapping around to a multiple of ``world_size`` and rank r takes every ``world_size``-th index
      from r. Shards are disjoint slices of the padded order and equally long, so all ranks step
      (and all-reduce gradients) the same number of times; the few wrapped samples are seen twice.
    * unshuffled (evaluation): no padding, so every sample is scored exactly once across ranks.
      Rank r takes a contiguous block; blocks differ in length by at most one sample, so a rank may
      get one batch fewer. That is safe with Lightning because nothing synchronizes per evaluation
      step (metrics sync once, at epoch end), but every rank needs at least one sample: keep eval
      splits at least ``world_size`` long.

    The epoch comes from ``epoch_fn`` when given (the DataModule passes the trainer's current epoch,
    so a resumed run picks up the right order); otherwise from ``set_epoch``, and each pass advances it.

    Lightning treats a loader with ``state_dict``/``load_state_dict`` as resumable mid-epoch. The state is
    the epoch and how many of its batches were done when the checkpoint was written (``done_fn``, the
    trainer's count: the iterator itself runs a batch ahead of training because Lightning prefetches);
    the first pass after ``load_state_dict`` over that same epoch skips those batches.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        epoch_fn: Callable[[], int | None] | None = None,
        done_fn: Callable[[], int] | None = None,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of world_size {world_size} ranks")
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch_fn = epoch_fn
        self.done_fn = done_fn
        self.epoch = 0
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches already done) from a checkpoint

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict[str, int]:
        current = self.epoch_fn() if self.epoch_fn is not None else None
        epoch = current if current is not None else max(self.epoch - 1, 0)
        return {"epoch": epoch, "batches_done": self.done_fn() if self.done_fn is not None else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_at = (int(state["epoch"]), int(state["batches_done"]))

    def _block(self) -> tuple[int, int]:
        """This rank's contiguous [start, stop) of an unshuffled split."""
        base, extra = divmod(len(self.split), self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def num_samples(self) -> int:
        """Samples this rank sees per epoch (before ``drop_last``)."""
        if self.shuffle:
            return math.ceil(len(self.split) / self.world_size)
        start, stop = self._block()
        return stop - start

    def __len__(self) -> int:
        n = self.num_samples()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int | None = None) -> torch.Tensor:
        """This rank's sample indices for ``epoch`` (default: the current one), on the CPU."""
        if not self.shuffle:
            return torch.arange(*self._block())
        epoch = self.epoch if epoch is None else epoch
        return shuffled_shard(len(self.split), self.seed, epoch, self.rank, self.world_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y, bs = self.split.x, self.split.y, self.batch_size
        if self.shuffle:
            current = self.epoch_fn() if self.epoch_fn is not None else None
            if current is not None:
                self.epoch = current
            order = self.order().to(x.device)
            first = 0
            if self._resume_at is not None:
                if self._resume_at[0] == self.epoch:
                    first = min(self._resume_at[1], len(self))
                self._resume_at = None
            self.epoch += 1
            for i in range(first, len(self)):
                idx = order[i * bs : (i + 1) * bs]
                # index_select, not x[idx]: advanced indexing took 0.5 ms for a batch of 256 3x32x32 uint8
                # images on the 2-core CPU, index_select 0.03-0.07 ms
                yield x.index_select(0, idx), y.index_select(0, idx.to(y.device))
        else:
            # Contiguous blocks: slices are views, no gather at all.
            start, _ = self._block()
            n = self.num_samples()
            for i in range(len(self)):
                lo, hi = start + i * bs, start + min((i + 1) * bs, n)
                yield x[lo:hi], y[lo:hi]


class BatchGroups:
    """Training batches handed over ``size`` at a time, as lists (``performance.steps_per_execution``).

    An epoch's last group holds what is left. Resuming counts in batches, as :class:`TensorBatches` does.
    """

    def __init__(self, batches: TensorBatches, size: int) -> None:
        self.batches = batches
        self.size = size

    def __len__(self) -> int:
        return -(-len(self.batches) // self.size)

    def steps_per_epoch(self, groups: int | float) -> int:
        """Optimizer steps in an epoch of which Lightning runs ``groups`` groups (its limit_train_batches)."""
        return min(len(self.batches), int(groups) * self.size)

    def __iter__(self) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
        group: list[tuple[torch.Tensor, torch.Tensor]] = []
        for batch in self.batches:
            group.append(batch)
            if len(group) == self.size:
                yield group
                group = []
        if group:
            yield group

    def state_dict(self) -> dict[str, int]:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batches.load_state_dict(state)


def training_samples(dm, limit: int) -> Split:
    """A data module's training split when it holds it in memory; of a streamed one (zoo.data.streaming),
    ``limit`` samples spread over it, decoded as evaluation decodes them."""
    return dm.train if hasattr(dm, "train") else dm.spread(limit)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _free_bytes(device: torch.device) -> int | None:
    """Free memory on ``device``, or None where it cannot be asked (then the data stays on the host)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    return None


class TrainerPosition:
    """Where a data module's trainer stands: this process's rank, the epoch, the training batches done.
    Outside a trainer: rank 0 of 1, no epoch, nothing done."""

    trainer: L.Trainer | None
    steps_per_execution: int

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _trainer_epoch(self) -> int | None:
        return self.trainer.current_epoch if self.trainer is not None else None

    def _trainer_batches_done(self) -> int:
        # processed, not completed: a checkpoint written in on_train_batch_end already holds that batch's update
        if self.trainer is None:
            return 0
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed * self.steps_per_execution


class DataModule(TrainerPosition, L.LightningDataModule):
    """Train/val/test splits in memory, with what a model needs to know about them.

    Inputs are kept as they come (images as uint8 pixels, or floats); ``mean`` and ``std``
    (training-split statistics on the [0, 1] pixel scale, broadcastable to one input) are applied by
    the model after augmentation, so augmentations see real pixels and a checkpoint carries its own
    standardization.

    Under a trainer, ``setup`` copies the splits a stage needs to the training device while they
    take at most ``device_share`` of its free memory (the rest is the model's); a split that does not
    fit stays on the host and Lightning moves each batch. ``teardown`` drops the device copies.
    """

    device_share = 0.5

    def __init__(
        self,
        train: Split,
        val: Split,
        test: Split,
        *,
        num_classes: int,
        batch_size: int,
        eval_batch_size: int = 1024,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
        classes: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.mean = torch.zeros(1) if mean is None else mean
        self.std = torch.ones(1) if std is None else std
        self.train, self.val, self.test = train, val, test
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.classes = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
        self.seed = seed
        # What a split is, where its name alone would mislead (a "test" split carved out of a training
        # folder, say), by split name; zoo eval and predict say it
        self.split_notes: dict[str, str] = {}
        self._train_batches: TensorBatches | None = None
        # Batches per training step the model takes (its recipe's performance.steps_per_execution).
        self.steps_per_execution = 1
        # A resumed run's loader position, handed over by zoo.training.checkpoints.ResumeState (see there for why)
        self.resume_train_state: dict[str, int] | None = None
        # Device copies made by setup(); the host splits stay as they are for anything outside training.
        self._placed: dict[str, Split] = {}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @classmethod
    def standardized(
        cls,
        train: Split,
        val: Split,
        test: Split,
        *,
        classes: Sequence[str],
        standardize: str,
        batch_size: int,
        eval_batch_size: int,
    ) -> DataModule:
        """The three splits with ``standardize`` statistics taken from ``train`` alone: every data set's last step."""
        mean, std = cls.statistics(train.x, standardize)
        return cls(
            train,
            val,
            test,
            num_classes=len(classes),
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            mean=mean,
            std=std,
            classes=classes,
        )

    @staticmethod
    def statistics(x: torch.Tensor, per: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of ``x`` per input feature (``feature``), per channel (``channel``), or neither.

        uint8 pixels are measured on the [0, 1] scale the model sees. Features that never vary (blank
        borders) get std 1, so they stay zero instead of amplifying noise.
        """
        if per not in ("feature", "channel") or len(x) == 0:
            return torch.zeros(1), torch.ones(1)
        if per == "channel" and x.ndim > 2:
            dims = (0, *range(2, x.ndim))
            count = len(x) * math.prod(x.shape[2:])
        else:
            dims = (0,)
            count = len(x)
        # One pass over chunks: a float copy of a whole uint8 image set would be 4x its size. Sums are
        # taken around a rough mean from a few samples so the sum of squares cancels no digits, and
        # accumulated in float64 across chunks.
        shift = x[:64].float().mean(dims, keepdim=True)
        total = torch.zeros(shift.shape, dtype=torch.float64)
        squares = torch.zeros(shift.shape, dtype=torch.float64)
        for chunk in x.split(1024):
            dev = chunk.float() - shift
            total += dev.sum(dims, keepdim=True).double()
            squares += (dev * dev).sum(dims, keepdim=True).double()
        mean = total / count
        var = (squares - total * mean).clamp_min(0) / max(count - 1, 1)
        scale = 1 / 255 if x.dtype == torch.uint8 else 1.0  # pixels on the [0, 1] scale the model sees
        mean, std = ((mean + shift) * scale)[0].float(), (var.sqrt() * scale)[0].float()
        return mean, torch.where(std >= 1e-6, std, torch.ones_like(std))

    def sample(self, n: int = 256) -> torch.Tensor:
        """A fixed batch of training inputs as floats (pixels in [0, 1]), for data-dependent init."""
        return to_unit_float(self.train.x[:n])

    # --- placement on the training device --------------------------------------------------------
    def _device(self) -> torch.device | None:
        trainer = self.trainer
        if trainer is None:
            return None
        return trainer.strategy.root_device

    def place(self, names: Sequence[str], device: torch.device | None, free: int | None) -> list[str]:
        """Copy the named splits to ``device`` while they fit in ``device_share`` of ``free`` bytes.

        Returns the names it moved.
        """
        self._placed = {k: v for k, v in self._placed.items() if v.x.device == device}
        if device is None or device.type == "cpu" or free is None:
            return []
        budget = free * self.device_share - sum(s.nbytes for s in self._placed.values())
        moved = []
        for name in names:
            split = getattr(self, name)
            if name in self._placed:
                continue
            if split.nbytes <= budget:
                self._placed[name] = split.to(device)
                budget -= split.nbytes
                moved.append(name)
        return moved

    def setup(self, stage: str) -> None:
        device = self._device()
        if device is None:
            return
        # Training data first: it is read every step, evaluation data once an epoch.
        names = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["test"]}
        self.place(names.get(stage, []), device, _free_bytes(device))

    def teardown(self, stage: str) -> None:
        self._placed = {}

    def _split(self, name: str) -> Split:
        return self._placed[name] if name in self._placed else getattr(self, name)

    # --- loaders ---------------------------------------------------------------------------------
    def train_dataloader(self) -> TensorBatches | BatchGroups:
        rank, world = self._rank()
        split = self._split("train")
        batches = self._train_batches
        stale = batches is None or batches.split is not split
        if stale or (batches.rank, batches.world_size) != (rank, world):
            lone = lone_last_batch(-(-len(split) // world), self.batch_size)
            batches = TensorBatches(
                split,
                self.batch_size,
                shuffle=True,
                drop_last=lone,
                seed=self.seed,
                rank=rank,
                world_size=world,
                epoch_fn=self._trainer_epoch,
                done_fn=self._trainer_batches_done,
            )
            if self._train_batches is not None:  # outside a trainer, a rebuilt loader goes on where it was
                batches.epoch = self._train_batches.epoch
            self._train_batches = batches
        if self.resume_train_state is not None:
            batches.load_state_dict(self.resume_train_state)
            self.resume_train_state = None
        return batches if self.steps_per_execution == 1 else BatchGroups(batches, self.steps_per_execution)

    def _eval(self, name: str) -> TensorBatches:
        rank, world = self._rank()
        split = self._split(name)
        return TensorBatches(split, self.eval_batch_size, shuffle=False, rank=rank, world_size=world)

    def val_dataloader(self) -> TensorBatches:
        return self._eval("val")

    def test_dataloader(self) -> TensorBatches:
        return self._eval("test")

    def predict_dataloader(self) -> TensorBatches:
        return self.test_dataloader()
