"""The one LightningModule: classification with any registered network."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from zoo.augment import AugmentPipeline
from zoo.tta import views
from zoo.build import build_network, build_optimizer, build_schedule


def to_unit_float(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Images stored as uint8 (a quarter of the memory) become floats in [0, 1] on the device."""
    return x.to(dtype).div_(255) if x.dtype == torch.uint8 else x.to(dtype)


def schedule_lengths(trainer: L.Trainer) -> tuple[int, int]:
    """Optimizer steps in the whole run and per epoch, as the schedule sees them."""
    total = int(trainer.estimated_stepping_batches)
    return total, max(1, total // max(1, trainer.max_epochs or 1))


class Classifier(L.LightningModule):
    """Trains ``recipe['model']`` on ``num_classes`` classes with cross-entropy; logs loss and accuracy per split.

    The resolved recipe is the module's only hyperparameter, so a checkpoint rebuilds itself from it.
    """

    def __init__(self, recipe: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.recipe = recipe
        self.num_classes = num_classes
        self.tta = {"flip": False, "crops": 0, "shift": 2, **recipe.get("tta", {})}
        self.reg = {"label_smoothing": 0.0, "l1": 0.0, "l2": 0.0, "decay_norm_and_bias": False, **recipe.get("regularization", {})}
        self.net = build_network(recipe["model"], tuple(input_shape), num_classes)
        self.augment = AugmentPipeline(recipe.get("augment", []), num_classes, seed=recipe.get("seed", 0))
        # Training-split statistics, applied after augmentation; buffers, so checkpoints carry them.
        self.register_buffer("input_mean", torch.zeros(input_shape))
        self.register_buffer("input_std", torch.ones(input_shape))
        self.metrics = torch.nn.ModuleDict(
            {f"{split}_acc": MulticlassAccuracy(num_classes, average="micro") for split in ("train", "val", "test")}
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.input_mean.shape)

    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.input_mean.copy_(mean.expand_as(self.input_mean))
        self.input_std.copy_(std.expand_as(self.input_std))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (to_unit_float(x, self.input_mean.dtype) - self.input_mean) / self.input_std

    def initialize(self, sample: torch.Tensor | None = None) -> None:
        """Apply the model's initializer (given raw inputs, for data-dependent schemes such as LSUV)."""
        init = getattr(self.net, "initialize", None)
        if init is not None:
            init(None if sample is None else self.standardize(sample))

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities for raw inputs, averaged over the recipe's test-time views when it has any."""
        tta = self.tta
        if not (tta["flip"] or tta["crops"]):
            return self(self.standardize(x)).softmax(-1)
        x = to_unit_float(x, self.input_mean.dtype)
        return torch.stack([self(self.standardize(v)).softmax(-1) for v in views(x, **tta)]).mean(0)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Class probabilities for raw inputs (as the data set stores them), in eval mode."""
        self.eval()
        device = self.input_mean.device
        return torch.cat([self.probabilities(c.to(device)) for c in x.split(batch_size)])

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Training batches are augmented here, on the device; standardizing happens in the steps."""
        x, y = batch
        trainer = self._trainer  # None when used outside a Trainer (evaluating a loaded checkpoint)
        if trainer is not None and trainer.training and self.augment:
            x, y = self.augment(to_unit_float(x, self.input_mean.dtype), y)
        return x, y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch, split: str) -> torch.Tensor:
        x, y = batch
        if split == "train":
            logits = self(self.standardize(x))
            # y: class indices, or soft targets after a mixing augmentation; smoothing applies to both
            loss = F.cross_entropy(logits, y, label_smoothing=self.reg["label_smoothing"])
            if self.reg["l1"] or self.reg["l2"]:
                loss = loss + self.penalty()
        else:
            logits = self.probabilities(x).clamp_min(1e-12).log()  # log-probabilities serve as logits
            loss = F.nll_loss(logits, y)
        metric = self.metrics[f"{split}_acc"]
        metric(logits, y.argmax(-1) if y.is_floating_point() else y)
        on_step = split == "train"
        # evaluation losses are averaged over ranks; the training loss stays per rank (no sync per step)
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=split != "test", sync_dist=not on_step)
        self.log(f"{split}/acc", metric, on_step=False, on_epoch=True, prog_bar=split != "test")
        return loss

    def penalized(self) -> list[torch.nn.Parameter]:
        """The parameters L1/L2 penalties and weight decay apply to: weights, unless the recipe says all."""
        if self.reg["decay_norm_and_bias"]:
            return list(self.net.parameters())
        return [p for p in self.net.parameters() if p.ndim > 1]

    def penalty(self) -> torch.Tensor:
        """l1 * sum |w| + l2 * sum w^2 over the penalized weights (both: an elastic net)."""
        weights = self.penalized()
        total = torch.zeros((), device=weights[0].device)
        if self.reg["l1"]:
            total = total + self.reg["l1"] * sum(w.abs().sum() for w in weights)
        if self.reg["l2"]:
            total = total + self.reg["l2"] * sum(w.pow(2).sum() for w in weights)
        return total

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def predict_step(self, batch, batch_idx):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.probabilities(x)

    def on_fit_start(self) -> None:
        # every rank augments differently, or DDP would show each rank the same "random" views
        self.augment.seed = self.recipe.get("seed", 0) + 1_000_003 * self.global_rank
        self.augment._generator = None

    def global_batch_size(self) -> int:
        t = self.trainer
        return int(self.recipe["data"].get("batch_size", 1)) * t.world_size * t.accumulate_grad_batches

    def configure_optimizers(self):
        optimizer = build_optimizer(self.recipe["optimizer"], self.net, self.reg["decay_norm_and_bias"])
        reference = self.recipe.get("lr_scaling", {}).get("reference_batch_size")
        if reference:
            factor = self.global_batch_size() / reference
            for group in optimizer.param_groups:
                group["lr"] *= factor
                group["initial_lr"] = group["lr"]
        total, per_epoch = schedule_lengths(self.trainer)
        schedule = build_schedule(self.recipe["schedule"], optimizer, total, per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": schedule}
