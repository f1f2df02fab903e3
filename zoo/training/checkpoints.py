"""Crash safety: atomic checkpoint files, exact resume state, and a clean stop on SIGINT/SIGTERM.

* :class:`AtomicCheckpointIO` writes each checkpoint to a temporary file in the same folder, flushes it
  to disk and renames it over the old one, so a kill at any moment leaves either the old file or the
  new one, never half of one. (Lightning's own save writes the final path in place.)
* :class:`RunCheckpoint` is Lightning's ModelCheckpoint (``best.ckpt`` by validation accuracy and
  ``last.ckpt``) at the recipe's interval, except that ``last.ckpt`` is written at every interval (Lightning
  writes it only along with a new best), that a folder moved or copied elsewhere keeps its best score, and
  that once the divergence guard has stopped a run it keeps the last good files instead of overwriting
  them with diverged weights.
* :class:`ResumeState` stores what Lightning's checkpoint leaves out and an exact resume needs, for every
  rank of a DDP job: the RNG states of torch (CPU and CUDA), NumPy and Python, the augmentation
  generator's state, the interrupted epoch's training loss and accuracy so far, and the seconds the run
  has taken up to the checkpoint, so a resumed run's time counts every sitting.
* :class:`RunCSVLogger` keeps the metrics a stopped run logged, and a resumed run appends to them. The
  file is only ever appended to in one write or replaced whole (a new column rewrites it), so a kill
  leaves it whole; each checkpoint records how many of its rows came before it.
* :class:`SignalStop` and :class:`StopOnSignal` turn SIGINT/SIGTERM/SIGHUP into: during training, finish
  the current step (at a step that validation or an epoch's end follows: that too, and the epoch's
  checkpoint), write ``last.ckpt`` and raise :class:`Interrupted` (every rank of a DDP job at the same
  step, whichever rank got the signal); at any other moment, or on a second signal, raise it at once.
  The CLI reports it with the command that resumes the run. In a SLURM batch job the requeue signal stops a
  run the same way, and the CLI then requeues the job (zoo.training.slurm).
"""

from __future__ import annotations

import csv
import io
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.plugins.io import TorchCheckpointIO

from zoo.core.io import append_text, atomic_torch_save, atomic_write_text

LAST = "last.ckpt"


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(Exception):
    """A run stopped by a signal: after writing ``checkpoint`` (during training), or at once (``checkpoint`` None).

    Not a KeyboardInterrupt: Lightning turns that into ``sys.exit(1)``, whatever the signal was.
    ``run_dir`` and ``resumable`` are filled in by the code that owns the run folder, for the report.
    """

    def __init__(
        self, signum: int, checkpoint: Path | None = None, epoch: int | None = None, step: int | None = None,
        when: str = "",
    ) -> None:
        self.signum, self.checkpoint, self.epoch, self.step = signum, checkpoint, epoch, step
        self.run_dir: Path | None = None
        self.resumable = checkpoint is not None
        name = signal.Signals(signum).name
        where = f"at epoch {epoch}, step {step}" if checkpoint is not None else when
        super().__init__(f"stopped by {name} {where}".strip())

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process ended by that signal

    @property
    def requeue(self) -> bool:
        """Stopped by a SLURM job's requeue signal: the only signal zoo stops on besides STOP_SIGNALS, and
        handled only in a SLURM batch job (zoo.training.slurm)."""
        return self.signum not in STOP_SIGNALS


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
        self.last_model_path_step: int | None = None  # the global step last.ckpt was last written at

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        flush_loggers(trainer)  # the metrics up to a checkpoint survive whatever stops the run after it
        super()._save_checkpoint(trainer, filepath)

    # Lightning writes last.ckpt only in an epoch that also wrote best.ckpt: a run whose validation stops
    # improving would resume from the epoch of its best score. Here last.ckpt follows every_n_epochs.
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_when_due(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_when_due(trainer)

    def _save_last_when_due(self, trainer: L.Trainer) -> None:
        from lightning.pytorch.trainer.states import TrainerFn

        due = (trainer.current_epoch + 1) % self._every_n_epochs == 0
        if (
            not due
            or trainer.state.fn != TrainerFn.FITTING
            or trainer.sanity_checking
            or bool(trainer.fast_dev_run)
            or self.last_model_path_step == trainer.global_step
        ):
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "last_model_path_step": self.last_model_path_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning forgets the best score when the folder's path changed (the run was moved or copied):
        # the next validation would then count as a new best and overwrite best.ckpt. The saved paths
        # are the old folder's; they move with it.
        old = state_dict.get("dirpath")
        if isinstance(old, str) and self.dirpath and old != self.dirpath:
            state_dict = _moved_paths(state_dict, old, self.dirpath)
        super().load_state_dict(state_dict)
        self.last_model_path_step = state_dict.get("last_model_path_step")

    def _diverged(self) -> bool:
        return self.guard is not None and self.guard.stopped

    # Once the guard has fired, the weights are the diverged ones: keep the files written before.
    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        if not self._diverged():
            self.last_model_path_step = trainer.global_step  # set first: it is part of the checkpoint's state
            super()._save_last_checkpoint(trainer, monitor_candidates)

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        if not self._diverged():
            super()._save_topk_checkpoint(trainer, monitor_candidates)


def _moved_paths(state: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """A ModelCheckpoint state whose file paths under folder ``old`` now point under ``new``."""

    def move(path: Any) -> Any:
        if isinstance(path, str) and (path == old or path.startswith(old + os.sep)):
            return new + path[len(old):]
        return path

    moved = {key: move(value) for key, value in state.items()}
    if isinstance(state.get("best_k_models"), dict):
        moved["best_k_models"] = {move(k): v for k, v in state["best_k_models"].items()}
    moved["dirpath"] = new
    return moved


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, continuing an existing metrics.csv and never leaving half of one.

    Lightning's writer deletes an existing metrics.csv; a resumed run keeps it (trimmed to its checkpoint,
    see trim_metrics_csv) and goes on under the same header. Lightning rewrites the file in place when a
    new column appears (the first validation, the final test), and a kill in the middle left it empty:
    here the rows are appended in one write, or the whole file replaced by a rename.
    """

    rows_on_disk = 0  # data rows in the file: what a checkpoint written now has logged before it
    header_on_disk: list[str] = []

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                reader = csv.DictReader(f)
                self.metrics_keys = list(reader.fieldnames or [])
                self.rows_on_disk = sum(1 for _ in reader)
            self.header_on_disk = list(self.metrics_keys)

    def save(self) -> None:
        if not self.metrics:
            return
        path = Path(self.metrics_file_path)
        self._record_new_keys()
        rewrite = self.metrics_keys != self.header_on_disk or not path.is_file()
        rows: list[dict[str, Any]] = []
        if rewrite and path.is_file():
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.metrics_keys)
        if rewrite:
            writer.writeheader()
            writer.writerows(rows)
        writer.writerows(self.metrics)
        if rewrite:
            atomic_write_text(path, text.getvalue())
        else:
            append_text(path, text.getvalue())
        self.rows_on_disk = len(rows) + len(self.metrics) if rewrite else self.rows_on_disk + len(self.metrics)
        self.header_on_disk = list(self.metrics_keys)
        self.metrics = []

    @property
    def rows_logged(self) -> int:
        """Rows logged so far, written or not yet."""
        return self.rows_on_disk + len(self.metrics)


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


def metrics_rows_logged(trainer: L.Trainer) -> int | None:
    """How many rows the run's metrics.csv holds up to now (on global rank 0; None elsewhere)."""
    logger = next((lg for lg in trainer.loggers if isinstance(lg, RunCSVLogger)), None)
    if logger is None or not trainer.is_global_zero:
        return None
    return logger.experiment.rows_logged


def trim_metrics_csv(path: Path, step: int, rows: int | None = None) -> int:
    """Drop the rows of a Lightning metrics.csv that came after a checkpoint; a resumed run logs them again.

    ``rows``: how many rows the checkpoint says were logged before it (the rest go). Checkpoints that do not
    say: the rows logged at ``step`` or later go (which keeps an epoch's training figures, logged at its
    last step but after its checkpoint). Returns how many rows were dropped; the file is replaced atomically.
    """
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        logged = list(reader)
    if rows is not None:
        kept = logged[:rows]
    else:
        kept = [r for r in logged if not (r.get("step") or "").isdigit() or int(r["step"]) < step]
    if len(kept) == len(logged):
        return 0
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(kept)
    atomic_write_text(path, text.getvalue())
    return len(logged) - len(kept)


def metrics_rows(checkpoint: dict[str, Any]) -> int | None:
    """The rows of metrics.csv logged before a checkpoint was written (None: a checkpoint that does not say)."""
    saved = checkpoint.get("zoo_resume") or {}
    ranks = saved.get("ranks") or [saved]
    rows = ranks[0].get("metrics_rows")
    return rows if isinstance(rows, int) else None


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


def seconds_so_far(checkpoint: dict[str, Any]) -> float:
    """The training seconds a checkpoint's run had taken, over all its sittings (0 for older checkpoints)."""
    saved = checkpoint.get("zoo_resume") or {}
    ranks = saved.get("ranks") or [saved]
    return float(ranks[0].get("seconds", 0.0))


class ResumeState(L.Callback):
    """Saves every rank's generator states (and its part of the epoch's training figures) in each checkpoint;
    a resumed run restores them as training starts.

    Restoring waits for ``on_train_start``: the module's ``on_fit_start`` reseeds the augmentation
    generator after Lightning has loaded the checkpoint, and nothing after this hook draws numbers
    before the first step. In a DDP job each rank's state is gathered into rank 0's file (checkpoints
    are written by all ranks together), so every rank picks up its own. A checkpoint from a job with
    another number of ranks restarts the augmentation generators from a seed derived from the step,
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
        epoch_state = getattr(pl_module, "epoch_state", None)
        if epoch_state is not None:
            state["epoch"] = epoch_state()
        rows = metrics_rows_logged(trainer)
        if rows is not None:
            state["metrics_rows"] = rows
        if trainer.world_size > 1:
            ranks: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(ranks, state)
            checkpoint["zoo_resume"] = {"ranks": ranks}
        else:
            checkpoint["zoo_resume"] = {"ranks": [state]}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self._pending = checkpoint.get("zoo_resume")
        self._seconds_before = seconds_so_far(checkpoint)
        # Lightning restores a resumable loader's position when its fit loop sets up the data, but the
        # schedule's length (estimated_stepping_batches, asked for in configure_optimizers) makes it set
        # up the data before the loops are restored, so that restore never happens. The data module
        # takes the position now, while the loader does not exist yet.
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        loaders = fit_loop.get("state_dict", {}).get("combined_loader")
        datamodule = trainer.datamodule
        if loaders and datamodule is not None and hasattr(datamodule, "resume_train_state"):
            datamodule.resume_train_state = loaders[0]

    def on_fit_end(self, trainer, pl_module) -> None:
        # a checkpoint of the last epoch's end (a run stopped in its final evaluation): no training is left,
        # so training never started; what that epoch's end had still to log is logged now
        saved, self._pending = self._pending, None
        ranks = (saved or {}).get("ranks", [saved])
        if saved is not None and len(ranks) == trainer.world_size and hasattr(pl_module, "log_finished_epoch"):
            pl_module.log_finished_epoch(ranks[trainer.global_rank].get("epoch") or {})

    def on_train_start(self, trainer, pl_module) -> None:
        saved, self._pending = self._pending, None
        if saved is None:
            return
        ranks = saved.get("ranks", [saved])  # checkpoints before per-rank states held rank 0's alone
        augment = getattr(pl_module, "augment", None)
        if len(ranks) == trainer.world_size:
            state = ranks[trainer.global_rank]
            set_rng_states(state["rng"])
            if augment and "augment" in state:
                augment.generator(pl_module.device).set_state(state["augment"])
            if "epoch" in state and hasattr(pl_module, "load_epoch_state"):
                pl_module.load_epoch_state(state["epoch"])
        elif augment:
            augment.seed = augment.seed + 7919 * trainer.global_step
            augment._generator = None


class SignalStop:
    """SIGINT, SIGTERM and SIGHUP for the length of a run, installed by the code that owns the run folder.

    SIGHUP (the terminal that started the run closed) is a stop like SIGTERM, not an end without a checkpoint,
    unless the process started with it ignored (``nohup``): then it stays ignored, as do the others.
    ``requeue_signal``: in a SLURM batch job, the signal that asks for a requeue stops the run the same way.

    While training (``deferring``), the first signal is only noted: :class:`StopOnSignal` stops at the
    end of the step. Any other time (setting up, the final evaluation), and on a second signal (a second
    Ctrl-C), :class:`Interrupted` is raised at once; rank 0 of a Lightning-launched DDP job then passes
    the signal on to the other ranks (``forward``), which would otherwise wait for it forever. Handlers
    exist only in the main thread; the previous ones come back with :meth:`restore`.
    """

    def __init__(self, requeue_signal: int | None = None) -> None:
        # a signal the process was started ignoring stays ignored: SIGHUP under nohup (the run is meant to
        # outlive its terminal), SIGINT in a background job of a non-interactive shell; Python leaves those too
        wanted = STOP_SIGNALS + ((requeue_signal,) if requeue_signal is not None else ())
        self.signals = tuple(sig for sig in wanted if signal.getsignal(sig) is not signal.SIG_IGN)
        self.received: int | None = None
        self.deferring = False
        self.when = "before training started"
        self.forward: Callable[[int], None] | None = None
        self._raised = False
        self._previous: dict[int, Any] = {}

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def install(self) -> SignalStop:
        if threading.current_thread() is threading.main_thread() and not self.installed:
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def take_back(self) -> None:
        """Handle the signals again after Lightning installed its own (it does at the start of every
        fit, validate and test: its SIGTERM handler would stop without a checkpoint, and under DDP it
        runs a collective inside the handler)."""
        if self.installed and threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.deferring and self.received is None:
            self.received = signum  # the step in progress finishes first
            return
        if self._raised:
            return  # already on the way out
        self._raised = True
        if self.forward is not None:
            self.forward(signum)
        when = "again before the checkpoint was written" if self.received is not None else self.when
        raise Interrupted(signum, when=when)


class StopOnSignal(Checkpoint):
    """Ends training at a step boundary after a signal: ``last.ckpt`` is written and :class:`Interrupted` raised.

    With one process the signal is acted on after the step it arrived in, unless validation or the epoch's
    end follows that step: a checkpoint there would resume with the validation (Lightning skips a
    validation due at the step it resumes after) or the epoch's end hooks and figures lost. Then the stop
    waits for that validation, the epoch's end and its checkpoint, and comes right after them; a signal
    during validation stops there too. A Checkpoint, so that Lightning calls it after ``RunCheckpoint``,
    whose epoch-end save comes first. In a DDP job the ranks agree on whether any of them got one every
    ``agree_every`` steps, at every epoch's last step and after each validation (one all-reduce of an
    integer: 0.35 ms with gloo on the idle 2-core CPU, 0.9 ms on a busy one, so not on every step), and all
    stop together at the same point, writing the checkpoint once. A signal to any one rank (the launching
    process, as a scheduler or ``kill`` sends it, or a worker) stops them all.
    """

    def __init__(self, folder: Path, watch: SignalStop | None = None, agree_every: int = 10) -> None:
        self.folder = Path(folder)
        self.watch = watch
        self.agree_every = agree_every
        self._own = watch is None  # installed here when no run owner did (fit_one called directly)
        self._at_epoch_end: int | None = None  # a signal agreed on at a step that an epoch-end checkpoint follows

    @property
    def received(self) -> int | None:
        return self.watch.received if self.watch is not None else None

    @received.setter
    def received(self, signum: int | None) -> None:  # what the signal handler does: noted, acted on after the step
        self.watch.received = signum

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.watch is None:
            self.watch = SignalStop().install()
        launcher = trainer.strategy.launcher
        if trainer.global_rank == 0 and launcher is not None and hasattr(launcher, "kill"):
            self.watch.forward = launcher.kill

    def on_train_start(self, trainer, pl_module) -> None:
        self.watch.take_back()
        self.watch.deferring = True
        self._at_epoch_end = None

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.watch is not None:
            self.watch.take_back()

    def on_test_start(self, trainer, pl_module) -> None:
        if self.watch is not None:
            self.watch.take_back()

    def on_train_end(self, trainer, pl_module) -> None:
        # a signal in the last epoch's validation: training is over, the final evaluation is not begun
        self._stop_if_asked(trainer, every_step=True)
        self.watch.deferring = False
        self.watch.when = "during the final evaluation, after training"

    def on_fit_end(self, trainer, pl_module) -> None:
        if self._own:
            self.watch.restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self.watch is not None:
            self.watch.deferring = False
            if self._own:
                self.watch.restore()

    def _agreed(self, trainer, every_step: bool) -> int | None:
        """The signal to stop for, the same on every rank, or None."""
        mine = self.watch.received or 0
        if trainer.world_size == 1:
            return mine or None
        if not every_step and trainer.global_step % self.agree_every:
            return None
        flag = torch.tensor([mine], dtype=torch.int32, device=trainer.strategy.root_device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item()) or None

    def _stop(self, trainer, signum: int) -> None:
        self.watch.deferring = False  # a further signal while the checkpoint is written stops at once
        self.watch.received = self.watch.received or signum
        path = self.folder / LAST
        checkpoint = trainer.checkpoint_callback
        written = isinstance(checkpoint, RunCheckpoint) and checkpoint.last_model_path_step == trainer.global_step
        if not written or not path.is_file():
            flush_loggers(trainer)
            trainer.save_checkpoint(path, weights_only=False)  # every rank takes part; rank 0 writes the file
        raise Interrupted(signum, path, trainer.current_epoch, trainer.global_step)

    def _stop_if_asked(self, trainer, every_step: bool = False) -> None:
        signum = self._agreed(trainer, every_step)
        if signum is not None:
            self._stop(trainer, signum)

    @staticmethod
    def _validation_or_epoch_end_follows(trainer) -> bool:
        if trainer.is_last_batch:
            return True
        loop, fetcher = trainer.fit_loop.epoch_loop, trainer.fit_loop._data_fetcher
        return fetcher is not None and loop._should_check_val_fx(fetcher)  # val_check_interval inside an epoch

    # Lightning resumes from a checkpoint written after a training step as from the middle of an epoch: right
    # for any step but one that validation or the epoch's end follows. There the stop waits for them.
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        later = self._validation_or_epoch_end_follows(trainer)
        signum = self._agreed(trainer, every_step=later)
        if signum is None:
            return
        if later:
            self._at_epoch_end = signum
            return
        # Lightning logs this step's metrics after the step's hooks: log them before the checkpoint records
        # how many rows of metrics.csv came before it, as the step would have
        connector = trainer._logger_connector
        connector.on_batch_end()
        connector.update_train_step_metrics()
        self._stop(trainer, signum)

    # Lightning calls the Checkpoint callbacks last, in their order: these come after RunCheckpoint's saves.
    # At an epoch's end that is on the training epoch's end, after validation and every other callback.
    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or self.watch is None:
            return
        signum = self._agreed(trainer, every_step=True) or self._at_epoch_end
        if signum is None:
            return
        if trainer.is_last_batch:
            self._at_epoch_end = signum  # the epoch's end comes next: its figures and its checkpoint first
        else:
            self._stop(trainer, signum)  # a validation inside an epoch (trainer.val_check_interval)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        signum, self._at_epoch_end = self._at_epoch_end, None
        if signum is not None:
            self._stop(trainer, signum)
