"""Ensembles stopped by a signal or a kill go on member by member and end as the uninterrupted ensemble does."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from run_stops import FAULTS, one_torch_thread, train_with_faults, with_callback

from zoo.cli.main import main
from zoo.core import discovery
from zoo.training.checkpoints import Interrupted
from zoo.training.run import train
from zoo.training.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
# 1257 training images in batches of 128: 10 optimizer steps an epoch, 30 a member
SMALL = ["ensemble.members=3", "trainer.max_epochs=3", "data.batch_size=128", "model.width=16", "augment=[]",
         "logger.wandb.mode=disabled", "performance.steps_per_execution=1"]
# cycles of 2 epochs: snapshots at steps 20, 40 and 60
SNAPSHOT = ["trainer.max_epochs=6", "schedule.cycle_epochs=2", "schedule.warmup_epochs=0", "optimizer.lr=0.05",
            "data.batch_size=128", "model.width=16", "augment=[]", "logger.wandb.mode=disabled",
            "performance.steps_per_execution=1"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


def figures(result) -> dict:
    """What an ensemble run reports: its accuracies and loss, and the members' table."""
    members = [(m["member"], m.get("seed"), m.get("snapshot"), m["test_acc"], m["val_acc"]) for m in result["members"]]
    return {**{k: result[k] for k in ("test_acc", "val_acc", "ensemble_acc")}, "metrics": result["metrics"],
            "members": members}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, _one_thread):
    return figures(train(None, SMALL, run_dir=tmp_path_factory.mktemp("base") / "run", progress=False).summary())


class SignalInMember(L.Callback):
    """Sends this process ``signum`` after optimizer step ``step`` of the model trained in folder ``member``,
    or as its final test begins (``step`` None)."""

    def __init__(self, member: str, step: int | None, signum: int = signal.SIGTERM) -> None:
        self.member, self.step, self.signum = member, step, signum

    def _send(self, trainer) -> None:
        if Path(trainer.default_root_dir).name == self.member:
            os.kill(os.getpid(), self.signum)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self._send(trainer)

    def on_test_start(self, trainer, pl_module) -> None:
        if self.step is None:
            self._send(trainer)


def _step(ckpt: Path) -> int:
    return torch.load(ckpt, weights_only=True)["global_step"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_in_the_second_member_then_resume_ends_as_the_uninterrupted_ensemble(
    signum, tmp_path, monkeypatch, capsys, uninterrupted
):
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        with_callback(patch, SignalInMember("m1", step=14, signum=signum))
        assert main(["train", *SMALL, "--run-dir", str(run)]) == 128 + signum
    err = capsys.readouterr().err
    assert f"wrote {run / 'members' / 'm1' / 'checkpoints' / 'last.ckpt'}" in err, err
    assert f"continue with: zoo train --resume {run}" in err and "Traceback" not in err
    # the finished member and the stopped one's checkpoint are kept; the third never began
    finished = run / "members" / "m0" / "metrics.json"
    assert finished.is_file() and _step(run / "members" / "m1" / "checkpoints" / "last.ckpt") == 14
    assert not (run / "members" / "m1" / "metrics.json").exists() and not (run / "members" / "m2").exists()

    # an edited recipe is refused before anything trains: the finished member is not of that recipe
    original = (run / "recipe.yaml").read_text()
    (run / "recipe.yaml").write_text(original.replace("lr: 0.002", "lr: 0.01"))
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "recipe.yaml is not the recipe its checkpoint was trained with (optimizer.lr: 0.002 -> 0.01)" in err, err
    (run / "recipe.yaml").write_text(original)

    moved = tmp_path / "moved"  # the members' W&B names follow the folder's name; the run resumes all the same
    run.rename(moved)
    finished = moved / "members" / "m0" / "metrics.json"
    first_member = (finished.read_text(), (moved / "members" / "m0" / "checkpoints" / "best.ckpt").stat().st_mtime_ns)
    assert main(["train", "--resume", str(moved), "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures(resumed) == uninterrupted
    # the finished member was not trained again
    assert (finished.read_text(), (moved / "members" / "m0" / "checkpoints" / "best.ckpt").stat().st_mtime_ns) == first_member


def test_kill_9_mid_ensemble_then_resume_ends_as_the_uninterrupted_ensemble(tmp_path, uninterrupted):
    run = tmp_path / "run"
    # the kill comes from the second member's own process, after its optimizer step 15, once
    kill = f"monitors=[{{name: signal_at_step, step: 15, marker: {tmp_path / 'fired'}}}]"
    killed = train_with_faults(tmp_path, f"ensemble:\n  member_overrides: [[], [{json.dumps(kill)}], []]\n", SMALL, run)
    assert killed.returncode == -9, killed.stderr
    assert (run / "members" / "m0" / "metrics.json").is_file()
    assert _step(run / "members" / "m1" / "checkpoints" / "last.ckpt") == 10  # its first epoch's end
    discovery.load_local([str(FAULTS)], kind="--plugin")  # what --plugin does: the run's recipe names it
    resumed = train(resume=run, progress=False).summary()
    assert figures(resumed) == uninterrupted
    assert json.loads((run / "metrics.json").read_text())["test_acc"] == uninterrupted["test_acc"]


def test_snapshot_ensemble_stopped_mid_cycle_resumes_exactly_and_keeps_its_snapshots(tmp_path, monkeypatch):
    whole = train("mlp-digits-snapshot", SNAPSHOT, run_dir=tmp_path / "whole", progress=False).summary()
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        with_callback(patch, SignalInMember("run", step=34))  # in the second cycle
        with pytest.raises(Interrupted, match="SIGTERM at epoch 3, step 34"):
            train("mlp-digits-snapshot", SNAPSHOT, run_dir=run, progress=False)
    taken = run / "snapshots" / "cycle-0-step20.ckpt"
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == [taken.name]
    assert _step(run / "checkpoints" / "last.ckpt") == 34
    kept = taken.stat().st_mtime_ns
    with monkeypatch.context() as patch:  # its training over, the resumed run is stopped again
        with_callback(patch, SignalInMember("run", step=None))
        with pytest.raises(Interrupted, match="SIGTERM during the final evaluation"):
            train(resume=run, progress=False)
    assert _step(run / "checkpoints" / "last.ckpt") == 60
    resumed = train(resume=run, progress=False).summary()
    assert figures(resumed) == figures(whole)
    assert [m["snapshot"] for m in resumed["members"]] == ["cycle-0-step20.ckpt", "cycle-1-step40.ckpt", "cycle-2-step60.ckpt"]
    assert taken.stat().st_mtime_ns == kept  # the snapshot taken before the stop is the one used


def test_a_signal_to_an_ensemble_training_members_in_parallel_keeps_them_resumable(tmp_path):
    run = tmp_path / "run"
    epoch_ends = [run / "members" / m / "checkpoints" / "last.ckpt" for m in ("m0", "m1")]
    over = threading.Event()

    def signal_once_both_trained_an_epoch() -> None:
        while not over.is_set() and not all(c.is_file() for c in epoch_ends):
            time.sleep(0.01)
        if not over.is_set():
            os.kill(os.getpid(), signal.SIGTERM)  # to this process only, not to the members' processes

    threading.Thread(target=signal_once_both_trained_an_epoch, daemon=True).start()
    try:
        with pytest.raises(Interrupted, match="SIGTERM while members trained in parallel processes") as stop:
            train(None, ["ensemble.members=2", "ensemble.parallel=2", "trainer.max_epochs=500", *SMALL[2:]],
                  run_dir=run, progress=False)
    finally:
        over.set()
    assert stop.value.resumable
    # each member stopped at the end of a step of its own and wrote its checkpoint there
    assert all(_step(c) >= 10 for c in epoch_ends) and not list(run.rglob("metrics.json"))


def test_overwrite_of_an_ensemble_says_what_it_replaces_and_puts_it_back_on_failure(tmp_path, capsys):
    run = tmp_path / "run"
    for member, files in {"m0": ["metrics.json", "checkpoints/last.ckpt"], "m1": ["checkpoints/last.ckpt"],
                          "m2": ["recipe.yaml"]}.items():
        for name in files:
            (run / "members" / member / name).parent.mkdir(parents=True, exist_ok=True)
            (run / "members" / member / name).write_text("{}")
    (run / ".zoo-run").write_text("{}")
    folder = RunFolder.claim(run, overwrite=True)
    err = capsys.readouterr().err
    assert f"--overwrite {run}: replacing the run it held (finished member m0; the checkpoint of member m1)" in err
    assert not (run / "members").exists()
    folder.end(ok=False)  # the new run failed before it had anything to resume from
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()) == [
        ".zoo-run", "members/m0/checkpoints/last.ckpt", "members/m0/metrics.json",
        "members/m1/checkpoints/last.ckpt", "members/m2/recipe.yaml",
    ]
