"""A test-only plugin: a monitor that signals its own process after a given optimizer step.

It is what an outside ``kill -9`` or a scheduler's SIGTERM does, at a step chosen by the test. A marker
file makes it fire once, so the resumed run (whose recipe still lists it) trains on undisturbed.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import lightning as L

from zoo.core.catalog import monitors


class SignalAtStep(L.Callback):
    def __init__(self, step: int, signum: int, marker: Path, rank: int | None) -> None:
        self.step, self.signum, self.marker, self.rank = step, signum, marker, rank

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.write_text(f"{self.step} {time.time()}")
            os.kill(os.getpid(), self.signum)


@monitors.register("signal_at_step")
def signal_at_step(step: int, marker: str, signal_name: str = "SIGKILL", rank: int | None = None):
    """Sends ``signal_name`` to this process once, after optimizer step ``step`` (test fault injection).

    ``rank``: only in the DDP process of that global rank (0: the process that launched the others).
    The marker file records the step and the time the signal was sent.
    """
    return SignalAtStep(step, getattr(signal, signal_name), Path(marker), rank)
