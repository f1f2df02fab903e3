"""Streamed data: a prepared folder (``zoo data prepare``: litdata chunks of encoded images per split) read
in DataLoader workers, each image decoded and cropped to one size there, so that only the batches in flight
are ever in memory.

Items are read by index through litdata's StreamingDataset (local folders, or URLs it downloads chunks of).
Training takes a seeded permutation of the split per epoch, sharded by rank as in-memory data is; each
image's crop is drawn from a generator seeded by (seed, epoch, the item's index), so an image gets the same
crop whichever worker or rank reads it, and a resumed run repeats the uninterrupted one. Evaluation reads
each rank's contiguous block of a split, every image scored exactly once across ranks.

The batches are what zoo.data.datamodule.TensorBatches yields: uint8 (B, 3, S, S) images and int64 labels,
so the recipe's batch augmentations run on them unchanged on the device.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

# importing litdata sets warnings filters of its own: the process keeps its own
with warnings.catch_warnings():
    from litdata import StreamingDataset
    from litdata.streaming.sampler import ChunkedIndex

from zoo.core.errors import ZooError
from zoo.data.datamodule import (
    BatchGroups,
    DataModule,
    Split,
    TrainerPosition,
    lone_last_batch,
    shuffled_shard,
    to_unit_float,
)
from zoo.data.images import Box, decode_crop, eval_chooser

FORMAT = 1
META = "zoo-data.json"
# training images the mean and std are measured on: all of a small split, so it standardizes as in memory
# (a bounded sample still: decoding 5,000 224-pixel crops takes seconds, a whole ImageNet hours)
STATISTICS_SAMPLE = 5000
# one crop generator per (seed, epoch, item): a multiplier per term keeps neighbouring seeds' streams apart
_SEED_MIX = (1_000_003, 10_007)

BoxDraw = Callable[[int, int, torch.Generator], Box]  # a per_image_box method: (height, width, generator)


# what litdata's StreamingDataset reads chunks from besides a local folder (its downloaders); "local:" is a
# local folder read the same way, chunks copied into the cache first, as from object storage
REMOTE_PREFIXES = ("s3://", "gs://", "azure://", "hf://", "r2://", "local:")


def is_url(root: str) -> bool:
    """Whether ``root`` is read through litdata's downloaders; another scheme is one line."""
    if root.startswith(REMOTE_PREFIXES):
        return True
    if "://" in root:
        raise ZooError(
            f"streaming: {root} (data.root): LitData reads {', '.join(REMOTE_PREFIXES)} and local folders, not "
            f"{root.split('://')[0]}://; give the folder's path or copy it to object storage"
        )
    return False


def read_meta(root: str) -> dict[str, Any]:
    """The prepared folder's zoo-data.json, checked; a local ``root`` that is not one is one line."""
    if is_url(root):
        import fsspec

        try:
            with fsspec.open(f"{root.rstrip('/')}/{META}") as f:
                text = f.read().decode()
        except Exception as exc:  # noqa: BLE001 - whatever the remote store says about a missing file
            raise ZooError(f"streaming: cannot read {root}/{META} (data.root): {exc}") from None
    else:
        top = Path(root).expanduser()
        if not (top / META).is_file():
            what = "does not exist" if not top.exists() else f"has no {META}"
            raise ZooError(
                f"streaming: {top} (data.root) {what}; it must be a folder written by "
                f"zoo data prepare SOURCE {top}"
            )
        text = (top / META).read_text()
    try:
        meta = json.loads(text)
    except ValueError:
        raise ZooError(f"streaming: {root}/{META} is not JSON; prepare the folder again") from None
    known = isinstance(meta, dict) and meta.get("format") == FORMAT
    if not known or not isinstance(meta.get("classes"), list):
        raise ZooError(f"streaming: {root}/{META} is not a format-{FORMAT} prepared folder; prepare it again")
    return meta


def _crop_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * _SEED_MIX[0] + epoch * _SEED_MIX[1] + index) % (2**63)


class Decoder:
    """What a worker does to one item: decode, crop, resize; a damaged image becomes a note naming it."""

    def __init__(self, location: str, size: int, crop_pct: float, box: BoxDraw | None, seed: int) -> None:
        self.location, self.size, self.crop_pct, self.box, self.seed = location, size, crop_pct, box, seed

    def __call__(self, item: dict[str, Any], index: int, epoch: int) -> dict[str, Any]:
        where = f"{item['path']} (in {self.location})"
        if self.box is None:
            choose = eval_chooser(self.crop_pct)
        else:
            gen = torch.Generator().manual_seed(_crop_seed(self.seed, epoch, index))
            draw = self.box
            choose = lambda height, width: draw(height, width, gen)  # noqa: E731
        try:
            image = decode_crop(item["image"], where, self.size, choose)
        except ZooError as exc:
            return {"bad": str(exc), "path": item["path"]}
        return {"image": image, "label": int(item["label"])}


class Images(StreamingDataset):
    """litdata's dataset of one split, its items decoded and cropped (by ``decoder``) where they are read.

    Indexed by position, or by (epoch, position) where the crop depends on the epoch: training's persistent
    workers learn the epoch from the indices they are handed, not from a copy of this object."""

    decoder: Decoder

    def __getitem__(self, index):
        epoch = 0
        if isinstance(index, tuple):
            epoch, index = index
        item = super().__getitem__(index)
        position = index.index if isinstance(index, ChunkedIndex) else int(index)
        return self.decoder(item, position, epoch)


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The good images as one uint8 batch, the damaged ones as (path, message) notes, and the item count."""
    good = [it for it in items if "bad" not in it]
    bad = [(it["path"], it["bad"]) for it in items if "bad" in it]
    x = torch.stack([it["image"] for it in good]) if good else torch.zeros(0, dtype=torch.uint8)
    y = torch.tensor([it["label"] for it in good], dtype=torch.long)
    return {"x": x, "y": y, "bad": bad, "items": len(items)}


class BadImages:
    """What ``on_bad_image`` does with a damaged image: ``stop`` raises one line naming it, ``skip``
    counts it.

    ``done`` has the data module say and log the count of a pass (``what``) once. Loaders call it as they hand
    over their last batch, not after it: Lightning asks a loader with a length for that many batches and
    never for the end of the iteration.
    """

    def __init__(self, policy: str, dm: StreamingData | None = None, what: str = "") -> None:
        self.policy, self.dm, self.what = policy, dm, what
        self.skipped = 0  # this pass
        self.first: str | None = None
        self.reported = False

    def take(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The batch's images and labels, or None when none is left; a damaged one stops or is counted."""
        for path, message in batch["bad"]:
            if self.policy == "stop":
                raise ZooError(
                    f"streaming: {message} (data.on_bad_image=stop; set data.on_bad_image=skip to leave "
                    "such images out)"
                )
            self.skipped += 1
            self.first = self.first or path
        return (batch["x"], batch["y"]) if len(batch["y"]) else None

    def done(self) -> None:
        if self.dm is not None and self.skipped and not self.reported:
            self.reported = True
            images = f"{self.skipped} damaged image{'s' * (self.skipped != 1)}"
            line = f"skipped {images} in {self.what} (first: {self.first})"
            self.dm.note_skipped(line, self.skipped)


class TrainStream:
    """The training batches of one rank, decoded in workers, in the order TensorBatches would give them.

    The order is a seeded permutation of the whole split per epoch (``shuffled_shard``), read by index:
    litdata's own shuffle permutes chunks and blocks of items inside them, and a prepared folder's chunks
    hold its images class by class, so its batches would hold one class or a few. Under DDP each rank takes
    its share of the padded permutation, every rank the same number of batches, as in-memory data does.

    Resumable mid-epoch like TensorBatches: the state is the epoch and the trainer's own count of batches done
    (the iterator runs ahead of training, as Lightning prefetches); a resumed pass starts after those.
    """

    def __init__(self, dm: StreamingData) -> None:
        self.dm = dm
        self.rank, self.world = dm._rank()
        self.images = dm._dataset("train", dm.train_box)
        per_rank = -(-dm.split_size("train") // self.world)
        self.drop_last = lone_last_batch(per_rank, dm.batch_size)
        self.epoch = 0
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches done) from a checkpoint
        # One loader for every epoch, its workers kept (started again for each epoch, they took 0.2-0.35 s of
        # a 1.6 s pass over 2,000 photos, benchmarks/input_pipeline.py): the batch sampler hands the workers
        # (epoch, index) pairs, so that they crop for the epoch without being sent anything else.
        self.sampler = EpochBatches()
        self.loader = DataLoader(Block(self.images, 0, dm.split_size("train")), batch_sampler=self.sampler,
                                 num_workers=dm.num_workers, collate_fn=collate,
                                 persistent_workers=dm.num_workers > 0)

    def __len__(self) -> int:
        per_rank = -(-self.dm.split_size("train") // self.world)
        size = self.dm.batch_size
        return per_rank // size if self.drop_last else -(-per_rank // size)

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of indices in ``epoch``."""
        n = self.dm.split_size("train")
        order = shuffled_shard(n, self.dm.seed, epoch, self.rank, self.world).tolist()
        size = self.dm.batch_size
        return [order[i * size:(i + 1) * size] for i in range(len(self))]

    def state_dict(self) -> dict[str, int]:
        current = self.dm._trainer_epoch()
        epoch = current if current is not None else max(self.epoch - 1, 0)
        return {"epoch": epoch, "batches_done": self.dm._trainer_batches_done()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_at = (int(state["epoch"]), int(state["batches_done"]))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        current = self.dm._trainer_epoch()
        if current is not None:
            self.epoch = current
        epoch, first = self.epoch, 0
        if self._resume_at is not None:
            if self._resume_at[0] == epoch:
                first = min(self._resume_at[1], len(self))
            self._resume_at = None
        self.epoch += 1
        self.sampler.epoch, self.sampler.batches = epoch, self.batches(epoch)[first:]
        bad = BadImages(self.dm.on_bad_image, self.dm, f"training epoch {epoch}")
        # under DDP a batch left out would leave this process a step behind the others, which then wait for
        # it in the gradient reduction for ever: a batch of damaged images alone is an error there
        yield from readable(self.loader, len(self) - first, bad, empty_ok=self.world == 1)

    def close(self) -> None:
        """Stop the kept workers (the loader starts new ones if it is read again)."""
        stop_workers(self.loader)


class EpochBatches:
    """The batch sampler of TrainStream's one loader: this pass's batches of indices, each index handed over
    as (epoch, index) (made batch by batch: a million-image epoch's pairs at once would take 100 MB)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.batches: list[list[int]] = []

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.epoch
        return ([(epoch, i) for i in batch] for batch in self.batches)


def stop_workers(loader: DataLoader) -> None:
    """Stop ``loader``'s persistent workers now rather than when the garbage collector gets to them."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None


def readable(
    loader, count: int, bad: BadImages, empty_ok: bool = True
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The ``count`` batches of ``loader`` without their damaged images (``bad`` stops or counts them); the
    count is reported as the last batch is handed over (see BadImages.done). A batch left with no image is
    left out, or with ``empty_ok`` False an error. An error stops the loader's workers, kept ones too: a
    failed fit never reaches the teardown that would."""
    try:
        for i, batch in enumerate(loader):
            taken = bad.take(batch)
            if i == count - 1:
                bad.done()
            if taken is not None:
                yield taken
            elif not empty_ok:
                raise ZooError(
                    f"streaming: every image of a training batch is damaged ({batch['items']}, first: "
                    f"{batch['bad'][0][0]}); with several processes each must take every step, so the batch "
                    "cannot be left out: remove the damaged files, or prepare the folder again with "
                    "zoo data prepare --skip-bad"
                )
    except Exception:
        stop_workers(loader)
        raise
    bad.done()


class Block(Dataset):
    """Items ``start`` to ``stop`` of a split, read by index (litdata's dataset iterates; a DataLoader that
    is handed batches of indices needs one it can index)."""

    def __init__(self, dataset, start: int, stop: int) -> None:
        self.images, self.start, self.stop = dataset, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int | tuple[int, int]) -> dict[str, Any]:
        if isinstance(i, tuple):  # (epoch, index)
            return self.images[(i[0], self.start + i[1])]
        return self.images[self.start + i]


class EvalStream:
    """Every image of a split once across ranks, in order: rank r reads a contiguous block, as TensorBatches
    does."""

    def __init__(self, dm: StreamingData, split: str, keep_workers: bool = False, whole: bool = False) -> None:
        self.dm, self.split = dm, split
        rank, world = (0, 1) if whole else dm._rank()
        n = dm.split_size(split)
        base, extra = divmod(n, world)
        start = rank * base + min(rank, extra)
        block = Block(dm._dataset(split), start, start + base + (rank < extra))
        self.loader = DataLoader(block, batch_size=dm.eval_batch_size, num_workers=dm.num_workers,
                                 collate_fn=collate, persistent_workers=keep_workers and dm.num_workers > 0)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        bad = BadImages(self.dm.on_bad_image, self.dm, f"the {self.split} split")
        yield from readable(self.loader, len(self.loader), bad)


class StreamingData(TrainerPosition, L.LightningDataModule):
    """A prepared folder's splits, streamed: what zoo asks of a data module, never holding a split in memory.

    ``train_box``: the per-image crop of training images (a ``per_image_box`` method, handed over from the
    recipe's first augmentation by :func:`take_leading_box`); None gives them the evaluation crop.
    """

    def __init__(
        self,
        root: str,
        meta: dict[str, Any],
        *,
        image_size: int,
        eval_size: int,
        crop_pct: float,
        batch_size: int,
        eval_batch_size: int,
        num_workers: int,
        on_bad_image: str,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.root = root
        self.cache_dir = cache_dir
        self.classes = [str(c) for c in meta["classes"]]
        self.num_classes = len(self.classes)
        self.sizes = {split: int(n) for split, n in meta.get("splits", {}).items()}
        self.image_size, self.eval_size, self.crop_pct = image_size, eval_size, crop_pct
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers = num_workers
        self.on_bad_image = on_bad_image
        self.seed = seed
        self.train_box: BoxDraw | None = None
        self.split_notes: dict[str, str] = {}
        # Batches per training step the model takes (its recipe's performance.steps_per_execution).
        self.steps_per_execution = 1
        self.resume_train_state: dict[str, int] | None = None
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None
        self._train: TrainStream | None = None
        self._kept: list[EvalStream] = []  # validation loaders whose workers outlive a pass

    # --- what zoo reads of any data module --------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.image_size, self.image_size)

    def split_size(self, name: str) -> int:
        return self.sizes.get(name, 0)

    def _location(self, split: str) -> str:
        if is_url(self.root):
            return f"{self.root.rstrip('/')}/{split}"
        return str(Path(self.root).expanduser() / split)

    def _dataset(self, split: str, box: BoxDraw | None = None) -> Images:
        location = self._location(split)
        size = self.image_size if split == "train" else self.eval_size
        # one item deserialized per read: litdata's default for byte items deserializes a window of ~240
        # items around each one, made for reading in order, and a shuffled epoch reads by random index
        # (1,500 random reads of CIFAR-10 JPEGs, one process, under cProfile: 1.62 s, and 0.30 s with this)
        dataset = Images(location, batch_decode=1, cache_dir=self.cache_dir if is_url(self.root) else None)
        dataset.decoder = Decoder(location, size, self.crop_pct, box, self.seed)
        return dataset

    def spread(self, n: int) -> Split:
        """Up to ``n`` training images spread evenly over the split, with the evaluation crop at the training
        size, and their labels, in a seeded random order: a prepared split is stored class by class, so its
        first images are of one class; these are of all of them, and so is any run of them."""
        dataset = self._dataset("train")
        total = self.split_size("train")
        k = min(n, total)
        order = torch.randperm(k, generator=torch.Generator().manual_seed(self.seed)).tolist()
        taken = BadImages(self.on_bad_image).take(collate([dataset[i * total // k] for i in order]))
        if taken is None:
            none = torch.zeros((0, *self.input_shape), dtype=torch.uint8)
            return Split(none, torch.zeros(0, dtype=torch.long))
        return Split(*taken)

    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of up to STATISTICS_SAMPLE training images spread over the split, cropped
        as evaluation crops them: a bounded sample, so that a streamed set is never read whole for them."""
        if self._stats is None:
            self._stats = DataModule.statistics(self.spread(STATISTICS_SAMPLE).x, "channel")
        return self._stats

    @property
    def mean(self) -> torch.Tensor:
        return self._statistics()[0]

    @property
    def std(self) -> torch.Tensor:
        return self._statistics()[1]

    def sample(self, n: int = 256) -> torch.Tensor:
        """``n`` training images spread over the split, as floats in [0, 1], for data-dependent init."""
        return to_unit_float(self.spread(n).x)

    def note_skipped(self, line: str, count: int) -> None:
        """Say (and, in training, log) how many damaged images a pass left out."""
        trainer = self.trainer
        if trainer is None or trainer.is_global_zero:
            print(f"zoo: streaming: {line}", file=sys.stderr)
        if trainer is not None and trainer.training:
            for logger in trainer.loggers:
                logger.log_metrics({"data/skipped_images": float(count)}, step=trainer.global_step)

    # --- loaders ------------------------------------------------------------------------------------
    def train_dataloader(self) -> TrainStream | BatchGroups:
        rank_world = self._rank()
        if self._train is None or (self._train.rank, self._train.world) != rank_world:
            self._train = TrainStream(self)
        if self.resume_train_state is not None:
            self._train.load_state_dict(self.resume_train_state)
            self.resume_train_state = None
        if self.steps_per_execution == 1:
            return self._train
        return BatchGroups(self._train, self.steps_per_execution)

    def val_dataloader(self) -> EvalStream:
        # read once an epoch during a fit: its workers are kept too, until teardown
        self._kept.append(EvalStream(self, "val", keep_workers=True))
        return self._kept[-1]

    def test_dataloader(self) -> EvalStream:
        return EvalStream(self, "test")

    def predict_dataloader(self) -> EvalStream:
        return self.test_dataloader()

    def teardown(self, stage: str) -> None:
        """Stop the workers the training and validation loaders kept through the fit."""
        if self._train is not None:
            self._train.close()
        for stream in self._kept:
            stop_workers(stream.loader)
        self._kept.clear()

    def batches(self, split: str, whole: bool = False) -> EvalStream:
        """Every image of ``split`` once, in order, with its label: what zoo eval and predict score. Under DDP
        this rank's share, or with ``whole`` all of the split."""
        return EvalStream(self, split, whole=whole)


def take_leading_box(module, dm) -> None:
    """Run the recipe's first augmentation per image in the workers when it has ``per_image_box`` and the data
    is streamed: it gets the full-size image there; the batch pipeline goes on without it."""
    from zoo.data.augment import AugmentPipeline

    pipeline = module.augment
    if not pipeline.steps or not hasattr(pipeline.steps[0], "per_image_box"):
        return
    dm.train_box = pipeline.steps[0].per_image_box
    module.augment = AugmentPipeline(pipeline.specs[1:], pipeline.num_classes, seed=pipeline.seed)

