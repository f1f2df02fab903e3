"""The one LightningModule: classification with any registered network."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import TQDMProgressBar
from torchmetrics.classification import MulticlassAccuracy

from zoo.augment import AugmentPipeline
from zoo.build import build_network, build_optimizer, build_schedule
from zoo.tta import views


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
        self.perf = {"channels_last": False, "compile": False, "compile_mode": "default",
                     "compile_backend": "inductor", **recipe.get("performance", {})}
        self.augment = AugmentPipeline(recipe.get("augment", []), num_classes, seed=recipe.get("seed", 0))
        self.augment.check_input_shape(tuple(input_shape))
        # Training-split statistics, applied after augmentation; buffers, so checkpoints carry them.
        self.register_buffer("input_mean", torch.zeros(input_shape))
        self.register_buffer("input_std", torch.ones(input_shape))
        self.metrics = torch.nn.ModuleDict(
            {f"{split}_acc": MulticlassAccuracy(num_classes, average="micro") for split in ("val", "test")}
        )
        # The training epoch's loss and accuracy are added up on the device, step by step, and handed to
        # the loggers once per epoch: a torchmetrics forward and two self.log calls per step took about
        # 1 ms per step on a 2-core CPU, a quarter of the default recipe's whole step. Plain attributes,
        # not buffers: they never enter a checkpoint.
        self._epoch_loss: torch.Tensor | None = None  # sum of loss x batch size
        self._epoch_correct: torch.Tensor | None = None
        self._epoch_seen = 0
        self._step_loss: torch.Tensor | None = None
        self._step_logged = False
        self._bar_every = 0  # set when training starts: see on_train_start

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.input_mean.shape)

    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.input_mean.copy_(mean.expand_as(self.input_mean))
        self.input_std.copy_(std.expand_as(self.input_std))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        x = (to_unit_float(x, self.input_mean.dtype) - self.input_mean) / self.input_std
        if self.perf["channels_last"] and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def configure_model(self) -> None:
        # After initialization, not in __init__: initializers draw their numbers in memory order, so
        # converting first would give a channels_last run other initial weights than the same recipe without.
        if self.perf["channels_last"]:
            self.net.to(memory_format=torch.channels_last)  # only 4-d weights change
        # compiled in place: the state_dict keeps its names, so checkpoints load into an uncompiled model
        if self.perf["compile"] and self.net._compiled_call_impl is None:
            self.net.compile(mode=self.perf["compile_mode"], backend=self.perf["compile_backend"])

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

    def _train_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the training loss (penalties included) of one batch."""
        logits = self(self.standardize(x))
        # y: class indices, or soft targets after a mixing augmentation; smoothing applies to both
        loss = F.cross_entropy(logits, y, label_smoothing=self.reg["label_smoothing"])
        if self.reg["l1"] or self.reg["l2"]:
            loss = loss + self.penalty()
        return logits, loss

    def _step(self, batch, split: str) -> torch.Tensor:
        """The loss of one batch; evaluation splits also log their loss and accuracy (per epoch)."""
        x, y = batch
        if split == "train":
            return self._train_loss(x, y)[1]
        logits = self.probabilities(x).clamp_min(1e-12).log()  # log-probabilities serve as logits
        loss = F.nll_loss(logits, y)
        metric = self.metrics[f"{split}_acc"]
        # update, not forward: only the epoch's value is logged, so the per-batch accuracy is never needed
        metric.update(logits, y.argmax(-1) if y.is_floating_point() else y)
        bar, n = split != "test", len(y)
        # evaluation losses are averaged over ranks (once, at the epoch's end)
        self.log(f"{split}/loss", loss, on_step=False, prog_bar=bar, sync_dist=True, batch_size=n)
        self.log(f"{split}/acc", metric, on_step=False, on_epoch=True, prog_bar=bar)
        return loss

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits, loss = self._train_loss(x, y)
        # the epoch's running sums stay on the device (no host sync per step); argmax, detach build no graph
        n = len(y)
        labels = y.argmax(-1) if y.is_floating_point() else y
        correct = (logits.argmax(-1) == labels).sum()
        weighted = loss.detach().float() * n
        if self._epoch_loss is None:
            self._epoch_loss, self._epoch_correct = weighted, correct
        else:
            self._epoch_loss.add_(weighted)
            self._epoch_correct.add_(correct)
        self._epoch_seen += n
        self._step_loss = loss.detach()
        self._step_logged = self._step_loss_read(batch_idx)
        if self._step_logged:
            self._log_step_loss()
        return loss

    def _step_loss_read(self, batch_idx: int) -> bool:
        """Whether anything reads this step's loss: the loggers (every log_every_n_steps) or a progress bar.

        A value logged on any other step is overwritten unseen, and each self.log call costs a visible
        share of a small model's step (a progress-bar value also a device-to-host copy).
        """
        trainer = self.trainer
        every = trainer.log_every_n_steps
        # the step count Lightning tests when it decides to write the step's metrics to the loggers
        if trainer.fast_dev_run or (every and (trainer.global_step + 1) % every == 0):
            return True
        bar = self._bar_every
        return bool(bar) and (bar == 1 or (batch_idx + 1) % bar == 0 or trainer.is_last_batch)

    def _log_step_loss(self) -> None:
        bar = bool(self._bar_every)
        self.log("train/loss_step", self._step_loss, on_step=True, on_epoch=False, prog_bar=bar)

    def on_train_start(self) -> None:
        # How often the progress bar reads the metrics: 0 without a bar, every N batches for a TQDM bar,
        # and on every step for any other bar (Rich refreshes by time, so any step may be the one shown).
        bar = self.trainer.progress_bar_callback
        if bar is None or not getattr(bar, "is_enabled", True):
            self._bar_every = 0
        elif isinstance(bar, TQDMProgressBar):
            self._bar_every = max(1, int(bar.refresh_rate))
        else:
            self._bar_every = 1

    def on_train_epoch_start(self) -> None:
        self._epoch_loss = self._epoch_correct = None
        self._epoch_seen = 0

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        trainer = self.trainer
        if trainer.should_stop and not self._step_logged:
            self._log_step_loss()  # a stop makes Lightning write this step's metrics: with this step's loss
        if trainer.is_last_batch:
            # now rather than in on_train_epoch_end, which Lightning calls on the module only after the
            # callbacks' (the progress bar's, a user's): they see this epoch's figures, as they did when
            # Lightning reduced them from per-step logs
            self._log_epoch_sums()

    def on_train_epoch_end(self) -> None:
        self._log_epoch_sums()  # an epoch cut short (max_steps, a stop) never reached its last batch

    def _log_epoch_sums(self) -> None:
        if self._epoch_loss is None and not self.trainer.world_size > 1:
            return
        device = self.input_mean.device
        zero = torch.zeros((), device=device)
        loss_sum = self._epoch_loss if self._epoch_loss is not None else zero
        correct = self._epoch_correct if self._epoch_correct is not None else zero
        seen = torch.tensor(float(self._epoch_seen), device=device)
        sums = torch.stack([loss_sum.float(), correct.float(), seen])
        self._epoch_loss = self._epoch_correct = None
        self._epoch_seen = 0
        # Once per epoch, on every rank (nothing on one device): the whole epoch's loss and accuracy.
        loss_sum, correct, seen = self.trainer.strategy.reduce(sums, reduce_op="sum")
        if not seen > 0:
            return
        loss, acc = loss_sum / seen, correct / seen
        # the names these had when Lightning reduced them from per-step logs: train/loss_epoch, train/acc
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=1)
        self.log("train/acc", acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=1)
        # callbacks watching "train/loss" (early stopping, say) found the epoch's mean under that name too
        self.log("train/loss", loss, on_step=False, on_epoch=True, logger=False, batch_size=1)

    def penalized(self) -> list[torch.nn.Parameter]:
        """The parameters L1/L2 penalties and weight decay apply to: weights, unless the recipe says all."""
        # frozen parameters (a whitened first layer) get no gradient: a penalty on them only shifts the loss
        trainable = [p for p in self.net.parameters() if p.requires_grad]
        if self.reg["decay_norm_and_bias"]:
            return trainable
        return [p for p in trainable if p.ndim > 1]

    def penalty(self) -> torch.Tensor:
        """l1 * sum |w| + l2 * sum w^2 over the penalized weights (both: an elastic net)."""
        weights = self.penalized()
        total = torch.zeros((), device=weights[0].device)
        if self.reg["l1"]:
            total = total + self.reg["l1"] * sum(w.abs().sum() for w in weights)
        if self.reg["l2"]:
            total = total + self.reg["l2"] * sum(w.pow(2).sum() for w in weights)
        return total

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
