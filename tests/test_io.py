"""zoo.core.io: reads of files zoo did not write are bounded; writes are atomic, strict JSON, and a full disk
is one line naming the file."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from zoo.core.errors import ZooError
from zoo.core.io import (
    NoSpaceError,
    atomic_torch_save,
    atomic_write_text,
    json_text,
    read_bytes,
    read_text,
    torch_load,
    write_json,
)


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, which Python writes by default and JSON does not have."""

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("kind", ["pipe", "device", "folder"])
def test_reads_refuse_what_is_not_a_regular_file_at_once(tmp_path, kind):
    path = tmp_path / "recipe.yaml"
    if kind == "pipe":
        os.mkfifo(path)  # opened the ordinary way, reading it waits for a writer forever
    elif kind == "device":
        path.symlink_to("/dev/zero")  # endless
    else:
        path.mkdir()
    for read in (read_text, lambda p: torch_load(p)):
        with pytest.raises(ZooError, match=f"{path}: not a regular file"):
            read(path)


def test_reads_are_capped(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"a: 1\n" * 300)
    assert read_text(path, 1500).startswith("a: 1")
    with pytest.raises(ZooError, match=r"big\.yaml: 1500 bytes, more than a recipe may be \(1499 bytes\)"):
        read_text(path, 1499, "recipe")
    # a pseudo-file says its size is 0, whatever it holds: the read itself is capped too
    assert os.stat("/proc/self/status").st_size == 0
    with pytest.raises(ZooError, match="more than a file may be"):
        read_bytes("/proc/self/status", 10)
    (tmp_path / "latin1.yaml").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ZooError, match=r"not UTF-8 text \(byte 0xe9 at offset 3\)"):
        read_text(tmp_path / "latin1.yaml")


def test_json_is_strict_with_null_for_non_finite_numbers(tmp_path):
    from zoo.training.fit import RunResult

    data = {"loss": math.nan, "curve": [1.0, math.inf, -math.inf], "nested": {"acc": 0.5}}
    assert strict_json(json_text(data)) == {"loss": None, "curve": [1.0, None, None], "nested": {"acc": 0.5}}
    write_json(tmp_path / "metrics.json", data)
    assert strict_json((tmp_path / "metrics.json").read_text())["loss"] is None
    result = RunResult(test_acc=math.nan, val_acc=0.5, run_dir="r", seconds=1.0, best_checkpoint="",
                       metrics={"val_loss": math.inf})
    assert strict_json(result.to_json())["metrics"] == {"val_loss": None}


def _full_disk_writes(folder: Path) -> dict[str, str]:
    """Each atomic writer's message when writing more than ``folder``'s file system holds."""
    big = "x" * 200_000
    writes = {
        "checkpoint": lambda: atomic_torch_save({"w": torch.zeros(50_000)}, folder / "best.ckpt"),
        "metrics": lambda: write_json(folder / "metrics.json", {"log": big}),
        "export": lambda: atomic_write_text(folder / "predictions.csv", big),
    }
    messages = {}
    for name, write in writes.items():
        try:
            write()
        except NoSpaceError as exc:
            messages[name] = str(exc)
    return messages


def _assert_reported_and_nothing_left(messages: dict[str, str], folder: Path) -> None:
    files = {"checkpoint": "best.ckpt", "metrics": "metrics.json", "export": "predictions.csv"}
    assert set(messages) == set(files), messages
    for name, file in files.items():
        assert messages[name].startswith(f"no space left on {folder / file}: No space left on device"), messages
    assert sorted(os.listdir(folder)) == []  # no partial file, no temporary file


def test_a_full_disk_is_named_and_leaves_nothing(tmp_path, full_disk):
    _assert_reported_and_nothing_left(_full_disk_writes(tmp_path), tmp_path)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux's unshare")
def test_a_really_full_file_system_is_named_and_leaves_nothing(tmp_path):
    """A real 64 kB file system (tmpfs in a user namespace of our own: no root privileges needed)."""
    mount = tmp_path / "small"
    mount.mkdir()
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_io import _assert_reported_and_nothing_left, _full_disk_writes
        folder = Path({str(mount)!r})
        _assert_reported_and_nothing_left(_full_disk_writes(folder), folder)
    """)
    command = f"mount -t tmpfs -o size=64k zoo-full {mount} && exec {sys.executable} -c \"$0\""
    done = subprocess.run(["unshare", "-rm", "sh", "-c", command, script], capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0 and done.stderr.startswith(("unshare:", "mount:")):
        pytest.skip(f"no user namespaces here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr


def test_a_run_whose_loss_is_nan_writes_strict_json(tmp_path, monkeypatch, capsys):
    from zoo.cli.main import main

    monkeypatch.chdir(tmp_path)
    # a learning rate that turns the loss NaN at once, with the guard that would stop it switched off
    status = main(["train", "mlp-digits", "model.width=8", "trainer.max_epochs=1", "optimizer.lr=1e30", "augment=[]",
                   "checkpoint.divergence_guard=false", "trainer.limit_train_batches=2", "--run-dir", "run", "--json"])
    assert status == 0
    printed = strict_json(capsys.readouterr().out.strip().splitlines()[-1])
    written = strict_json((tmp_path / "run" / "metrics.json").read_text())
    for result in (printed, written):
        assert result["metrics"]["val_loss"] is None and result["metrics"]["test_loss"] is None
        assert 0 <= result["test_acc"] <= 1


def test_a_failed_write_names_the_file_asked_for_never_the_temporary_one(tmp_path, capsys):
    from zoo.cli.main import main

    (tmp_path / "folder").mkdir()
    for out, reason in ((tmp_path / "folder", "Is a directory"), (tmp_path / "none" / "ref.md", "No such file")):
        assert main(["docs", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"zoo: error: {out}: {reason}") and ".tmp" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"] and not any((tmp_path / "folder").iterdir())
