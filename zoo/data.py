"""In-memory data: whole splits held as tensors and batched by index, no per-sample Python work."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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


class TensorBatches:
    """Batches of a Split, drawn by index; reshuffled each epoch from (seed, epoch) so a resumed run repeats them.

    A DataLoader would index one sample at a time and collate; slicing whole tensors is the same data
    with one gather per batch.
    """

    def __init__(
        self, split: Split, batch_size: int, *, shuffle: bool, seed: int = 0, drop_last: bool = False
    ) -> None:
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.split)
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=gen)
        else:
            order = None
        self.epoch += 1
        for i in range(len(self)):
            if order is None:
                yield self.split.x[i * self.batch_size : (i + 1) * self.batch_size], self.split.y[
                    i * self.batch_size : (i + 1) * self.batch_size
                ]
            else:
                idx = order[i * self.batch_size : (i + 1) * self.batch_size]
                yield self.split.x[idx], self.split.y[idx]


class DataModule(L.LightningDataModule):
    """Train/val/test splits in memory, with what a model needs to know about them."""

    def __init__(
        self,
        train: Split,
        val: Split,
        test: Split,
        *,
        num_classes: int,
        batch_size: int,
        eval_batch_size: int = 1024,
        classes: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.train, self.val, self.test = train, val, test
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.classes = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
        self.seed = seed
        self._train_batches: TensorBatches | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def sample(self, n: int = 256) -> torch.Tensor:
        """A fixed batch of training inputs, for data-dependent initialization."""
        return self.train.x[:n]

    def train_dataloader(self) -> TensorBatches:
        if self._train_batches is None:
            self._train_batches = TensorBatches(self.train, self.batch_size, shuffle=True, seed=self.seed)
        if self.trainer is not None:
            self._train_batches.epoch = self.trainer.current_epoch
        return self._train_batches

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(self.val, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(self.test, self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> TensorBatches:
        return self.test_dataloader()
