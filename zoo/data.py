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
    """Train/val/test splits in memory, with what a model needs to know about them.

    Inputs are kept as they come (images in [0, 1]); ``mean`` and ``std`` (training-split statistics,
    broadcastable to one input) are applied by the model after augmentation, so augmentations see
    real pixels and a checkpoint carries its own standardization.
    """

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
        self._train_batches: TensorBatches | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @staticmethod
    def statistics(x: torch.Tensor, per: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of ``x`` per input feature (``feature``), per channel (``channel``), or none (``none``).

        Features that never vary (blank borders) get std 1, so they stay zero instead of amplifying noise.
        """
        if per == "feature":
            mean, std = x.mean(0), x.std(0)
        elif per == "channel":
            dims = (0, *range(2, x.ndim))
            mean, std = x.mean(dims).view(-1, *[1] * (x.ndim - 2)), x.std(dims).view(-1, *[1] * (x.ndim - 2))
        else:
            return torch.zeros(1), torch.ones(1)
        return mean, torch.where(std < 1e-6, torch.ones_like(std), std)

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
