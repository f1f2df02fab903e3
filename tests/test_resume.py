"""Crash safety: a run stopped at any step and resumed ends exactly where the uninterrupted run ends."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Checkpoint
from run_stops import FAULTS, CrashAt, one_torch_thread, train_with_faults
from run_stops import with_callback as _with_callback

from zoo.cli.main import main
from zoo.core import discovery
from zoo.core.io import atomic_torch_save
from zoo.training.checkpoints import Interrupted
from zoo.training.run import train

ROOT = Path(__file__).resolve().parents[1]
# 1257 training images in batches of 128: 10 steps an epoch, 30 in all
SMALL = ["trainer.max_epochs=3", "data.batch_size=128", "model.width=64", "logger.wandb.mode=disabled",
         "performance.steps_per_execution=1"]  # kill points at any optimizer step (grouped: test_step_groups.py)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory, _one_thread):
    return train(None, SMALL, run_dir=tmp_path_factory.mktemp("base") / "run", progress=False)


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_run):
    return uninterrupted_run.metrics


@pytest.mark.parametrize("step", [14, 20, 27])  # mid-epoch 2, its last step, mid-epoch 3
def test_crash_then_resume_matches_uninterrupted_run(step, tmp_path, monkeypatch, uninterrupted):
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _with_callback(patch, CrashAt(step))
        with pytest.raises(SystemExit):
            train(None, SMALL, run_dir=run, progress=False)
    assert not (run / "metrics.json").exists()
    # the checkpoint it goes on from is the last one written at an epoch end before the crash
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == (step - 1) // 10 * 10
    resumed = train(resume=run, progress=False)
    assert resumed.metrics == uninterrupted
    assert json.loads((run / "metrics.json").read_text())["test_acc"] == uninterrupted["test_acc"]


@pytest.mark.parametrize("step", [3, 17])
def test_sigterm_writes_a_checkpoint_mid_epoch_and_resume_is_exact(step, tmp_path, uninterrupted):
    run = tmp_path / "run"
    monitor = f"{{name: signal_at_step, step: {step}, marker: {tmp_path / 'fired'}, signal_name: SIGTERM}}"
    done = train_with_faults(tmp_path, f"monitors:\n  - {monitor}\n", SMALL, run)
    assert done.returncode == 128 + 15, done.stderr
    assert "stopped by SIGTERM at epoch" in done.stderr
    assert f"continue with: zoo train --resume {run} --plugin {FAULTS}" in done.stderr
    assert "Traceback" not in done.stderr
    # the step it stopped at is in the checkpoint: the current step finished, nothing was lost
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step
    discovery.load_local([str(FAULTS)], kind="--plugin")  # what --plugin does: the run's recipe names it
    resumed = train(resume=run, progress=False)
    assert resumed.metrics == uninterrupted


def test_sigkill_then_cli_resume(tmp_path, uninterrupted):
    run = tmp_path / "run"
    killed = train_with_faults(
        tmp_path, f"monitors:\n  - {{name: signal_at_step, step: 15, marker: {tmp_path / 'fired'}}}\n", SMALL, run
    )
    assert killed.returncode == -9
    resumed = subprocess.run(
        [sys.executable, "-m", "zoo", "train", "--resume", str(run), "--plugin", str(FAULTS), "--json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["metrics"] == uninterrupted


def test_resume_mistakes_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = [
        (["train", "--resume", str(tmp_path)], "not a run folder (no recipe.yaml in it)"),
        (["train", "mlp-digits", "--resume", str(tmp_path)], "--resume takes the run folder alone"),
    ]
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "recipe.yaml").write_text((ROOT / "recipes" / "mlp-digits.yaml").read_text())
    cases.append((["train", "--resume", str(stopped)], "no checkpoints/last.ckpt (the run stopped before its first"))
    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "recipe.yaml").write_text((ROOT / "recipes" / "mlp-digits.yaml").read_text())
    (finished / "metrics.json").write_text("{}")
    cases.append((["train", "--resume", str(finished)], "that run finished"))
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / ".zoo-run").write_text("{}")  # a run folder, by its marker
    (existing / "x").write_text("")
    cases.append((["train", "--run-dir", str(existing)], f"continue it with --resume {existing}, or replace it"))
    cases.append((["train", "--run-dir", str(existing / "x")], "a file is in the way"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "runs").exists()


def test_atomic_save_keeps_the_old_file_when_a_write_dies(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, path)

    def dies_halfway(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the write is cut off before it completes

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind


def test_interrupted_reports_the_shell_exit_code():
    stop = Interrupted(15, Path("r/checkpoints/last.ckpt"), epoch=2, step=31)
    assert stop.exit_code == 143 and "SIGTERM at epoch 2, step 31" in str(stop)


def test_resume_refuses_a_checkpoint_that_would_run_code(tmp_path, capsys):
    import pickle
    from collections import OrderedDict

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "recipe.yaml").write_text((ROOT / "recipes" / "mlp-digits.yaml").read_text())
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    # an OrderedDict first, as in a real checkpoint: allowed, so not what the refusal names
    (run / "checkpoints" / "last.ckpt").write_bytes(pickle.dumps({"a": OrderedDict(), "global_step": Payload()}))
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "refused to load" in err and "would run code" in err and "Traceback" not in err
    assert f"imports {os.system.__module__}.system" in err and "OrderedDict" not in err
    assert not marker.exists()


def test_resumed_run_keeps_the_metrics_logged_before_the_crash(tmp_path, monkeypatch, uninterrupted):
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _with_callback(patch, CrashAt(25))
        with pytest.raises(SystemExit):
            train(None, SMALL, run_dir=run, progress=False)
    train(resume=run, progress=False)
    with open(run / "logs" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    val_epochs = [int(r["epoch"]) for r in rows if r.get("val/acc")]
    # each epoch's validation once (0-1 kept from before the crash, none twice), then the final evaluation's
    assert val_epochs == [0, 1, 2, 3]


class BlowUpAt(L.Callback):
    """Sets an absurd learning rate from the start of epoch ``epoch``: the loss then runs away."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = 1e6


def test_divergence_guard_is_on_by_default_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _with_callback(monkeypatch, BlowUpAt(1))
    run = tmp_path / "run"
    argv = ["train", "mlp-digits", *SMALL, "optimizer={name: sgd, lr: 0.1}", "schedule=constant",
            "--run-dir", str(run), "--json"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "zoo: training diverged at step" in captured.err and "Traceback" not in captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["diverged"].startswith("step 1")  # a step of the second epoch (steps 10-19)
    for name in ("last.ckpt", "best.ckpt"):
        ckpt = torch.load(run / "checkpoints" / name, weights_only=True)
        assert ckpt["global_step"] == 10  # written at the end of the first epoch, never overwritten after
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    # evaluated with the good weights from before the divergence (diverged ones predict one class: 10%)
    assert summary["best_checkpoint"] == str(run / "checkpoints" / "best.ckpt")
    assert summary["test_acc"] > 0.2


def test_resumed_run_continues_the_same_wandb_run(tmp_path, monkeypatch, wandb_whole_and_once):
    """A crash mid-epoch: the W&B run holds the steps after the checkpoint, which the resume replays."""
    from zoo.monitoring.wandb_logging import read_run_id
    from zoo.monitoring.wandb_offline import offline_run_dirs, read_offline_run, read_run_file, run_file

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    overrides = [*(o for o in SMALL if not o.startswith("logger.wandb")), "logger.wandb.mode=offline",
                 "trainer.log_every_n_steps=1"]
    with monkeypatch.context() as patch:
        _with_callback(patch, CrashAt(14))
        with pytest.raises(SystemExit):
            train(None, overrides, run_dir=run, progress=False)
    first_id = read_run_id(run)
    assert first_id
    first = read_run_file(run_file(offline_run_dirs(run)[0]))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    before = {row["trainer/global_step"] for row in first.history if "train/loss_step" in row}
    assert ckpt == 10 and max(before) > ckpt  # W&B holds steps past the checkpoint the run goes on from
    earlier = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["zoo_resume"]["ranks"][0]["seconds"]
    start = time.perf_counter()
    resumed = train(resume=run, progress=False)
    # the run's time: the first sitting's, to its checkpoint, and the whole second sitting
    assert 0 < earlier and resumed.seconds == pytest.approx(earlier + time.perf_counter() - start, abs=0.1)
    assert read_run_id(run) == first_id
    folders = offline_run_dirs(run)
    assert len(folders) == 2 and all(f.name.endswith(first_id) for f in folders)  # one W&B run, two sittings
    second = read_offline_run(run, index=-1)
    assert second.run_id == first_id
    # the steps from 10 to the crash ran twice; W&B holds them once, and the whole history
    after = {row["trainer/global_step"] for row in second.history if "train/loss_step" in row}
    assert not before & after and sorted(before | after) == list(range(30))
    wandb_whole_and_once(run)
    assert second.summary["test/acc"] == pytest.approx(resumed.test_acc)
    assert second.summary["val/acc"] == pytest.approx(resumed.val_acc)
    steps = [row["_step"] for run_ in (first, second) for row in run_.history]
    assert steps == list(range(len(steps)))  # wandb's own count goes on where the first sitting's ended


def test_kill_9_then_resume_leaves_the_whole_wandb_history(tmp_path, would_sync, wandb_whole_and_once):
    """kill -9 before wandb wrote its first block of history: the resumed run logs what W&B lost."""
    from zoo.monitoring.wandb_offline import offline_run_dirs, read_run_file, run_file

    run = tmp_path / "run"
    recipe = tmp_path / "kill.yaml"
    recipe.write_text(
        f"base: {ROOT / 'recipes' / 'mlp-digits.yaml'}\nplugins: [{FAULTS}]\n"
        f"monitors:\n  - {{name: signal_at_step, step: 15, marker: {tmp_path / 'fired'}}}\n"
    )
    # W&B offline, as for a user; and no wandb service of this test process shared with the runs
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_MODE", "WANDB_SERVICE")}
    small = [*(o for o in SMALL if not o.startswith("logger.wandb")), "logger.wandb.mode=offline"]
    cmd = [sys.executable, "-m", "zoo", "train"]
    killed = subprocess.run([*cmd, str(recipe), *small, "--run-dir", str(run)], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path, env=env)
    assert killed.returncode == -9
    first = read_run_file(run_file(offline_run_dirs(run)[0]))
    assert first.history == []  # the kill lost every row
    resumed = subprocess.run([*cmd, "--resume", str(run), "--plugin", str(FAULTS)], capture_output=True, text=True,
                             timeout=300,
                             cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"1 W&B run in 2 sittings logged offline; upload it with: wandb sync {run / 'wandb'}" in resumed.stderr
    second = read_run_file(run_file(offline_run_dirs(run)[1]))
    # the first epoch's rows, logged again from metrics.csv: the resume itself starts at step 10
    assert min(row["trainer/global_step"] for row in second.history) < 10
    wandb_whole_and_once(run)
    # the one printed command uploads both sittings
    assert would_sync(run / "wandb") == sorted(run_file(f).resolve() for f in offline_run_dirs(run))


def _crash(monkeypatch, step: int, overrides: list[str], run: Path) -> None:
    """Train until optimizer step ``step`` and die there, as a killed process does."""
    _crash_with(monkeypatch, CrashAt(step), overrides, run)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "logs" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


class SignalAt(L.Callback):
    """Sends this process ``signals`` after optimizer step ``step``, or as the final test begins (``step`` None)."""

    def __init__(self, signals: list[int], step: int | None = None) -> None:
        self.signals, self.step = signals, step

    def _send(self) -> None:
        for signum in self.signals:
            os.kill(os.getpid(), signum)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self._send()

    def on_test_start(self, trainer, pl_module) -> None:
        if self.step is None:
            self._send()


def test_a_resumed_epoch_logs_the_training_figures_of_the_whole_epoch(tmp_path, monkeypatch, uninterrupted_run):
    run = tmp_path / "run"
    with monkeypatch.context() as patch:  # SIGTERM 4 steps into the second epoch: a mid-epoch checkpoint
        _with_callback(patch, SignalAt([signal.SIGTERM], step=14))
        with pytest.raises(Interrupted):
            train(None, SMALL, run_dir=run, progress=False)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 14
    train(resume=run, progress=False)
    keys = ("epoch", "train/loss_epoch", "train/acc")

    def epoch_figures(folder):
        return [{k: r[k] for k in keys} for r in _rows(folder) if r.get("train/acc")]

    expected = epoch_figures(Path(uninterrupted_run.run_dir))
    assert len(expected) == 3 and epoch_figures(run) == expected  # the second epoch's too, all 10 steps


def test_resume_refuses_an_edited_recipe_and_says_what_changed(tmp_path, monkeypatch, capsys, uninterrupted):
    import yaml

    run = tmp_path / "run"
    _crash(monkeypatch, 14, SMALL, run)
    original = (run / "recipe.yaml").read_text()
    header, body = original.split("\n", 1)
    for section, key, new in [("optimizer", "lr", 0.01), ("model", "width", 128)]:
        edited = yaml.safe_load(body)
        change = f"{section}.{key}: {edited[section][key]} -> {new}"
        edited[section][key] = new
        (run / "recipe.yaml").write_text(header + "\n" + yaml.safe_dump(edited, sort_keys=False))
        assert main(["train", "--resume", str(run)]) == 2
        err = capsys.readouterr().err
        assert "recipe.yaml is not the recipe its checkpoint was trained with" in err and change in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    (run / "recipe.yaml").write_text(original)
    assert train(resume=run, progress=False).metrics == uninterrupted


def test_last_checkpoint_follows_every_n_epochs_when_validation_stops_improving(tmp_path):
    run = tmp_path / "run"
    # a learning rate too small to change any prediction (and no batch norm, whose running statistics
    # would): validation accuracy stays where the first checkpoint found it
    train(None, [*SMALL, "trainer.max_epochs=4", "checkpoint.every_n_epochs=2", "optimizer.lr=1e-12",
                 "model.norm=none", "model.dropout=0"], run_dir=run, progress=False)
    val = [float(r["val/acc"]) for r in _rows(run) if r.get("val/acc")]
    assert len(set(val)) == 1  # never improved: Lightning alone would write last.ckpt at step 20 only
    assert torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["global_step"] == 20
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 40


FIVE = [*SMALL, "trainer.max_epochs=5"]  # validation peaks after the fourth epoch, then drops


@pytest.mark.parametrize("how", ["moved", "copied"])
def test_a_moved_or_copied_run_resumes_to_the_same_end(how, tmp_path, monkeypatch):
    reference = train(None, FIVE, run_dir=tmp_path / "reference", progress=False)
    best_step = torch.load(reference.best_checkpoint, weights_only=True)["global_step"]
    assert best_step == 40  # the case that matters: the last epoch is not the best one
    first = tmp_path / "first"
    _crash(monkeypatch, 44, FIVE, first)
    elsewhere = tmp_path / "elsewhere" / "run"
    elsewhere.parent.mkdir()
    (shutil.move if how == "moved" else shutil.copytree)(first, elsewhere)
    resumed = train(resume=elsewhere, progress=False)
    assert resumed.metrics == reference.metrics
    assert resumed.best_checkpoint == str(elsewhere / "checkpoints" / "best.ckpt")
    assert torch.load(resumed.best_checkpoint, weights_only=True)["global_step"] == best_step


class SignalInValidation(L.Callback):
    """SIGTERM while validation runs after training epoch ``epoch``."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking and trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("epoch", [1, 2])  # the second epoch's validation; the last's
def test_a_signal_during_validation_stops_after_the_epochs_checkpoint(epoch, tmp_path, monkeypatch, uninterrupted):
    run = tmp_path / "run"
    stopped_at = 10 * (epoch + 1)
    with monkeypatch.context() as patch:
        _with_callback(patch, SignalInValidation(epoch))
        with pytest.raises(Interrupted, match=f"stopped by SIGTERM at epoch {epoch}, step {stopped_at}"):
            train(None, SMALL, run_dir=run, progress=False)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == stopped_at
    assert train(resume=run, progress=False).metrics == uninterrupted


def test_a_signal_during_the_final_evaluation_is_reported_and_resumes(tmp_path, monkeypatch, capsys, uninterrupted):
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _with_callback(patch, SignalAt([signal.SIGTERM]))
        assert main(["train", "mlp-digits", *SMALL, "--run-dir", str(run)]) == 143
    err = capsys.readouterr().err
    assert "zoo: stopped by SIGTERM during the final evaluation, after training" in err, err
    assert f"continue with: zoo train --resume {run}" in err and "Traceback" not in err
    assert not (run / "metrics.json").exists()
    assert train(resume=run, progress=False).metrics == uninterrupted  # nothing left to train: evaluated again


def test_a_second_ctrl_c_stops_at_once_with_a_message(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _with_callback(patch, SignalAt([signal.SIGINT, signal.SIGINT], step=13))
        assert main(["train", "mlp-digits", *SMALL, "--run-dir", str(run)]) == 130
    err = capsys.readouterr().err
    assert "zoo: stopped by SIGINT again before the checkpoint was written" in err, err
    assert f"continue with: zoo train --resume {run}" in err and "Traceback" not in err
    # no checkpoint at step 13: the run goes on from the one written when the first epoch ended
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 10
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers went back


def test_sighup_stops_as_sigterm_does_with_the_shells_exit_code(tmp_path, monkeypatch, capsys, uninterrupted):
    # the terminal that started the run closed: a checkpoint, exit 128 + 1, and the run goes on exactly
    run = tmp_path / "run"
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as a shell starts a command (nohup aside)
    try:
        _sighup_stops(run, monkeypatch, capsys, uninterrupted)
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_signal_the_process_started_ignoring_stays_ignored():
    # nohup zoo train ...: the run is meant to outlive its terminal, so SIGHUP must not stop it
    from zoo.training.checkpoints import SignalStop

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        stop = SignalStop().install()
        try:
            assert signal.SIGHUP not in stop.signals and signal.SIGTERM in stop.signals
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)  # ignored: nothing raised, nothing recorded
            assert stop.received is None
        finally:
            stop.restore()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def _sighup_stops(run, monkeypatch, capsys, uninterrupted):
    with monkeypatch.context() as patch:
        _with_callback(patch, SignalAt([signal.SIGHUP], step=17))
        assert main(["train", "mlp-digits", *SMALL, "--run-dir", str(run)]) == 129
    err = capsys.readouterr().err
    assert "zoo: stopped by SIGHUP at epoch 1, step 17" in err and f"continue with: zoo train --resume {run}" in err
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 17
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL  # the handler went back
    assert train(resume=run, progress=False).metrics == uninterrupted


def _every_row(k: int) -> list[str]:
    """SMALL with a metrics.csv row at every step (every group of ``k`` steps)."""
    return [*SMALL[:-1], f"performance.steps_per_execution={k}", "trainer.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def logged_reference(tmp_path_factory, _one_thread):
    """The uninterrupted run of ``_every_row(k)``: its metrics, metrics.csv rows and best checkpoint's step."""
    runs: dict[int, tuple] = {}

    def reference(k: int) -> tuple:
        if k not in runs:
            run = train(None, _every_row(k), run_dir=tmp_path_factory.mktemp(f"every-row-{k}") / "run", progress=False)
            best = torch.load(run.best_checkpoint, weights_only=True)["global_step"]
            runs[k] = (run.metrics, _rows(Path(run.run_dir)), best)
        return runs[k]

    return reference


class SignalAtMoment(L.Callback):
    """SIGTERM to this process the ``nth`` time the run reaches ``moment``: a training step's end, a
    validation batch during training, a checkpoint being written, metrics.csv being written, the final test."""

    def __init__(self, moment: str, nth: int) -> None:
        self.moment, self.nth, self.seen = moment, nth, 0

    def reached(self, moment: str) -> None:
        if moment == self.moment:
            self.seen += 1
            if self.seen == self.nth:
                os.kill(os.getpid(), signal.SIGTERM)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.reached("step")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self.reached("validation")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.reached("checkpoint")

    def on_test_start(self, trainer, pl_module) -> None:
        self.reached("test")


# 10 steps an epoch: one group of them with k=20. A stop at a step that validation and the epoch's end follow
# (every step, grouped) used to resume without them: that epoch's validation, figures and rows were lost.
@pytest.mark.parametrize("k, moment, nth", [
    (1, "step", 20), (1, "checkpoint", 1), (1, "metrics", 15), (1, "test", 1),
    (20, "step", 2), (20, "validation", 1), (20, "metrics", 3),
])
def test_a_signal_at_any_moment_resumes_to_the_same_result_and_metrics(k, moment, nth, tmp_path, monkeypatch,
                                                                        logged_reference):
    from zoo.training.checkpoints import RunCSVLogger

    metrics, rows, best_step = logged_reference(k)
    at = SignalAtMoment(moment, nth)
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _with_callback(patch, at)
        save = RunCSVLogger.save

        def save_with_signal(logger):
            at.reached("metrics")
            save(logger)

        patch.setattr(RunCSVLogger, "save", save_with_signal)
        with pytest.raises(Interrupted):
            train(None, _every_row(k), run_dir=run, progress=False)
    resumed = train(resume=run, progress=False)
    assert resumed.metrics == metrics
    assert torch.load(resumed.best_checkpoint, weights_only=True)["global_step"] == best_step
    assert _rows(run) == rows  # every row once, in order, with the same values


def test_metrics_csv_stays_whole_when_a_rewrite_is_cut_off(tmp_path, monkeypatch):
    from zoo.training.checkpoints import RunCSVLogger

    logger = RunCSVLogger(tmp_path)
    logger.log_metrics({"train/loss_step": 1.5}, step=0)
    logger.save()
    before = (tmp_path / "logs" / "metrics.csv").read_text()
    logger.log_metrics({"val/acc": 0.5}, step=1)  # a new column: Lightning rewrote the whole file in place

    def cut_off(self, rows):
        raise KeyboardInterrupt  # the process stops in the middle of writing the rows

    monkeypatch.setattr(csv.DictWriter, "writerows", cut_off)
    with pytest.raises(KeyboardInterrupt):
        logger.save()
    monkeypatch.undo()
    assert (tmp_path / "logs" / "metrics.csv").read_text() == before
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["metrics.csv"]  # no temporary file left
    logger.save()
    assert [r["val/acc"] for r in _rows(tmp_path)] == ["", "0.5"]


def _crash_with(monkeypatch, callback, overrides: list[str], run: Path) -> None:
    """Train with ``callback`` until it dies the way a killed process does."""
    with monkeypatch.context() as patch:
        _with_callback(patch, callback)
        with pytest.raises(SystemExit):
            train(None, overrides, run_dir=run, progress=False)


class DieAfterEpochCheckpoint(Checkpoint):
    """Dies as a killed process does right after epoch ``epoch``'s checkpoint, before Lightning writes that
    epoch's training figures (a Checkpoint: Lightning calls it after RunCheckpoint's epoch-end save)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise SystemExit("simulated kill")


def test_a_kill_right_after_an_epochs_checkpoint_loses_none_of_its_rows(tmp_path, monkeypatch, uninterrupted_run):
    run = tmp_path / "run"
    _crash_with(monkeypatch, DieAfterEpochCheckpoint(1), SMALL, run)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 20
    assert not any(r["epoch"] == "1" and r.get("train/acc") for r in _rows(run))  # never written
    train(resume=run, progress=False)
    assert _rows(run) == _rows(Path(uninterrupted_run.run_dir))  # the second epoch's figures included
