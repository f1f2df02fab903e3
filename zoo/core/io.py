"""Small file helpers every part of zoo may use, components included: writes that are never half done."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import torch


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that never leaves a partial file at ``path``: temp file, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own per writer; opened with the umask's permissions (unlike mkstemp's owner-only
    # file), so others sharing a data folder can read a cache written there
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    # the rename itself is durable only once the folder's entry is on disk
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``: never half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def append_text(path: str | Path, text: str) -> None:
    """Append ``text`` to ``path`` in one write call: a process killed meanwhile has added all of it or none."""
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        while data:  # a regular file takes it all at once; the loop only covers a short write
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """JSON written to a temporary file and renamed over ``path``."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
