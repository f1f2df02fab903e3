"""A test-only plugin: a monitor that holds a run at its start until ``count`` runs (in any processes) got there.

Tests of processes that share a sweep use it so that each process is sure to hold a trial, however fast
the trials and however slowly each process starts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L

from zoo.core.catalog import monitors


class MeetPeers(L.Callback):
    def __init__(self, folder: Path, count: int, timeout: float) -> None:
        self.folder, self.count, self.timeout = folder, count, timeout

    def on_train_start(self, trainer, pl_module) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{os.getpid()}-{time.monotonic_ns()}").touch()
        deadline = time.monotonic() + self.timeout
        while len(list(self.folder.iterdir())) < self.count and time.monotonic() < deadline:
            time.sleep(0.05)


@monitors.register("meet_peers")
def meet_peers(folder: str, count: int, timeout: float = 60.0):
    """Waits at the start of training until ``count`` runs arrived in ``folder`` (or ``timeout`` seconds)."""
    return MeetPeers(Path(folder), count, timeout)
