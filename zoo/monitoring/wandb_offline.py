"""Reading what an offline W&B run wrote, without network: the run's ``.wandb`` transaction log.

``run_dir/wandb/offline-run-<time>-<id>/run-<id>.wandb`` is a LevelDB-style log (a 7-byte file header
``:W&B`` + magic 0xBEE1 + version, then 32 KiB blocks of chunks, each with a 7-byte header: checksum,
length, type FULL/FIRST/MIDDLE/LAST) of protobuf ``Record`` messages from ``wandb.proto.wandb_internal_pb2``.
wandb 0.31 no longer ships a Python reader for it (the old ``wandb.sdk.internal.datastore`` is gone; the
Go ``wandb-core`` writes and reads it), so the framing is decoded here and the records with wandb's own
protobuf classes.

Tests read runs back with it, and the logger asks it what the earlier sittings of a resumed run hold
(``held_by_sittings``) so that it logs each value once and fills in what a kill lost.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

HEADER = struct.Struct("<4sHB")  # ident, magic, version
CHUNK = struct.Struct("<IHB")  # checksum, length, type
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
STEP = "trainer/global_step"  # zoo's x axis for every logged value: the optimizer step it belongs to
BOOKKEEPING = {"_step", "_runtime", "_timestamp", STEP}  # what wandb and Lightning add to every row


@dataclass
class OfflineRun:
    """What one offline run logged."""

    run_id: str
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)  # name, type, files, local_paths
    files: list[str] = field(default_factory=list)
    name: str | None = None
    project: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    record_types: dict[str, int] = field(default_factory=dict)  # how many of each record kind

    @property
    def complete(self) -> bool:
        """Whether the run finished: wandb writes an exit record last."""
        return "exit" in self.record_types

    def history_keys(self) -> set[str]:
        return {k for row in self.history for k in row}


def offline_run_dirs(run_dir: str | Path) -> list[Path]:
    """The offline run folders under ``run_dir/wandb``, oldest first."""
    return sorted(p for p in (Path(run_dir) / "wandb").glob("offline-run-*") if p.is_dir())


def _started(folder: Path) -> str:
    # offline-run-20250101_120000-<id> or run-20250101_120000-<id>: the start time, sortable as text
    return folder.name.removeprefix("offline-").split("-")[1]


def sitting_dirs(wandb_dir: str | Path, run_id: str) -> list[Path]:
    """Every local folder of one W&B run under a ``wandb/`` folder, offline or online, oldest first: each
    time a run is resumed, wandb starts a folder of its own for it (a sitting)."""
    found = [
        p
        for p in Path(wandb_dir).glob(f"*run-*-{run_id}")
        if p.is_dir() and not p.is_symlink() and p.name.startswith(("run-", "offline-run-"))
    ]
    return sorted(found, key=_started)


def run_file(run_folder: str | Path) -> Path:
    files = sorted(Path(run_folder).glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"{run_folder}: no run-*.wandb file")
    return files[0]


def iter_chunks(data: bytes) -> Iterator[bytes]:
    """The records of a LevelDB-style log, chunks joined; a torn record at the end is dropped."""
    if len(data) < HEADER.size:
        return
    ident, magic, _version = HEADER.unpack_from(data, 0)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError("not a W&B transaction log (bad header)")
    pos = HEADER.size
    pending: list[bytes] = []
    while pos + CHUNK.size <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK.size:  # the writer pads a block's tail that cannot hold a chunk header
            pos += left_in_block
            continue
        _crc, length, kind = CHUNK.unpack_from(data, pos)
        pos += CHUNK.size
        if kind == 0 and length == 0:  # zero padding
            pos += left_in_block - CHUNK.size
            continue
        body = data[pos : pos + length]
        if len(body) < length:
            return
        pos += length
        if kind == FULL:
            pending = []
            yield body
        elif kind == FIRST:
            pending = [body]
        elif kind == MIDDLE:
            pending.append(body)
        elif kind == LAST:
            pending.append(body)
            yield b"".join(pending)
            pending = []


def iter_records(path: str | Path):
    """The protobuf ``Record`` messages of a ``.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    for raw in iter_chunks(Path(path).read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        yield record


def _value(item) -> Any:
    try:
        return json.loads(item.value_json)
    except (ValueError, TypeError):
        return item.value_json


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def _apply(target: dict[str, Any], items) -> None:
    for item in items:
        if item.nested_key:  # a nested update: walk into sub-dicts
            node = target
            for part in item.nested_key[:-1]:
                node = node.setdefault(part, {})
            node[item.nested_key[-1]] = _value(item)
        else:
            target[item.key] = _value(item)


def _remove(target: dict[str, Any], items) -> None:
    for item in items:
        target.pop(_key(item), None)


def read_run_file(path: str | Path) -> OfflineRun:
    path = Path(path)
    run = OfflineRun(run_id=path.stem.removeprefix("run-"), path=path)
    config: dict[str, Any] = {}
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind is None:
            continue
        run.record_types[kind] = run.record_types.get(kind, 0) + 1
        if kind == "run":
            r = record.run
            run.run_id = r.run_id or run.run_id
            run.name = r.display_name or None
            run.project = r.project or None
            run.group = r.run_group or None
            run.tags = list(r.tags)
            _apply(config, r.config.update)
            _apply(run.summary, r.summary.update)
        elif kind == "config":
            _apply(config, record.config.update)
            _remove(config, record.config.remove)
        elif kind == "history":
            run.history.append({_key(i): _value(i) for i in record.history.item})
        elif kind == "summary":
            _apply(run.summary, record.summary.update)
            _remove(run.summary, record.summary.remove)
        elif kind == "files":
            run.files.extend(f.path for f in record.files.files)
        elif kind == "artifact":
            contents = record.artifact.manifest.contents
            run.artifacts.append(
                {
                    "name": record.artifact.name,
                    "type": record.artifact.type,
                    "files": [c.path for c in contents],
                    "local_paths": [c.local_path for c in contents],
                }
            )
    # wandb stores config values as {"value": v, "desc": ...}; its own bookkeeping lives under _wandb
    run.config = {
        k: (v["value"] if isinstance(v, dict) and "value" in v else v)
        for k, v in config.items()
        if k != "_wandb"
    }
    return run


def merged_history(runs: list[OfflineRun]) -> list[dict[str, Any]]:
    """The history rows of several sittings of one run, in the order wandb numbered them (``_step``)."""
    rows = [row for run in runs for row in run.history]
    return sorted(rows, key=lambda row: row.get("_step", 0))


@dataclass
class Held:
    """What W&B holds of a run: which (optimizer step, key) cells and keys, which artifacts, the last value
    of each number, and where wandb's own row count goes on (its ``_step``)."""

    cells: set[tuple[int, str]] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    artifacts: set[str] = field(default_factory=set)
    next_step: int = 0
    latest: dict[str, tuple[int, Any]] = field(default_factory=dict)  # key -> (step, value) of its last step

    def has(self, step: int, key: str, once: bool = False) -> bool:
        if (step, key) in self.cells:
            return True
        # media read back from a file come as their fields: "augmentations/_type", "augmentations/path", ...
        return once and (key in self.keys or any(k.startswith(key + "/") for k in self.keys))

    def add(self, step: int, row: Mapping[str, Any]) -> None:
        for key, value in row.items():
            self.cells.add((step, key))
            self.keys.add(key)
            if isinstance(value, (int, float)) and step >= self.latest.get(key, (-1, None))[0]:
                self.latest[key] = (step, value)


def held_by_sittings(folders: list[Path]) -> Held:
    """What these local folders of one W&B run (its earlier sittings) hold, read from their ``.wandb`` files;
    a file cut short by a kill is read as far as it goes."""
    held = Held()
    for folder in folders:
        try:
            run = read_run_file(run_file(folder))
        except (FileNotFoundError, ValueError):  # no file yet, or not one wandb wrote
            continue
        for row in run.history:
            held.next_step = max(held.next_step, int(row.get("_step", -1)) + 1)
            values = {k: v for k, v in row.items() if k not in BOOKKEEPING}
            if isinstance(row.get(STEP), (int, float)):
                held.add(int(row[STEP]), values)
            else:
                held.keys.update(values)
        held.artifacts.update(a["name"] for a in run.artifacts)
    return held


def has_exit_record(path: str | Path) -> bool:
    return any(r.WhichOneof("record_type") == "exit" for r in iter_records(path))


def wait_until_written(path: str | Path, timeout: float = 15.0) -> bool:
    """Wait for the exit record: wandb-core (0.31) still writes the file's tail after ``run.finish()``
    has returned. True once it is there; False on timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        if Path(path).is_file() and has_exit_record(path):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def read_offline_run(run_dir: str | Path, index: int = -1, wait: float = 15.0) -> OfflineRun:
    """The offline run of a zoo run folder (the latest one when there are several), once it is fully
    written (up to ``wait`` seconds; an unfinished run is read as far as it goes)."""
    folders = offline_run_dirs(run_dir)
    if not folders:
        raise FileNotFoundError(f"{run_dir}: no wandb/offline-run-* folder")
    path = run_file(folders[index])
    if wait:
        wait_until_written(path, wait)
    return read_run_file(path)
