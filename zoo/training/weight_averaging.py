"""The recipe's ``ema``: Lightning's EMAWeightAveraging, with the current weights standing in until it starts.

Lightning's callback copies the network once, at the start of fitting, and from then on validates, saves and
finishes with that copy. With ``start_step`` > 0 the copy is the untrained network until the first update:
each validation before it scored chance (10% on CIFAR-10 for the first seven epochs of cifar10-cpu with
``start_step: 300``), and a checkpoint or a run stopped then held initial weights. Until the first update,
this callback refreshes the copy from the current weights before each of those uses.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.callbacks import EMAWeightAveraging


class EMA(EMAWeightAveraging):
    """An exponential moving average of the weights that is the current weights until its first update."""

    def _follow_until_started(self, pl_module) -> None:
        average = self._average_model
        if average is None or int(average.n_averaged) > 0:
            return
        with torch.no_grad():
            for kept, current in zip(average.module.state_dict().values(), pl_module.state_dict().values()):
                kept.copy_(current)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._follow_until_started(pl_module)
        super().on_validation_epoch_start(trainer, pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self._follow_until_started(pl_module)
        super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_train_end(self, trainer, pl_module) -> None:
        self._follow_until_started(pl_module)
        super().on_train_end(trainer, pl_module)
