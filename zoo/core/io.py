"""Small file helpers every part of zoo may use, components included: writes that are never half done,
and reads of files zoo did not write itself that are bounded.

A file named by the user or found in a run folder may be anything: a named pipe (reading it waits for
a writer forever), ``/dev/zero`` (endless), a huge file. Reads go through :func:`open_regular`, which
refuses anything but a regular file and caps its size, naming the path. Writes go through one atomic
writer, which turns a full disk into one line naming the file instead of a C++ assertion from torch.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from zoo.core.errors import ZooError

MiB = 2**20
# Caps on what zoo reads: each far above what it writes itself, far below what exhausts a machine.
MAX_TEXT_BYTES = 4 * MiB  # recipes, sweep files, metrics.json and other small text files
MAX_TABLE_BYTES = 512 * MiB  # a run's logs/metrics.csv
MAX_IMAGE_BYTES = 256 * MiB  # one image file
MAX_TENSOR_BYTES = 32 * 1024 * MiB  # checkpoints and tensors of inputs

# errors that mean the disk (or the user's quota) is full
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class NoSpaceError(ZooError):
    """A write that failed because the disk or the quota is full; nothing was left half-written."""


def no_space_message(exc: BaseException) -> str | None:
    """'no space left on PATH: ...' for an OSError that says the disk or the quota is full, else None."""
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
        return f"no space left on {exc.filename or 'the device'}: {exc.strerror}"
    return None


def file_error_message(exc: BaseException) -> str | None:
    """'PATH: REASON' for an OSError that names a file, else None: a path the user gave that is a folder
    or lies in no folder says so in the system's words, not as a Python exception."""
    if not (isinstance(exc, OSError) and exc.filename and exc.strerror):
        return None
    return no_space_message(exc) or f"{exc.filename}: {exc.strerror}"


def _size(n: int) -> str:
    return f"{n / MiB:.1f} MiB" if n >= MiB else f"{n} bytes"


@contextmanager
def open_regular(path: str | Path, limit: int, what: str = "file") -> Iterator[BinaryIO]:
    """``path`` opened for binary reading, if it is a regular file of at most ``limit`` bytes; else a ZooError.

    Opened without blocking, so a named pipe with no writer is refused instead of waited on; the type
    and size are checked on the open file, not on a name that may change in between.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ZooError(f"cannot read {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ZooError(
                f"{path}: not a regular file (a pipe, a device or a folder?); a {what} must be a file"
            )
        if info.st_size > limit:
            raise ZooError(f"{path}: {_size(info.st_size)}, more than a {what} may be ({_size(limit)})")
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def read_bytes(path: str | Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (see :func:`open_regular`)."""
    data = bytearray()
    with open_regular(path, limit, what) as f:
        size = os.fstat(f.fileno()).st_size
        # read to its end, not to its size (a file may grow while read, a pseudo-file's size says 0), in
        # pieces no larger than needed: read(n) sets aside n bytes at once
        while len(data) <= limit:
            piece = f.read(min(limit + 1, max(size + 1, len(data) + 64 * 1024)) - len(data))
            if not piece:
                break
            data += piece
    if len(data) > limit:
        raise ZooError(f"{path}: more than a {what} may be ({_size(limit)})")
    return bytes(data)


def read_text(path: str | Path, limit: int = MAX_TEXT_BYTES, what: str = "file") -> str:
    """A regular UTF-8 text file of at most ``limit`` bytes, as a string; a ZooError naming it otherwise."""
    data = read_bytes(path, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ZooError(
            f"{path}: not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}); save it as UTF-8"
        ) from None


def _write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, make it durable and rename it over ``path``.

    Nothing is left under either name when it fails; a full disk is a :class:`NoSpaceError` naming ``path``.
    """
    # a name of its own per writer; opened with the umask's permissions (unlike mkstemp's owner-only
    # file), so others sharing a data folder can read a cache written there
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        # the rename itself is durable only once the folder's entry is on disk
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        # the temporary file's name would mean nothing to the user: the error names the file asked for
        exc.filename, exc.filename2 = str(path), None
        if exc.errno in _NO_SPACE:
            raise NoSpaceError(f"{no_space_message(exc)}; nothing was written there") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that never leaves a partial file at ``path``: temp file, fsync, rename."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # serialized in memory first: torch's zip writer reports a failed write to a file as a RuntimeError
    # of its own, which hides the OSError (a full disk) that caused it
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    _write_atomically(path, lambda f: f.write(buffer.getbuffer()))


def output_file(path: str | Path, what: str, example: str) -> Path:
    """``--out PATH`` checked before anything is built or written: a folder, or a folder that does not exist,
    is one line (``what``: the kind of file, ``example``: the name to suggest inside a folder given)."""
    path = Path(path)
    if path.is_dir():
        raise ZooError(f"--out {path}: a directory; name the {what} to write, e.g. --out {path / example}")
    if not path.parent.is_dir():
        raise ZooError(f"--out {path}: no folder {path.parent} to write it in")
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``: never half a file."""
    data = text.encode("utf-8")
    _write_atomically(Path(path), lambda f: f.write(data))


def figure_format(path: str | Path) -> str:
    """The picture format matplotlib writes for ``path``'s suffix; a ZooError naming ``path`` when it has none."""
    from matplotlib.backend_bases import FigureCanvasBase

    kind = Path(path).suffix.lower().removeprefix(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if kind not in formats:
        raise ZooError(f"{path}: cannot write a picture as '{Path(path).suffix}'; name a .png, .pdf or .svg file "
                       f"(formats: {', '.join(sorted(formats))})")
    return kind


def save_figure(fig: Any, path: str | Path, **options: Any) -> Path:
    """``fig.savefig`` that never leaves a partial picture at ``path`` (a run folder's included): drawn in
    memory, then written atomically; its folder is made if missing. Unwritable paths are a ZooError."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=figure_format(path), **options)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, lambda f: f.write(buffer.getbuffer()))
    except NoSpaceError:
        raise
    except OSError as exc:
        raise ZooError(f"{path}: cannot write: {exc.strerror or exc}") from None
    return path


def finite_or_none(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by None, the one way zoo writes them in JSON."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_or_none(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_none(value) for value in data]
    return data


def json_text(data: Any, **options: Any) -> str:
    """Strict JSON (no NaN or Infinity, which are not JSON): non-finite numbers become null."""
    return json.dumps(finite_or_none(data), allow_nan=False, **options)


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
    """Strict JSON (see :func:`json_text`) written atomically to ``path``."""
    atomic_write_text(path, json_text(data, indent=2, sort_keys=True) + "\n")


def torch_load(path: str | Path, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """``torch.load`` of a regular file of at most MAX_TENSOR_BYTES, tensors and plain containers only."""
    import torch

    with open_regular(path, MAX_TENSOR_BYTES, what) as f:
        return torch.load(f, map_location=map_location, weights_only=True)
