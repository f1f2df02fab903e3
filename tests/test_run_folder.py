"""Run folders: one writer at a time (the lock), --overwrite replaces only runs and never loses one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import zoo.training.run as run_module
from zoo.cli.main import main
from zoo.core.errors import ZooError
from zoo.training.run_folder import LOCK_FILE, MARKER, RunFolder, RunLock, check_target

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["trainer.max_epochs=3", "data.batch_size=128", "model.width=16", "logger.wandb.mode=disabled"]


@pytest.fixture(autouse=True)
def _no_run_dir_env(monkeypatch):
    monkeypatch.delenv("ZOO_RUN_DIR", raising=False)  # train() sets it for DDP ranks; keep tests apart


def _old_run(path: Path) -> Path:
    """A finished run folder's look: its marker, a recipe, and a file whose survival the tests check."""
    path.mkdir()
    (path / MARKER).write_text("{}")
    (path / "recipe.yaml").write_text("# resolved from old.yaml\n")
    (path / "keep.txt").write_text("the old run")
    return path


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


HOLDER = """
import sys, time
from pathlib import Path
from zoo.training.run_folder import RunLock
RunLock.acquire(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(120)
"""


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s lock, as a run in progress does."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_names_its_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    holder = _hold_lock(folder)
    try:
        with pytest.raises(ZooError, match=rf"is in use by zoo \(pid {holder.pid} on {socket.gethostname()}"):
            RunLock.acquire(folder)
        assert RunLock.holder(folder) is not None
    finally:
        holder.send_signal(signal.SIGKILL)  # dies without a word: its lock file stays behind
        holder.wait()
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == holder.pid
    assert RunLock.holder(folder) is None  # stale: the kernel dropped the dead process's lock
    lock = RunLock.acquire(folder)
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (folder / LOCK_FILE).exists()


def test_without_flock_the_pid_and_host_decide(tmp_path, monkeypatch):
    import fcntl

    def no_flock(fd, op):
        raise OSError(37, "No locks available")  # ENOLCK, as on some network file systems

    monkeypatch.setattr(fcntl, "flock", no_flock)
    folder = tmp_path / "run"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    here = socket.gethostname()
    cases = [
        ({"pid": int(dead.stdout), "host": here}, None),  # gone: stale
        ({"pid": os.getppid(), "host": here}, "is in use by zoo"),  # alive
        ({"pid": 1, "host": "elsewhere"}, f"if it is not running, delete {folder / LOCK_FILE}"),  # cannot tell
    ]
    for info, refusal in cases:
        (folder / LOCK_FILE).write_text(json.dumps(info))
        if refusal is None:
            RunLock.acquire(folder).release()
        else:
            with pytest.raises(ZooError, match=refusal.replace("(", r"\(")):
                RunLock.acquire(folder)


def test_resume_of_a_run_still_going_is_refused(tmp_path, capsys):
    run = _old_run(tmp_path / "run")
    holder = _hold_lock(run)
    try:
        assert main(["train", "--resume", str(run)]) == 2
        err = capsys.readouterr().err
        assert f"is in use by zoo (pid {holder.pid}" in err and "Traceback" not in err
        assert main(["train", "mlp-digits", *SMALL, "--run-dir", str(run), "--overwrite"]) == 2
        assert f"is in use by zoo (pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert (run / "keep.txt").read_text() == "the old run"


def test_two_runs_started_together_in_one_folder(tmp_path):
    """The second is refused (exit 2): it finds the folder locked, or, if the first finished already, taken."""
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.pop("ZOO_RUN_DIR", None)
    cmd = [sys.executable, "-m", "zoo", "train", "mlp-digits", "trainer.max_epochs=20", "model.width=16",
           "--run-dir", str(tmp_path / "same")]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in outs)
    assert codes == [0, 2], outs
    refused = next(err for code, err in outs if code == 2)
    # locked by the other (its details written, or not yet), or already its finished run
    assert any(words in refused for words in ("is in use by zoo (pid", "is in use by another zoo process, which is "
                                              "starting", "already exists")), refused
    assert "Traceback" not in refused
    with open(tmp_path / "same" / "logs" / "metrics.csv") as f:
        lines = f.read().splitlines()
    assert sum(line == lines[0] for line in lines) == 1  # one writer: one header
    assert json.loads((tmp_path / "same" / "metrics.json").read_text())["test_acc"] > 0.5


def test_a_run_that_finds_its_new_folder_locked_by_another_leaves_it_to_that_run(tmp_path, monkeypatch):
    # two runs start together: both make the folder, the other locks it first; ours must not remove it
    path, held = tmp_path / "same", []
    acquire = RunLock.acquire.__func__

    def the_other_run_first(cls, folder):
        held.append(acquire(cls, folder))
        return acquire(cls, folder)

    monkeypatch.setattr(RunLock, "acquire", classmethod(the_other_run_first))
    with pytest.raises(ZooError, match="is in use by zoo \\(pid"):
        RunFolder.claim(path, overwrite=False)
    assert path.is_dir() and (path / LOCK_FILE).is_file()
    held[0].release()


@pytest.mark.parametrize("failure", [RuntimeError("boom"), KeyboardInterrupt(), MemoryError()],
                         ids=["error", "ctrl-c", "out-of-memory"])
def test_overwrite_puts_the_old_run_back_on_any_failure(tmp_path, capsys, monkeypatch, failure):
    run = _old_run(tmp_path / "run")

    def fails(prepared, path, **kwargs):
        assert (path / "recipe.yaml").read_text().startswith("# resolved from")  # the new run had begun
        raise failure

    monkeypatch.setattr(run_module, "run_fit", fails)
    status = main(["train", "mlp-digits", *SMALL, "--run-dir", str(run), "--overwrite"])
    err = capsys.readouterr().err
    assert status == (130 if isinstance(failure, KeyboardInterrupt) else 2), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in run.iterdir()) == [MARKER, "keep.txt", "recipe.yaml"]
    assert (run / "keep.txt").read_text() == "the old run"
    assert _siblings(run) == ["run"]  # nothing set aside is left over


def test_overwrite_puts_the_old_run_back_after_a_signal_before_training(tmp_path, capsys, monkeypatch):
    run = _old_run(tmp_path / "run")

    def signalled(prepared, path, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler stops the run at once: training has not begun
        raise AssertionError("the signal did not stop the run")

    monkeypatch.setattr(run_module, "run_fit", signalled)
    assert main(["train", "mlp-digits", *SMALL, "--run-dir", str(run), "--overwrite"]) == 143
    err = capsys.readouterr().err
    assert "stopped by SIGTERM before training started" in err and f"{run} is as it was before the run" in err
    assert (run / "keep.txt").read_text() == "the old run" and _siblings(run) == ["run"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers went back


def test_a_fresh_run_that_fails_leaves_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def fails(prepared, path, **kwargs):
        raise ValueError("something Lightning did not like")

    monkeypatch.setattr(run_module, "run_fit", fails)
    assert main(["train", "mlp-digits", *SMALL, "--run-dir", "a/b/run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: ValueError: something Lightning did not like") and "--debug" in err
    assert list(tmp_path.iterdir()) == []  # not even the folders made on the way
    assert main(["train", "mlp-digits", *SMALL]) == 2
    assert list(tmp_path.iterdir()) == []  # runs/ went too


KILLED_OVERWRITE = """
import os, sys
from pathlib import Path
from zoo.training.run_folder import RunFolder
folder = RunFolder.claim(Path(sys.argv[1]), overwrite=True)
(folder.path / "recipe.yaml").write_text("# resolved from new.yaml\\n")
if sys.argv[2] == "checkpointed":
    (folder.path / "checkpoints").mkdir()
    (folder.path / "checkpoints" / "last.ckpt").write_bytes(b"a checkpoint")
os.kill(os.getpid(), 9)
"""


@pytest.mark.parametrize("stage", ["before", "checkpointed"])
def test_the_next_command_finishes_an_overwrite_that_was_killed(tmp_path, capsys, stage):
    run = _old_run(tmp_path / "run")
    killed = subprocess.run([sys.executable, "-c", KILLED_OVERWRITE, str(run), stage])
    assert killed.returncode == -9
    assert len(_siblings(run)) == 2  # the old run waits, set aside
    folder = RunFolder.reopen(run)  # what --resume or another --run-dir of this folder does first
    folder.lock.release()
    if stage == "before":  # the new run had nothing to resume: the old one comes back
        assert (run / "keep.txt").read_text() == "the old run"
        assert "put back the run that an interrupted --overwrite had set aside" in capsys.readouterr().err
    else:  # the new run can go on: the old one goes
        assert not (run / "keep.txt").exists() and (run / "checkpoints" / "last.ckpt").is_file()
        assert "replaces" not in json.loads((run / MARKER).read_text())
    assert _siblings(run) == ["run"]


def test_empty_and_missing_folders_are_fine_and_others_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    check_target(tmp_path / "empty", overwrite=False)
    check_target(tmp_path / "absent", overwrite=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "recipe.yaml").write_text("model: mlp\n")  # a user's recipe, not zoo's header
    with pytest.raises(ZooError, match="not a zoo run folder"):
        check_target(tmp_path / "mine", overwrite=True)
    old = tmp_path / "old"
    old.mkdir()
    (old / "recipe.yaml").write_text("# resolved from recipes/mlp-digits.yaml; run again with ...\n")
    check_target(old, overwrite=True)  # a run folder from before the marker existed


def test_a_refused_claim_of_an_empty_folder_leaves_it_as_it_was(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    claimed = RunFolder.claim(folder, overwrite=False)
    (folder / "recipe.yaml").write_text("# resolved from x\n")
    claimed.end(ok=False)
    assert folder.is_dir() and list(folder.iterdir()) == []


def test_stale_temporary_files_go_when_the_folder_is_taken_again(tmp_path):
    run = _old_run(tmp_path / "run")
    (run / "checkpoints").mkdir()
    left = [run / "checkpoints" / ".last.ckpt.4242.0a1b2c3d.tmp", run / "metrics.tmp"]
    for p in left:
        p.write_bytes(b"")  # what a kill -9 in the middle of a write leaves
    RunFolder.reopen(run).lock.release()
    assert not any(p.exists() for p in left)



def test_overwrite_drops_the_old_run_at_the_new_ones_first_checkpoint(tmp_path, capsys, monkeypatch):
    import lightning as L

    import zoo.training.fit as fit

    seen = {}

    class Sigterm(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 13:  # three steps after the first epoch's checkpoint
                seen["siblings"] = _siblings(run)
                os.kill(os.getpid(), signal.SIGTERM)

    run = _old_run(tmp_path / "run")
    make = fit.make_trainer
    with monkeypatch.context() as patch:
        patch.setattr(fit, "make_trainer", lambda *a, **k: make(*a, **{**k, "extra_callbacks": [Sigterm()]}))
        args = ["train", "mlp-digits", *SMALL, "performance.steps_per_execution=1", "--run-dir", str(run), "--overwrite"]
        assert main(args) == 143
    assert seen["siblings"] == ["run"]  # the old run went as soon as the new one had a checkpoint
    assert f"continue with: zoo train --resume {run}" in capsys.readouterr().err
    assert not (run / "keep.txt").exists() and _siblings(run) == ["run"]
    assert main(["train", "--resume", str(run)]) == 0
    assert (run / "metrics.json").is_file() and _siblings(run) == ["run"]


def test_files_rewritten_in_a_run_folder_stay_whole_when_a_write_is_cut_off(tmp_path, monkeypatch):
    from zoo.core.recipe import load
    from zoo.monitoring.wandb_logging import RUN_ID_FILE, ZooWandbLogger
    from zoo.training.run_folder import write_recipe

    run = _old_run(tmp_path / "run")
    (run / MARKER).write_text(json.dumps({"format": 1, "replaces": ".run.replaced-000000"}))
    (run / RUN_ID_FILE).write_text("abc123\n")
    before = {name: (run / name).read_text() for name in (MARKER, "recipe.yaml", RUN_ID_FILE)}
    write = Path.write_text

    def cut_off(self, text, *args, **kwargs):
        write(self, text[: len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt  # the process stops halfway through the write

    folder = RunFolder(run, lock=None)  # the marker's own bookkeeping; no lock needed to rewrite it here
    logger = ZooWandbLogger.__new__(ZooWandbLogger)
    logger.run_dir = run
    run_id = type("Run", (), {"id": "def456", "dir": str(run / "wandb" / "x" / "files")})()
    recipe = load("mlp-digits", SMALL)
    def stop_before_rename(fd):
        raise KeyboardInterrupt  # an atomic write stops with its temporary file written, not yet renamed

    monkeypatch.setattr(Path, "write_text", cut_off)
    monkeypatch.setattr(os, "fsync", stop_before_rename)
    for rewrite in (folder._clear_replaces, lambda: write_recipe(recipe, run), lambda: logger._continue(run_id)):
        with pytest.raises(KeyboardInterrupt):
            rewrite()
    monkeypatch.undo()
    assert {name: (run / name).read_text() for name in before} == before  # each the old file, whole
    assert sorted(p.name for p in run.iterdir()) == sorted([MARKER, "recipe.yaml", RUN_ID_FILE, "keep.txt"])
