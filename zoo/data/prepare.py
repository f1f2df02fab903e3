"""``zoo data prepare``: an image folder as LitData chunks, for data sets too large to decode in memory.

The files are not decoded: each item is ``{"image": the file's bytes, "label": int, "path": str}``, so the
chunks hold what the folder held and the reader decides the pixels. The splits are the ``imagefolder`` data
set's for the same settings (zoo.data.image_folder_scan decides them for both), written as
``DEST/<split>/`` by ``litdata.optimize`` in worker processes, with ``DEST/zoo-data.json`` saying what
the folder holds.

Nothing is half-written: everything goes into a temporary folder beside DEST, renamed to DEST at the end
and removed on any failure or interruption (Ctrl-C, SIGTERM). ``litdata.optimize`` runs in a child
process of its own session: its SIGINT handler would end this process with status 0 on Ctrl-C, skipping
the clean-up, and its choice of start method is process-wide. The child and the workers it starts are
killed together, as one process group, when this process stops them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from zoo.core.errors import ZooError
from zoo.core.io import MAX_IMAGE_BYTES, read_bytes, write_json
from zoo.data.image_folder_scan import PARTS, Files, check_split_sizes, split_files

FORMAT = 1
INFO_FILE = "zoo-data.json"
WHO = "zoo data prepare"
# A streamed reader fetches whole chunks: 64 MB holds about 500 ImageNet-sized JPEGs (110 KB on average)
# or 50,000 CIFAR-sized ones, few enough requests per epoch for object storage and small enough for each
# loader worker to hold a couple in memory while it shuffles.
CHUNK_BYTES = "64MB"
BAD_FOLDER = ".bad-files"  # inside the temporary folder: one list per worker process of the files refused
CACHE_FOLDER = ".litdata-cache"  # litdata's scratch space, inside the temporary folder and removed with it
WRITER_FILE = ".writer-pid"  # inside the temporary folder: the process writing it, for a later run to check


@dataclass
class Prepared:
    """What ``prepare`` wrote."""

    dest: Path
    classes: list[str]
    splits: dict[str, int]  # images written per split
    skipped: int  # unreadable files left out (with skip_bad)
    bytes_written: int
    seconds: float


class ReadItem:
    """``litdata.optimize``'s function: one (path, label) of the folder as an item, its bytes unchanged.

    A file that is not a readable image is noted in this worker's list under ``bad_folder``, where the
    parent reads it (the list outlives a worker litdata kills after a failure), then skipped (returns None,
    which optimize writes nothing for) or raised. ``done`` counts the files read, for a progress bar.
    """

    def __init__(self, source: Path, bad_folder: Path, skip_bad: bool, done) -> None:
        self.source, self.bad_folder, self.skip_bad, self.done = source, bad_folder, skip_bad, done

    def __call__(self, entry: tuple[str, int]) -> dict | None:
        from zoo.data.images import check_pixels

        rel, label = entry
        path = self.source / rel
        try:
            data = read_bytes(path, MAX_IMAGE_BYTES, "image file")
            # the header alone: enough to tell an image file from a damaged or misnamed one, cheaply
            if check_pixels(data, str(path)) is None:
                raise ZooError(
                    f"{path} is not an image file Pillow can read (damaged, or another kind of file)"
                )
        except ZooError as exc:
            with open(self.bad_folder / f"{os.getpid()}.txt", "a", encoding="utf-8") as notes:
                notes.write(" ".join(str(exc).split()) + "\n")
            self._count()
            if self.skip_bad:
                return None
            raise
        self._count()
        return {"image": data, "label": label, "path": rel}

    def _count(self) -> None:
        with self.done.get_lock():
            self.done.value += 1


def check_destination(source: Path, dest: Path, overwrite: bool) -> None:
    """Refuse a DEST that exists (unless ``overwrite`` and it is a folder this command wrote), lies inside
    SOURCE or holds it, or has no folder to be written in."""
    if not source.is_dir():
        what = "a file, not a folder" if source.exists() else "not there"
        raise ZooError(f"{WHO}: SOURCE {source} is {what}; name a folder of class folders of images")
    real_source, real_dest = source.resolve(), dest.resolve()
    if real_dest == real_source or real_source in real_dest.parents:
        raise ZooError(
            f"{WHO}: DEST {dest} is inside SOURCE {source}: it would be read as a class; write it elsewhere"
        )
    if real_dest in real_source.parents:
        raise ZooError(f"{WHO}: DEST {dest} holds SOURCE {source}; write it elsewhere")
    blocked = next((p for p in dest.parents if p.exists() or p.is_symlink()), None)
    if blocked is not None and not blocked.is_dir():
        raise ZooError(f"{WHO}: DEST {dest}: {blocked} is a file, not a folder to write it in")
    if dest.exists() or dest.is_symlink():
        if not overwrite:
            raise ZooError(f"{WHO}: DEST {dest} exists; pass --overwrite to replace it")
        if not (dest / INFO_FILE).is_file() or dest.is_symlink():
            raise ZooError(
                f"{WHO}: DEST {dest} exists and is not a folder this command wrote (no {INFO_FILE}): "
                "--overwrite replaces only those; remove it yourself or write elsewhere"
            )


def prepare(
    source: str | Path,
    dest: str | Path,
    *,
    overwrite: bool = False,
    workers: int | None = None,
    skip_bad: bool = False,
    classes: list[str] | None = None,
    limit_per_class: int | None = None,
    limit_parts: tuple[str, ...] = PARTS,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> Prepared:
    """Write ``source``'s splits to ``dest`` (see the module docs); ``progress(done, total)`` is called as
    files are read. A ZooError names what was wrong, and leaves nothing behind."""
    from zoo.data.datamodule import usable_cores

    start = time.perf_counter()
    source, dest = Path(source).expanduser().absolute(), Path(dest).expanduser().absolute()
    check_destination(source, dest, overwrite)
    if not 0 < val_fraction < 1 or not 0 < test_fraction < 1:
        raise ZooError(f"{WHO}: --val-fraction and --test-fraction must be between 0 and 1")
    settings = {
        "classes": classes,
        "limit_per_class": limit_per_class,
        "limit_parts": sorted(limit_parts),
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "split_seed": split_seed,
        "skip_bad": skip_bad,
    }
    names, splits, _ = split_files(
        source, classes=classes, limit_per_class=limit_per_class, limit_parts=tuple(limit_parts),
        val_fraction=val_fraction, test_fraction=test_fraction, split_seed=split_seed, who=WHO,
        classes_key="--classes",
    )
    splits = {part: splits[part] for part in PARTS}
    workers = workers or usable_cores()

    # the folders DEST is to be in are made as needed (as mkdir -p makes them), and removed again on failure
    made = [p for p in reversed(dest.parents) if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    clear_abandoned(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's folder is private; DEST is made as any other folder
        (tmp / WRITER_FILE).write_text(str(os.getpid()))
        (tmp / BAD_FOLDER).mkdir()
        _write_in_child(source, tmp, splits, workers, skip_bad, progress)
        bad = _bad_files(tmp)
        if bad and not skip_bad:
            raise ZooError(
                f"{WHO}: {bad[0]}; remove or replace it, or pass --skip-bad to leave such files out"
            )
        written = {part: _items_in(tmp / part) for part in PARTS}
        if bad:
            check_split_sizes(source, written, [], val_fraction, test_fraction, WHO)
        shutil.rmtree(tmp / BAD_FOLDER)
        shutil.rmtree(tmp / CACHE_FOLDER, ignore_errors=True)
        (tmp / WRITER_FILE).unlink()
        info = {
            "format": FORMAT,
            "classes": names,
            "splits": written,
            "source": str(source),
            "settings": settings,
            "skipped": len(bad),
        }
        write_json(tmp / INFO_FILE, info)
        size = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
        _move_into_place(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return Prepared(dest, names, written, len(bad), size, time.perf_counter() - start)


def clear_abandoned(dest: Path) -> None:
    """Remove the temporary folders earlier preparations of ``dest`` left beside it when killed outright
    (``kill -9``, a lost machine: nothing of theirs could clean up), those whose writing process is gone.
    A folder being written by a live process, or not marked as zoo's, is left alone."""
    for folder in dest.parent.glob(f".{dest.name}.*.partial"):
        try:
            pid = int((folder / WRITER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _running(pid):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_in_child(
    source: Path, tmp: Path, splits: dict[str, Files], workers: int, skip_bad: bool,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Run ``litdata.optimize`` on each split in a child process (see the module docs), reporting progress."""
    import multiprocessing

    context = multiprocessing.get_context("fork")  # the child inherits the counter and the file lists
    done = context.Value("q", 0)
    receive, send = context.Pipe(duplex=False)
    reader = ReadItem(source, tmp / BAD_FOLDER, skip_bad, done)
    child = context.Process(target=_child, args=(tmp, splits, workers, reader, send), daemon=False)
    total = sum(len(files) for files in splits.values())
    child.start()
    send.close()
    try:
        with _sigterm_as_interrupt():
            while True:  # at least one report, and a last one with every file read
                child.join(0.2)
                if progress is not None:
                    progress(done.value, total)
                if not child.is_alive():
                    break
        failure = receive.recv() if receive.poll() else "the writing process ended without a word"
    finally:
        # the child's own workers too, whatever state they are in: nothing of theirs is kept
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        child.join()
        receive.close()
    if failure is not None and not _bad_files(tmp):
        raise ZooError(f"{WHO}: {failure}")


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler's stop) ends the writing as Ctrl-C does, so the folder is cleaned up and
    the child's processes killed rather than left writing; a SIGTERM the process was started ignoring
    (``nohup``) stays ignored, and a thread other than the main one cannot take signals at all."""
    ignored = signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    if ignored or threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _child(tmp: Path, splits: dict[str, Files], workers: int, reader: ReadItem, send) -> None:
    os.setsid()  # its own process group: killed as one, and out of reach of the terminal's Ctrl-C
    # litdata empties its scratch folders before it starts: these are this run's own
    os.environ["DATA_OPTIMIZER_CACHE_FOLDER"] = str(tmp / CACHE_FOLDER / "chunks")
    os.environ["DATA_OPTIMIZER_DATA_CACHE_FOLDER"] = str(tmp / CACHE_FOLDER / "data")
    failure = None
    try:
        from litdata import optimize

        for part, files in splits.items():
            optimize(
                fn=reader, inputs=files, output_dir=str(tmp / part), chunk_bytes=CHUNK_BYTES,
                num_workers=max(1, min(workers, len(files))), start_method="fork", verbose=False,
                # each worker writes its own slice in order: the items keep the split's order (imagefolder's)
                # whatever the number of workers, so two preparations of a folder are the same data set
                keep_data_ordered=True,
            )
    except BaseException as exc:  # noqa: BLE001 - reported by the parent, as one line
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        # a worker's traceback, which litdata passes on, ends with its error
        failure = f"writing the chunks failed: {lines[-1].strip()}"
    send.send(failure)
    send.close()


def _bad_files(tmp: Path) -> list[str]:
    """The messages of the files the workers refused, sorted."""
    folder = tmp / BAD_FOLDER
    notes = [path.read_text(encoding="utf-8") for path in folder.glob("*.txt")]
    return sorted(line for text in notes for line in text.splitlines())


def _items_in(folder: Path) -> int:
    """Items in a litdata output folder, from its index."""
    if not (folder / "index.json").exists():  # every file of the split was left out
        return 0
    index = json.loads((folder / "index.json").read_text())
    return sum(chunk["chunk_size"] for chunk in index["chunks"])


def _move_into_place(tmp: Path, dest: Path) -> None:
    """Rename the finished folder to ``dest``; a prepared folder already there (--overwrite) goes first."""
    if dest.exists():
        old = dest.with_name(f"{tmp.name}.old")
        os.rename(dest, old)
        try:
            os.rename(tmp, dest)
        except BaseException:
            os.rename(old, dest)
            raise
        shutil.rmtree(old)
    else:
        os.rename(tmp, dest)
