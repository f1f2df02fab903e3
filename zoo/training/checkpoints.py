"""Crash safety: atomic checkpoint files, exact resume state, and a clean stop on SIGINT/SIGTERM.

* :class:`AtomicCheckpointIO` writes each checkpoint to a temporary file in the same folder, flushes it
  to disk and renames it over the old one, so a kill at any moment leaves either the old file or the
  new one, never half of one. (Lightning's own save writes the final path in place.)
* :class:`RunCheckpoint` is Lightning's ModelCheckpoint (``best.ckpt`` by validation accuracy and
  ``last.ckpt``) at the recipe's interval, except that once the divergence guard has stopped a run it
  keeps the last good ``last.ckpt`` instead of overwriting it with diverged weights.
* :class:`ResumeState` stores what Lightning's checkpoint leaves out and an exact resume needs: the
  RNG states of torch (CPU and CUDA), NumPy and Python, and the augmentation generator's state; and
  the seconds the run has taken up to the checkpoint, so a resumed run's time counts every sitting.
* :class:`RunCSVLogger` keeps the metrics a stopped run logged, and a resumed run appends to them.
* :class:`StopOnSignal` turns SIGINT/SIGTERM into: finish the current step, write ``last.ckpt``,
  raise :class:`Interrupted` (which the CLI reports with the command that resumes the run).
"""

from __future__ import annotations

import csv
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.plugins.io import TorchCheckpointIO

from zoo.core.io import atomic_torch_save

LAST = "last.ckpt"


class Interrupted(Exception):
    """Training was stopped by a signal after writing a resumable checkpoint."""

    def __init__(self, signum: int, checkpoint: Path, epoch: int, step: int) -> None:
        self.signum, self.checkpoint, self.epoch, self.step = signum, checkpoint, epoch, step
        super().__init__(f"stopped by {signal.Signals(signum).name} at epoch {epoch}, step {step}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process ended by that signal


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO for local files, with each save atomic (see :func:`atomic_torch_save`)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_torch_save(checkpoint, path)


class RunCheckpoint(ModelCheckpoint):
    """``best.ckpt`` (highest val/acc) and ``last.ckpt`` every ``every_n_epochs`` epochs, in ``folder``."""

    def __init__(self, folder: Path, every_n_epochs: int = 1, guard: Any | None = None) -> None:
        super().__init__(
            dirpath=folder,
            filename="best",
            monitor="val/acc",
            mode="max",
            save_last=True,
            every_n_epochs=every_n_epochs,
            auto_insert_metric_name=False,
            enable_version_counter=False,  # one best.ckpt and one last.ckpt, overwritten in place
        )
        self.guard = guard

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        flush_loggers(trainer)  # the metrics up to a checkpoint survive whatever stops the run after it
        super()._save_checkpoint(trainer, filepath)

    def _diverged(self) -> bool:
        return self.guard is not None and self.guard.stopped

    # Once the guard has fired, the weights are the diverged ones: keep the files written before.
    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        if not self._diverged():
            super()._save_last_checkpoint(trainer, monitor_candidates)

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        if not self._diverged():
            super()._save_topk_checkpoint(trainer, monitor_candidates)


class _AppendingWriter(ExperimentWriter):
    # Lightning's writer deletes an existing metrics.csv; a resumed run keeps it (trimmed to its
    # checkpoint, see trim_metrics_csv) and goes on appending under the same header.
    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])


class RunCSVLogger(CSVLogger):
    """Lightning's CSVLogger writing ``logs/metrics.csv`` in the run folder, continued by a resumed run."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(run_dir, name="logs", version="")

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def flush_loggers(trainer: L.Trainer) -> None:
    for logger in trainer.loggers:
        if trainer.is_global_zero:
            logger.save()


def trim_metrics_csv(path: Path, step: int) -> int:
    """Drop the rows of a Lightning metrics.csv logged at ``step`` or later; a resumed run logs them again.

    Returns how many rows were dropped. The file is rewritten atomically.
    """
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        rows = list(reader)
    kept = [r for r in rows if not (r.get("step") or "").isdigit() or int(r["step"]) < step]
    if len(kept) == len(rows):
        return 0
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    os.replace(tmp, path)
    return len(rows) - len(kept)


def rng_states() -> dict[str, Any]:
    """Every global generator's state as tensors and plain containers (loadable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ResumeState(L.Callback):
    """Saves the generators' states in each checkpoint; a resumed run restores them as training starts.

    Restoring waits for ``on_train_start``: the module's ``on_fit_start`` reseeds the augmentation
    generator after Lightning has loaded the checkpoint, and nothing after this hook draws numbers
    before the first step. In a DDP job each rank saves the same file slot, so only rank 0's states
    are kept; other ranks restart their augmentation generator from a seed derived from the step,
    which keeps them distinct but not identical to an uninterrupted run.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None
        self._started = time.perf_counter()
        self._seconds_before = 0.0  # a resumed run: the time its earlier sittings took to this checkpoint

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        seconds = self._seconds_before + time.perf_counter() - self._started
        state: dict[str, Any] = {"rng": rng_states(), "seconds": seconds}
        gen = getattr(getattr(pl_module, "augment", None), "_generator", None)
        if gen is not None:
            state["augment"] = gen.get_state()
        checkpoint["zoo_resume"] = state

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self._pending = checkpoint.get("zoo_resume")
        self._seconds_before = float((self._pending or {}).get("seconds", 0.0))
        # Lightning restores a resumable loader's position when its fit loop sets up the data, but the
        # schedule's length (estimated_stepping_batches, asked for in configure_optimizers) makes it set
        # up the data before the loops are restored, so that restore never happens. The data module
        # takes the position now, while the loader does not exist yet.
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        loaders = fit_loop.get("state_dict", {}).get("combined_loader")
        datamodule = trainer.datamodule
        if loaders and datamodule is not None and hasattr(datamodule, "resume_train_state"):
            datamodule.resume_train_state = loaders[0]

    def on_train_start(self, trainer, pl_module) -> None:
        state, self._pending = self._pending, None
        if state is None:
            return
        augment = getattr(pl_module, "augment", None)
        if trainer.world_size == 1:
            set_rng_states(state["rng"])
            if augment and "augment" in state:
                augment.generator(pl_module.device).set_state(state["augment"])
        elif augment:
            augment.seed = augment.seed + 7919 * trainer.global_step
            augment._generator = None


class StopOnSignal(L.Callback):
    """SIGINT or SIGTERM during ``fit``: finish the step, write ``last.ckpt``, raise :class:`Interrupted`.

    A second SIGINT while the first is pending interrupts at once (no checkpoint), as users expect
    of a repeated Ctrl-C. The handlers are in place only while training runs and the previous ones
    come back afterwards. Every rank of a DDP job must receive the signal (torchrun and SLURM
    forward it to all of them); the checkpoint write is collective.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def on_train_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach only the main thread; a run inside a worker thread keeps the defaults
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    def _stop_if_asked(self, trainer) -> None:
        if self.received is None:
            return
        path = self.folder / LAST
        flush_loggers(trainer)
        trainer.save_checkpoint(path, weights_only=False)
        raise Interrupted(self.received, path, trainer.current_epoch, trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._stop_if_asked(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # a signal during the epoch-end validation: by now ModelCheckpoint has saved this epoch's files
        self._stop_if_asked(trainer)
