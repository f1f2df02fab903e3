"""The one LightningModule: classification with any registered network."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import TQDMProgressBar
from torchmetrics.classification import MulticlassAccuracy

from zoo.core.build import build_network, build_optimizer, build_schedule
from zoo.core.errors import ZooError
from zoo.data.augment import AugmentPipeline
from zoo.data.datamodule import to_unit_float
from zoo.data.tta import views


# model keys that name weights to start from (timm's); a trained model's checkpoint already holds its weights
STARTING_WEIGHTS = ("pretrained", "pretrained_file")


def schedule_lengths(trainer: L.Trainer) -> tuple[int, int]:
    """Optimizer steps in the whole run and per epoch, as the schedule sees them."""
    from zoo.data.datamodule import BatchGroups

    total = int(trainer.estimated_stepping_batches)  # sets the training data up, if it was not yet
    loader = trainer.train_dataloader
    if isinstance(loader, BatchGroups):
        # Lightning counts training steps, each of which is a group of optimizer steps here
        per_epoch = loader.steps_per_epoch(trainer.num_training_batches)
        epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else None
        by_epochs = per_epoch * epochs if epochs is not None else None
        steps = trainer.max_steps if trainer.max_steps > 0 else None
        total = min(n for n in (by_epochs, steps) if n is not None)
        return total, max(1, per_epoch)
    return total, max(1, total // max(1, trainer.max_epochs or 1))


class Classifier(L.LightningModule):
    """Trains ``recipe['model']`` on ``num_classes`` classes with cross-entropy; logs loss and accuracy per split.

    The resolved recipe is the module's only hyperparameter, so a checkpoint rebuilds itself from it.
    """

    @classmethod
    def for_inference(
        cls, recipe: dict[str, Any], input_shape: tuple[int, ...], num_classes: int, where: str,
        trusted_plugins: list[str],
    ) -> Classifier:
        """A trained model's network rebuilt from its saved recipe, for evaluation and prediction.

        Only what inference builds is resolved (the network and the data: zoo.core.recipe.EVALUATION_NEEDS),
        so a model whose optimizer, augmentation or initializer came from a package since uninstalled still
        evaluates; its augmentations, which act on training batches only, are left out.
        """
        from zoo.core.recipe import EVALUATION_NEEDS, from_dict

        resolved = from_dict(recipe, where, trusted_plugins=trusted_plugins, needs=EVALUATION_NEEDS).to_dict()
        # the trained weights come from the checkpoint: the ones the run started from are not read again
        model = {k: v for k, v in resolved["model"].items() if k not in STARTING_WEIGHTS}
        return cls({**resolved, "model": model, "augment": []}, input_shape, num_classes)

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
        self.gradient_clipping: tuple[float, str] | None = None  # (value, algorithm), for grouped steps
        self._step_hooks = None
        self._group: tuple[int, int] | None = None  # (id of the trainer, its steps per training step)
        # Training-split statistics, applied after augmentation; buffers, so checkpoints carry them.
        self.register_buffer("input_mean", torch.zeros(input_shape))
        self.register_buffer("input_std", torch.ones(input_shape))
        self.metrics = torch.nn.ModuleDict(
            {f"{split}_acc": MulticlassAccuracy(num_classes, average="micro") for split in ("val", "test")}
        )
        # The training epoch's loss and accuracy are kept on the device, step by step, and reduced and
        # handed to the loggers once per epoch: a torchmetrics forward and two self.log calls per step
        # took about 1 ms per step on a 2-core CPU, a quarter of the default recipe's whole step, and
        # running sums (add_ per step) 20 us a step more than appending to lists. Plain attributes, not buffers:
        # they never enter a checkpoint.
        self._epoch_losses: list[torch.Tensor] = []  # each step's mean loss
        self._epoch_predicted: list[torch.Tensor] = []  # each step's predicted and true classes
        self._epoch_labels: list[torch.Tensor] = []
        self._epoch_sizes: list[int] = []
        self._epoch_correct_before = 0  # right answers of the epoch's steps before a resume (see epoch_state)
        self._resumed_epoch: dict[str, Any] | None = None
        # the epoch's training figures once logged: Lightning writes them to the loggers only as the epoch
        # ends, after its checkpoint, so the checkpoint carries them for a resumed run to log (see epoch_state)
        self._epoch_figures: dict[str, Any] | None = None
        self._step_loss: torch.Tensor | None = None
        self._step_logged = False
        self._bar_every = 0  # set when training starts: see on_train_start

    @property
    def steps_per_execution(self) -> int:
        """Optimizer steps per training step under the current trainer (zoo.training.step_groups.group_size)."""
        from zoo.training.step_groups import group_size

        trainer = self._trainer
        key = id(trainer)
        cached = self.__dict__.get("_group")
        if cached is not None and cached[0] == key:
            return cached[1]
        world = trainer.world_size if trainer is not None else 1
        self._group = (key, group_size(self.recipe, world)[0])
        return self._group[1]

    @property
    def automatic_optimization(self) -> bool:
        # Several optimizer steps per training step run the optimizer by hand (zoo.training.step_groups)
        return self.steps_per_execution == 1

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        raise AttributeError("set performance.steps_per_execution in the recipe instead")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.input_mean.shape)

    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardize by the data's ``mean`` and ``std``, or by the ones trained weights expect (a network's
        ``input_stats``, as a pretrained timm model has)."""
        mean, std = getattr(self.net, "input_stats", None) or (mean, std)
        self.input_mean.copy_(mean.expand_as(self.input_mean))
        self.input_std.copy_(std.expand_as(self.input_std))
        self.augment.set_input_stats(self.input_mean, self.input_std)

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
        trainer = self._trainer  # None when used outside a Trainer (evaluating a loaded checkpoint)
        if trainer is None or not trainer.training or not self.augment:
            return batch
        # raw batches (uint8 images): the pipeline keeps them uint8 as long as its steps allow
        dtype = self.input_mean.dtype
        if isinstance(batch, list):  # a group of batches (steps_per_execution)
            return [self.augment(x, y, dtype) for x, y in batch]
        x, y = batch
        return self.augment(x, y, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _train_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the training loss (penalties included) of one batch."""
        logits = self.net(self.standardize(x))  # self.net, not self: one module call less per step
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
        if not self.automatic_optimization:
            return self._grouped_training_step(batch, batch_idx)
        x, y = batch
        loss = self.step_loss(x, y)
        self._step_logged = self._step_loss_read(batch_idx, self.trainer.global_step + 1)
        if self._step_logged:
            self._log_step_loss()
        return loss

    def _grouped_training_step(self, group, batch_idx) -> None:
        from zoo.training.step_groups import run_group

        run_group(self, group, self._step_hooks)
        self._step_logged = self._step_loss_read(batch_idx, self.trainer.global_step)
        if self._step_logged:
            self._log_step_loss()

    def step_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One batch's training loss, kept with its accuracy for the epoch's figures."""
        logits, loss = self._train_loss(x, y)
        # kept on the device (no host sync per step); argmax and detach build no graph
        labels = y.argmax(-1) if y.is_floating_point() else y
        self._step_loss = loss.detach()
        self._epoch_losses.append(self._step_loss)
        self._epoch_predicted.append(logits.argmax(-1))
        self._epoch_labels.append(labels)
        self._epoch_sizes.append(len(y))
        return loss

    def _step_loss_read(self, batch_idx: int, steps_done: int) -> bool:
        """Whether anything reads this step's loss: the loggers (every log_every_n_steps) or a progress bar.

        A value logged on any other step is overwritten unseen, and each self.log call costs a visible
        share of a small model's step (a progress-bar value also a device-to-host copy). ``steps_done``:
        optimizer steps when this training step is over, the count Lightning tests when it decides to
        write the step's metrics to the loggers.
        """
        trainer = self.trainer
        every = trainer.log_every_n_steps
        if trainer.fast_dev_run or (every and steps_done % every == 0):
            return True
        bar = self._bar_every
        return bool(bar) and (bar == 1 or (batch_idx + 1) % bar == 0 or trainer.is_last_batch)

    def _log_step_loss(self) -> None:
        bar = bool(self._bar_every)
        self.log("train/loss_step", self._step_loss, on_step=True, on_epoch=False, prog_bar=bar)

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        trainer = self.trainer
        datamodule = trainer.datamodule
        if hasattr(datamodule, "steps_per_execution"):
            datamodule.steps_per_execution = self.steps_per_execution
        if self.steps_per_execution == 1:
            return
        if not hasattr(datamodule, "steps_per_execution"):
            raise ZooError(
                f"performance.steps_per_execution={self.steps_per_execution} needs zoo's DataModule "
                "(zoo.data.datamodule.DataModule) to hand the batches over in groups"
            )
        value = self.recipe.get("trainer", {}).get("gradient_clip_val")
        if value:
            algorithm = self.recipe["trainer"].get("gradient_clip_algorithm") or "norm"
            self.gradient_clipping = (float(value), algorithm)

    def on_train_start(self) -> None:
        if not self.automatic_optimization:
            from zoo.training.step_groups import OptimizerStepHooks

            self._step_hooks = OptimizerStepHooks(self.trainer, self)
        # How often the progress bar reads the metrics: 0 without a bar, every N batches for a TQDM bar,
        # and on every step for any other bar (Rich refreshes by time, so any step may be the one shown).
        bar = self.trainer.progress_bar_callback
        if bar is None or not getattr(bar, "is_enabled", True):
            self._bar_every = 0
        elif isinstance(bar, TQDMProgressBar) and self.automatic_optimization:
            self._bar_every = max(1, int(bar.refresh_rate))
        else:
            self._bar_every = 1

    def on_train_epoch_start(self) -> None:
        self._epoch_losses, self._epoch_predicted, self._epoch_labels, self._epoch_sizes = [], [], [], []
        self._epoch_correct_before = 0
        self._epoch_figures = None
        self._take_resumed_epoch()
        self._resumed_epoch = None

    def _take_resumed_epoch(self) -> None:
        """The steps an epoch took before its checkpoint count in its loss and accuracy, as if uninterrupted."""
        resumed = self._resumed_epoch
        if resumed is None or resumed["epoch"] != self.trainer.current_epoch:
            return
        self._epoch_losses = list(resumed["losses"].to(self.input_mean.device).unbind())
        self._epoch_sizes = list(resumed["sizes"])
        self._epoch_correct_before = int(resumed["correct"])

    def epoch_state(self) -> dict[str, Any]:
        """The training epoch's figures so far (checkpointed mid-epoch: a resumed epoch's figures cover it all)."""
        correct = self._epoch_correct_before
        if self._epoch_sizes:
            correct += int((torch.cat(self._epoch_predicted) == torch.cat(self._epoch_labels)).sum())
        losses = torch.stack(self._epoch_losses).cpu() if self._epoch_losses else torch.zeros(0)
        epoch = self.trainer.current_epoch if self._trainer is not None else 0
        state = {"epoch": epoch, "losses": losses, "sizes": list(self._epoch_sizes), "correct": correct}
        figures = self._epoch_figures
        if figures is not None and figures["epoch"] == epoch:  # written after the epoch's last step
            state["logged"] = {"loss": figures["loss"].cpu(), "acc": figures["acc"].cpu()}
        return state

    def load_epoch_state(self, state: dict[str, Any]) -> None:
        """Called as a resumed run's training starts; Lightning goes on inside a checkpointed epoch without
        calling ``on_train_epoch_start`` for it, so the figures are taken now (and again, should it call it)."""
        self._resumed_epoch = state
        self._take_resumed_epoch()
        if "logged" not in state:
            return
        # the checkpoint came after the epoch's last step, before Lightning wrote the epoch's figures
        trainer = self.trainer
        if state["epoch"] == trainer.current_epoch:  # Lightning goes through the epoch's end again
            device = self.input_mean.device
            self._epoch_figures = {"epoch": state["epoch"], "resumed": True,
                                   **{k: v.to(device) for k, v in state["logged"].items()}}
            return
        self.log_finished_epoch(state)  # Lightning goes on with the next epoch

    def log_finished_epoch(self, state: dict[str, Any]) -> None:
        """The training figures of a checkpoint written at an epoch's end, which Lightning writes to the loggers
        after that checkpoint, go to them now, as that epoch's end would have written them (at its last step)."""
        if "logged" not in state:
            return
        metrics = {"train/loss_epoch": state["logged"]["loss"].item(), "train/acc": state["logged"]["acc"].item(),
                   "epoch": state["epoch"]}
        step = self.trainer.fit_loop.epoch_loop._batches_that_stepped - 1
        # written at once: a W&B run that starts after this (it starts with training) takes it from metrics.csv
        for logger in self.trainer.loggers:
            logger.log_metrics(metrics, step=step)
            logger.save()

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
        figures = self._epoch_figures
        if figures is not None and figures.get("resumed") and figures["epoch"] == self.trainer.current_epoch:
            self._log_epoch_figures(figures["loss"], figures["acc"])  # logged by the sitting before, not written
        self._log_epoch_sums()  # an epoch cut short (max_steps, a stop) never reached its last batch
        if not self.automatic_optimization:  # Lightning steps no schedule under manual optimization
            for config in self.trainer.lr_scheduler_configs:
                if config.interval == "epoch" and not config.reduce_on_plateau:
                    config.scheduler.step()

    def _log_epoch_sums(self) -> None:
        if not self._epoch_sizes and not self.trainer.world_size > 1:
            return
        device = self.input_mean.device
        sums = torch.zeros(3, device=device)
        if self._epoch_sizes:
            sizes = torch.tensor(self._epoch_sizes, dtype=torch.float32, device=device)
            correct = torch.tensor(self._epoch_correct_before, device=device)
            if self._epoch_predicted:
                correct = correct + (torch.cat(self._epoch_predicted) == torch.cat(self._epoch_labels)).sum()
            sums = torch.stack([(torch.stack(self._epoch_losses).float() * sizes).sum(), correct.float(), sizes.sum()])
        self._epoch_losses, self._epoch_predicted, self._epoch_labels, self._epoch_sizes = [], [], [], []
        self._epoch_correct_before = 0
        # Once per epoch, on every rank (nothing on one device): the whole epoch's loss and accuracy.
        loss_sum, correct, seen = self.trainer.strategy.reduce(sums, reduce_op="sum")
        if not seen > 0:
            return
        loss, acc = loss_sum / seen, correct / seen
        self._epoch_figures = {"epoch": self.trainer.current_epoch, "loss": loss, "acc": acc}
        self._log_epoch_figures(loss, acc)

    def _log_epoch_figures(self, loss: torch.Tensor, acc: torch.Tensor) -> None:
        # the names these had when Lightning reduced them from per-step logs: train/loss_epoch, train/acc.
        # Two calls only: each self.log costs about 0.5 ms on a 2-core CPU (Lightning deep-copies its
        # metadata), which for the default recipe is 1% of an epoch's training time.
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=1)
        self.log("train/acc", acc, on_step=False, on_epoch=True, prog_bar=True, batch_size=1)

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
        scaling = self.recipe.get("lr_scaling", {})
        optimizer = build_optimizer(
            self.recipe["optimizer"], self.net, self.reg["decay_norm_and_bias"], scaling.get("norm_and_bias", 1.0),
            self.recipe.get("finetune", {}).get("backbone_lr_mult", 1.0),
        )
        reference = scaling.get("reference_batch_size")
        if reference:
            factor = self.global_batch_size() / reference
            for group in optimizer.param_groups:
                group["lr"] *= factor
                group["initial_lr"] = group["lr"]
        total, per_epoch = schedule_lengths(self.trainer)
        schedule = build_schedule(self.recipe["schedule"], optimizer, total, per_epoch)
        # the learning-rate monitor logs it as train/lr, or train/lr/pg<i> per group when there are several
        return {"optimizer": optimizer, "lr_scheduler": {**schedule, "name": "train/lr"}}
