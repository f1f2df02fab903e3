"""zoo data prepare: an image folder written as LitData chunks, the files' bytes unchanged, in imagefolder's
splits; refusals that leave nothing behind; and imagefolder's refusal of a folder too large for memory."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zoo
from zoo.cli.main import main
from zoo.data import host_memory
from zoo.data.images import decode, resize

CLASSES = ("ant", "bee", "cow")
SIZE = (12, 10)


@pytest.fixture
def folder(tmp_path) -> Path:
    """root/<class>/*.jpg, 9 noise JPEGs of mixed sizes per class (one folder: val and test are carved)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for i in range(9):
            h, w = (int(n) for n in rng.integers(9, 30, 2))
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / cls / f"{i}.jpg")
    return root


SETTINGS = {"limit_per_class": 8, "val_fraction": 0.25, "test_fraction": 0.25, "split_seed": 3}
OPTIONS = ["--limit-per-class", "8", "--val-fraction", "0.25", "--test-fraction", "0.25", "--split-seed", "3"]


def _items(dest: Path, part: str) -> list[dict]:
    from litdata import StreamingDataset

    return list(StreamingDataset(str(dest / part)))


def _leftovers(parent: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name not in keep)


def test_prepared_items_are_the_files_bytes_in_imagefolders_splits(folder, tmp_path, capsys):
    dest = tmp_path / "prepared"
    assert main(["data", "prepare", str(folder), str(dest), "--workers", "2", *OPTIONS]) == 0
    out = capsys.readouterr().out
    assert f"wrote {dest}: train 12, val 6, test 6 images of 3 classes" in out

    info = json.loads((dest / "zoo-data.json").read_text())
    assert info["format"] == 1 and info["classes"] == list(CLASSES) and info["source"] == str(folder)
    assert info["splits"] == {"train": 12, "val": 6, "test": 6} and info["skipped"] == 0
    assert info["settings"]["split_seed"] == 3 and info["settings"]["limit_per_class"] == 8

    spec = {"name": "imagefolder", "root": str(folder), "size": list(SIZE), "cache": False, **SETTINGS}
    dm = zoo.datasets.build(spec)
    paths = set()
    for part in ("train", "val", "test"):
        items = _items(dest, part)
        assert len(items) == info["splits"][part]
        prepared = []
        for item in items:
            file = folder / item["path"]
            assert bytes(item["image"]) == file.read_bytes()  # the file itself, not re-encoded
            assert CLASSES[item["label"]] == Path(item["path"]).parts[0]
            paths.add(item["path"])
            pixels = resize(decode(bytes(item["image"]), item["path"]), SIZE)
            prepared.append((item["label"], pixels.numpy().tobytes()))
        split = getattr(dm, part)
        expected = [(int(y), x.numpy().tobytes()) for x, y in zip(split.x, split.y)]
        # the same images under the same labels, in the same order (whatever the number of workers), so a streamed
        # run reads them as the in-memory one does
        assert prepared == expected, part
    assert len(paths) == 24  # no file twice


def test_an_existing_dest_is_refused_and_left_as_it_was(folder, tmp_path, capsys):
    dest = tmp_path / "prepared"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep me")
    assert main(["data", "prepare", str(folder), str(dest)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"zoo: error: zoo data prepare: DEST {dest} exists; pass --overwrite to replace it"
    # --overwrite replaces only a folder this command wrote
    assert main(["data", "prepare", str(folder), str(dest), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a folder this command wrote (no zoo-data.json)" in err and len(err.splitlines()) == 1
    assert [p.name for p in dest.iterdir()] == ["mine.txt"] and (dest / "mine.txt").read_text() == "keep me"
    assert _leftovers(tmp_path, {"images", "prepared"}) == []
    assert main(["data", "prepare", str(folder), str(folder / "out")]) == 2  # it would become a class
    assert "is inside SOURCE" in capsys.readouterr().err and not (folder / "out").exists()


def test_a_damaged_file_stops_by_name_or_is_skipped_and_counted(folder, tmp_path, capsys):
    (folder / "bee" / "broken.jpg").write_bytes(b"this is no JPEG at all")
    dest = tmp_path / "prepared"
    # DEST in folders not made yet: they are made, and removed again when the command fails
    assert main(["data", "prepare", str(folder), str(tmp_path / "data" / "sets" / "x"), "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    broken = folder / "bee" / "broken.jpg"
    assert err.startswith(f"zoo: error: zoo data prepare: {broken} is not an image file")
    assert "--skip-bad" in err
    assert _leftovers(tmp_path, {"images"}) == []  # neither DEST, its folders nor the temporary folder

    assert main(["data", "prepare", str(folder), str(tmp_path / "data" / "x"), "--skip-bad"]) == 0
    shutil.move(tmp_path / "data" / "x", dest)
    (tmp_path / "data").rmdir()
    assert "left out 1 files that are not readable images" in capsys.readouterr().out
    info = json.loads((dest / "zoo-data.json").read_text())
    assert info["skipped"] == 1 and sum(info["splits"].values()) == 27  # 28 files, one left out
    paths = {item["path"] for part in ("train", "val", "test") for item in _items(dest, part)}
    assert len(paths) == 27 and "bee/broken.jpg" not in paths
    assert _leftovers(tmp_path, {"images", "prepared"}) == []

    # --overwrite replaces a prepared folder; classes left unread leave their damaged files unread too
    assert main(["data", "prepare", str(folder), str(dest), "--overwrite", "--classes", "cow", "ant"]) == 0
    info = json.loads((dest / "zoo-data.json").read_text())
    assert info["classes"] == ["cow", "ant"] and info["skipped"] == 0 and sum(info["splits"].values()) == 18
    labels = {item["path"].split("/")[0]: item["label"] for item in _items(dest, "train")}
    assert labels == {"cow": 0, "ant": 1}
    assert _leftovers(tmp_path, {"images", "prepared"}) == []


def test_an_interrupted_prepare_leaves_nothing(folder, tmp_path, capsys):
    from zoo.data.prepare import prepare

    def interrupt(done, total):
        raise KeyboardInterrupt  # as Ctrl-C would, while the workers write

    with pytest.raises(KeyboardInterrupt):
        prepare(folder, tmp_path / "prepared", progress=interrupt)
    assert _leftovers(tmp_path, {"images"}) == []


def test_what_a_killed_prepare_left_is_removed_by_the_next(folder, tmp_path):
    import subprocess

    from zoo.data.prepare import WRITER_FILE, prepare

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned, live, foreign = (tmp_path / f".prepared.{tag}.partial" for tag in ("dead", "live", "other"))
    for folder_, pid in ((abandoned, gone.stdout.strip()), (live, str(os.getpid())), (foreign, None)):
        (folder_ / "train").mkdir(parents=True)
        if pid is not None:
            (folder_ / WRITER_FILE).write_text(pid)
    prepare(folder, tmp_path / "prepared", **SETTINGS)
    # the killed writer's folder is gone; one still being written, and one zoo did not mark, stay
    assert _leftovers(tmp_path, {"images", "prepared"}) == sorted([live.name, foreign.name])
    assert not (tmp_path / "prepared" / WRITER_FILE).exists()


def _same_size_folder(tmp_path) -> Path:
    root = tmp_path / "images"
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40, 30)).save(root / cls / f"{i}.png")  # 30 high, 40 wide
    return root


def _imagefolder_memory(monkeypatch, available: int):
    module = sys.modules[zoo.datasets["imagefolder"].obj.__module__]
    monkeypatch.setattr(module.host_memory, "available_bytes", lambda: available)


@pytest.mark.parametrize("size", [[8, 6], None])
def test_imagefolder_takes_at_most_half_the_available_memory(tmp_path, monkeypatch, size):
    root = _same_size_folder(tmp_path)
    needed = 12 * 3 * (8 * 6 if size else 30 * 40)  # without data.size, from the first image's header
    spec = {"name": "imagefolder", "root": str(root), "size": size, "cache": False, **SETTINGS}
    _imagefolder_memory(monkeypatch, 2 * needed - 1)
    with pytest.raises(zoo.ZooError, match="GB of memory available; stream them from disk instead"):
        zoo.datasets.build(spec)
    _imagefolder_memory(monkeypatch, 2 * needed)
    assert len(zoo.datasets.build(spec).train) > 0


def test_imagefolder_memory_refusal_names_the_folder_the_sizes_and_the_way_out(tmp_path, monkeypatch):
    root = _same_size_folder(tmp_path)
    _imagefolder_memory(monkeypatch, 10 * 10**9)
    # 12 images of 3 x 20,000 x 10,000 bytes: refused before anything is decoded
    spec = {"name": "imagefolder", "root": str(root), "size": [20_000, 10_000], "cache": False}
    with pytest.raises(zoo.ZooError) as refused:
        zoo.datasets.build(spec)
    assert str(refused.value).endswith(
        f"imagefolder: the 12 images of {root} take 7.2 GB decoded, more than half of the 10.0 GB of memory "
        f"available; stream them from disk instead: zoo data prepare {root} DEST, then train with "
        "data.name=streaming data.root=DEST"
    )


def test_available_memory_is_the_lower_of_the_host_and_its_control_group(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # as where psutil is not installed
    monkeypatch.setattr(host_memory, "_meminfo_available", lambda: 8 * 10**9)
    monkeypatch.setattr(host_memory, "_cgroup_headroom", lambda: 3 * 10**9)
    assert host_memory.available_bytes() == 3 * 10**9
    monkeypatch.setattr(host_memory, "_cgroup_headroom", lambda: None)
    assert host_memory.available_bytes() == 8 * 10**9


def test_two_preparations_of_a_folder_hold_its_items_in_one_order(tmp_path):
    """Whatever the number of workers: litdata's shared work queue would interleave their items differently
    from one run to the next, and a streamed run would then see other batches from the same folder."""
    from litdata import StreamingDataset

    from zoo.data.prepare import prepare

    rng = np.random.default_rng(1)
    root = tmp_path / "images"
    for cls in CLASSES[:2]:
        (root / cls).mkdir(parents=True)
        for i in range(150):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / cls / f"{i:03d}.jpg")
    orders = []
    for run, workers in enumerate((2, 1)):
        prepare(root, tmp_path / f"prepared{run}", workers=workers)
        items = StreamingDataset(str(tmp_path / f"prepared{run}" / "train"), batch_decode=1)
        orders.append([items[i]["path"] for i in range(len(items))])
    assert orders[0] == orders[1] and orders[0] == sorted(orders[0])  # the split's own order: class, then name
