"""The one LightningModule: classification with any registered network."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from zoo.augment import AugmentPipeline
from zoo.build import build_network, build_optimizer, build_schedule


class Classifier(L.LightningModule):
    """Trains ``recipe['model']`` on ``num_classes`` classes with cross-entropy; logs loss and accuracy per split.

    The resolved recipe is the module's only hyperparameter, so a checkpoint rebuilds itself from it.
    """

    def __init__(self, recipe: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.recipe = recipe
        self.num_classes = num_classes
        self.net = build_network(recipe["model"], tuple(input_shape), num_classes)
        self.augment = AugmentPipeline(recipe.get("augment", []), num_classes, seed=recipe.get("seed", 0))
        # Training-split statistics, applied after augmentation; buffers, so checkpoints carry them.
        self.register_buffer("input_mean", torch.zeros(input_shape))
        self.register_buffer("input_std", torch.ones(input_shape))
        self.metrics = torch.nn.ModuleDict(
            {f"{split}_acc": MulticlassAccuracy(num_classes, average="micro") for split in ("train", "val", "test")}
        )

    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.input_mean.copy_(mean.expand_as(self.input_mean))
        self.input_std.copy_(std.expand_as(self.input_std))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.input_mean.dtype) - self.input_mean) / self.input_std

    def initialize(self, sample: torch.Tensor | None = None) -> None:
        """Apply the model's initializer (given raw inputs, for data-dependent schemes such as LSUV)."""
        init = getattr(self.net, "initialize", None)
        if init is not None:
            init(None if sample is None else self.standardize(sample))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        trainer = self._trainer  # None when used outside a Trainer (evaluating a loaded checkpoint)
        if trainer is not None and trainer.training and self.augment:
            x, y = self.augment(x.to(self.input_mean.dtype), y)
        return self.standardize(x), y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch, split: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)  # y: class indices, or soft targets after a mixing augmentation
        metric = self.metrics[f"{split}_acc"]
        metric(logits, y.argmax(-1) if y.is_floating_point() else y)
        on_step = split == "train"
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=split != "test")
        self.log(f"{split}/acc", metric, on_step=False, on_epoch=True, prog_bar=split != "test")
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(-1)

    def configure_optimizers(self):
        optimizer = build_optimizer(self.recipe["optimizer"], self.net)
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, self.trainer.max_epochs or 1))
        schedule = build_schedule(self.recipe["schedule"], optimizer, total, per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": schedule}
