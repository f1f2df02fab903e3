"""Several optimizer steps per Lightning training step (the recipe's ``performance.steps_per_execution``).

Why: Lightning's loop costs about 0.7 ms per training step on a 2-core CPU (each hook dispatched to
every callback, logging bookkeeping, the optimizer closure): a sixth of the default recipe's 4 ms
step. Given K batches at once, the module runs K optimizer steps inside one Lightning step and
that cost is paid once per K steps, the idea of Keras's ``steps_per_execution``
(benchmarks/framework_overhead.py measures it).

The updates are the ones one step per batch would make, in the same order. Per optimizer step, as
before: the optimizer-level hooks of the module and of every callback that implements them
(``on_before_zero_grad``, ``on_before_backward``, ``on_after_backward``,
``on_before_optimizer_step``, in Lightning's order), gradient clipping, ``global_step``, the
step-interval schedules. Per group: ``on_train_batch_start``/``on_train_batch_end``, so what
callbacks do there (step logging, signal checkpoints) happens between groups. The loggers' step axis
stays in optimizer steps.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor as _LightningLRMonitor
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.utilities.model_helpers import is_overridden


def group_size(recipe: dict[str, Any], world_size: int = 1) -> tuple[int, str | None]:
    """The steps per training step a run takes, and why that is 1 when the recipe asks for more.

    Grouped steps run the optimizer by hand (Lightning's manual optimization), so what needs
    Lightning's own optimizer step keeps one step per batch: DDP (its gradient reduction expects one
    backward pass per forward call), Lightning's EMA (it updates once per training step), the recipe's
    callbacks that act on every training batch, gradient accumulation and fp16 loss scaling. The result is
    the same either way; only the speed differs.
    """
    asked = int(recipe.get("performance", {}).get("steps_per_execution", 1))
    if asked == 1:
        return 1, None
    trainer = recipe.get("trainer", {})
    reasons = []
    if world_size > 1:
        reasons.append(f"{world_size} processes")
    if recipe.get("ema") is not None:
        reasons.append("ema")
    if int(trainer.get("accumulate_grad_batches") or 1) > 1:
        reasons.append("accumulate_grad_batches")
    if str(trainer.get("precision")) in ("16", "16-mixed"):
        reasons.append(f"precision {trainer.get('precision')}")
    reasons += _callbacks_needing_each_step(trainer.get("callbacks") or [])
    if reasons:
        return 1, f"performance.steps_per_execution={asked} does not apply with {', '.join(reasons)}: one step per batch"
    return asked, None


def _callbacks_needing_each_step(entries: list[dict[str, Any]]) -> list[str]:
    """The recipe's callbacks that act on every training batch (a weight average's update, say), which in a
    group would act once per group, and those that need Lightning's own optimizer step."""
    from lightning.pytorch.callbacks import GradientAccumulationScheduler

    from zoo.core.class_paths import resolve
    from zoo.core.recipe_callbacks import CALLBACKS_MODULE

    found = []
    for i, entry in enumerate(entries):
        cls = resolve(entry["class_path"], f"trainer.callbacks[{i}]", CALLBACKS_MODULE)
        if issubclass(cls, GradientAccumulationScheduler):
            found.append(f"trainer.callbacks[{i}] ({cls.__name__} accumulates gradients)")
        elif any(is_overridden(hook, cls, parent=L.Callback) for hook in ("on_train_batch_start", "on_train_batch_end")):
            found.append(f"trainer.callbacks[{i}] ({cls.__name__} acts on every training batch)")
    return found


# The hooks Lightning calls around each optimizer step, in the order it calls them.
OPTIMIZER_HOOKS = ("on_before_zero_grad", "on_before_backward", "on_after_backward", "on_before_optimizer_step")


class OptimizerStepHooks:
    """Calls the optimizer-step hooks on the callbacks and the module that implement them, and no others.

    Lightning's own dispatch visits every callback for every hook, about 40 microseconds a hook with
    zoo's callbacks; most implement none of these, so the list is made once, when training starts.
    """

    def __init__(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.trainer, self.module = trainer, module
        self.targets: dict[str, list[Any]] = {}
        for hook in OPTIMIZER_HOOKS:
            found: list[Any] = [cb for cb in trainer.callbacks if is_overridden(hook, cb, parent=L.Callback)]
            self.targets[hook] = found
            if is_overridden(hook, module, parent=L.LightningModule):
                self.targets[hook].append(None)  # the module, called after the callbacks as Lightning does

    def __call__(self, hook: str, *args: Any) -> None:
        for target in self.targets[hook]:
            if target is None:
                getattr(self.module, hook)(*args)
            else:
                getattr(target, hook)(self.trainer, self.module, *args)


def run_group(module, group: list[tuple[torch.Tensor, torch.Tensor]], hooks: OptimizerStepHooks) -> int:
    """One optimizer step per batch of ``group``; returns how many ran (fewer when training must stop).

    ``module`` is zoo's Classifier under manual optimization; each step is what Lightning's automatic
    optimization does: the training loss, zero_grad, backward, clipping, the optimizer step, then the
    step-interval schedules.
    """
    trainer = module.trainer
    optimizer = module.optimizers().optimizer  # the torch optimizer: Lightning's wrapper is the cost avoided
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    schedules = [c for c in trainer.lr_scheduler_configs if c.interval == "step"]
    clip = module.gradient_clipping
    device_type = module.device.type
    step = trainer.global_step  # counted here: Lightning's property walks five objects on every read
    last = trainer.max_steps if trainer.max_steps > 0 else None
    done = 0
    for x, y in group:
        loss = module.step_loss(x, y)
        hooks("on_before_zero_grad", optimizer)
        optimizer.zero_grad(set_to_none=True)
        hooks("on_before_backward", loss)
        # autocast (bf16-mixed) wraps the whole training step; the backward pass belongs outside it
        if torch.is_autocast_enabled(device_type):
            with torch.autocast(device_type, enabled=False):
                loss.backward()
        else:
            loss.backward()
        hooks("on_after_backward")
        hooks("on_before_optimizer_step", optimizer)
        if clip is not None:
            module.clip_gradients(optimizer, gradient_clip_val=clip[0], gradient_clip_algorithm=clip[1])
        progress.increment_ready()
        optimizer.step()
        progress.increment_completed()  # trainer.global_step counts these
        done += 1
        step += 1
        for config in schedules:
            if step % config.frequency == 0:
                config.scheduler.step()
        if trainer.should_stop or (last is not None and step >= last):
            break
    # Lightning adds one per training step to the count its loggers use as their step; the rest here,
    # so logged metrics line up by optimizer step whatever the group size
    trainer.fit_loop.epoch_loop._batches_that_stepped += done - 1
    return done


class LearningRateMonitor(_LightningLRMonitor):
    """Lightning's LearningRateMonitor, which also logs when training steps hold groups of optimizer steps.

    Lightning's monitor logs at a training step's start when the next step lands on the logging grid;
    a group logs when its last step does (the grid is where the group's other metrics are written), with
    the learning rate and step number of its first step.
    """

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        every = trainer.log_every_n_steps
        if not isinstance(batch, list) or not every or self.logging_interval == "epoch":
            return super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        start = trainer.fit_loop.epoch_loop._batches_that_stepped
        if (start + len(batch)) % every:
            return
        stats = self._extract_stats(trainer, "step" if self.logging_interval is None else "any")
        for logger in trainer.loggers if stats else []:
            logger.log_metrics(stats, step=start)


class ProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, counting optimizer steps when training steps hold groups of them.

    Lightning's bar counts training steps, which would show a one-group epoch as ``1/1``; here it
    shows the epoch's batches, moving on at the end of each group.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._steps_done = 0

    @property
    def total_train_batches(self) -> int | float:
        from zoo.data.datamodule import BatchGroups

        loader = self.trainer.train_dataloader
        if isinstance(loader, BatchGroups):
            return loader.steps_per_epoch(self.trainer.num_training_batches)
        return super().total_train_batches

    def on_train_epoch_start(self, trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._steps_done = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not isinstance(batch, list):
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._steps_done += len(batch)
        bar = self.train_progress_bar
        if bar is not None and not bar.disable:
            bar.n = self._steps_done
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # redraws the bar as well
