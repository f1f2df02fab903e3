"""Run folders: where each run writes, who may write there, and how one is replaced or removed.

* A run folder carries a marker file, ``.zoo-run`` (folders from before it by their ``recipe.yaml`` header);
  ``--overwrite`` replaces only such a folder, never any other directory.
* While a process writes a run folder it holds ``.zoo-lock`` inside it: an exclusive ``flock`` on the file,
  which also names the holder (pid, host, start). A second ``zoo train --run-dir`` of the same folder, or a
  ``--resume`` of a run still going, is refused naming the holder. The kernel drops the lock when its process
  dies, however it dies, so a lock file left by ``kill -9`` is stale and taken over; where the file system
  has no ``flock``, the pid and host decide (a pid no longer running on this host is stale).
* ``--overwrite`` moves the old run's files into a hidden sibling, ``.NAME.replaced-XXXXXX``, and the new
  run's marker records it. The old run is deleted once the new one can be resumed (its first ``last.ckpt``)
  or finished, and put back on any failure before that. A process killed in between leaves the marker
  saying so: the next zoo command that takes the folder's lock finishes the job either way
  (:meth:`RunFolder.recover`).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from zoo.core.errors import ZooError
from zoo.core.io import MAX_TEXT_BYTES, atomic_write_text, open_regular, read_text
from zoo.core.recipe import RUN_MARKER, Recipe

RUNS_DIR = Path("runs")
RUN_DIR_ENV = "ZOO_RUN_DIR"
MARKER = RUN_MARKER
LOCK_FILE = ".zoo-lock"
RECIPE_HEADER = "# resolved from "
# written by zoo itself, not by the run: a folder holding only these has no run in it yet
_BOOKKEEPING = {MARKER, LOCK_FILE}


def new_run_dir(name: str, root: Path = RUNS_DIR) -> Path:
    """A fresh directory under ``root``: time-stamped, with a random suffix so parallel runs never share one."""
    path = new_run_path(name, root)
    path.mkdir(parents=True, exist_ok=False)
    return path


def new_run_path(name: str, root: Path = RUNS_DIR) -> Path:
    """Where a new run named ``name`` goes (not created yet)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / f"{name}-{stamp}-{secrets.token_hex(2)}"


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a folder zoo made for a run (its marker, or the header zoo writes on recipe.yaml)."""
    if (path / MARKER).is_file():
        return True
    try:
        with open_regular(path / "recipe.yaml", MAX_TEXT_BYTES, "recipe") as f:  # a named pipe would block
            return f.read(len(RECIPE_HEADER)) == RECIPE_HEADER.encode()
    except ZooError:
        return False


def run_files(path: Path) -> list[Path]:
    """What a folder holds besides zoo's lock and marker."""
    try:
        return sorted(p for p in path.iterdir() if p.name not in _BOOKKEEPING)
    except (FileNotFoundError, NotADirectoryError):
        return []


@dataclass(frozen=True)
class Wording:
    """How a command's messages name its folder: the option that names it, the command that continues it,
    and what it is. A sweep's folder (zoo.tools.sweep_folder) follows a run folder's rules in its own words."""

    option: str = "--run-dir"
    resume: str = "--resume"
    name: str = "run directory"


RUN = Wording()


def _os_error(path: Path, exc: OSError, words: Wording = RUN) -> ZooError:
    return ZooError(f"{words.option} {path}: cannot write there: {exc.strerror or exc}")


def check_target(path: Path, overwrite: bool, locked: bool = False, words: Wording = RUN) -> None:
    """Refuse a --run-dir that zoo may not write into, before anything is built or written (and again once
    ``locked``: then this process holds the folder's lock)."""
    option = words.option
    if path.exists() and not path.is_dir():
        raise ZooError(f"{option} {path}: a file is in the way (not a directory); name another folder")
    if not run_files(path):
        return
    if not is_run_folder(path):
        raise ZooError(
            f"{option} {path}: not a zoo run folder, and not empty; zoo writes runs only into an empty folder "
            "or replaces (--overwrite) a run folder: name another folder"
        )
    holder = None if locked else RunLock.holder(path)
    if holder is not None:
        raise ZooError(f"{words.name} {path} is in use by {holder}; wait for that run to end, or stop it first")
    if not overwrite:
        raise ZooError(
            f"{words.name} {path} already exists; continue it with {words.resume} {path}, or replace it with --overwrite"
        )


# --- the lock ------------------------------------------------------------------------------------------
def _process_start(pid: int) -> str | None:
    """When ``pid`` started, in the kernel's clock ticks (Linux), to tell a reused pid from the original."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command's closing parenthesis


def _alive(info: dict[str, Any]) -> bool:
    """Whether the process a lock file names is still running (on another host: assumed so)."""
    if info.get("host") != socket.gethostname():
        return True
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    started = info.get("process_start")
    return started is None or _process_start(pid) in (None, started)


def _describe(info: dict[str, Any]) -> str:
    if not info.get("pid"):  # locked a moment ago, its details not written yet
        return "another zoo process, which is starting"
    return (
        f"zoo (pid {info.get('pid')} on {info.get('host')}, since {info.get('since')}: "
        f"{str(info.get('command', ''))[:120]})"
    )


class RunLock:
    """The exclusive right to write one run folder, held by this process until :meth:`release`."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder, self._fd = folder, fd

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        try:
            info = json.loads(read_text(path, MAX_TEXT_BYTES))
        except (ZooError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    @classmethod
    def holder(cls, folder: Path) -> str | None:
        """Who holds ``folder``'s lock, described, or None when nobody (alive) does."""
        path = folder / LOCK_FILE
        if not path.is_file():
            return None
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe(cls._read(path))
        except (ImportError, OSError):  # no flock here: the pid and host decide
            info = cls._read(path)
            return _describe(info) if info and _alive(info) else None
        finally:
            os.close(fd)
        return None

    @classmethod
    def acquire(cls, folder: Path) -> RunLock:
        """Lock ``folder`` (which exists) for this process, or raise a ZooError naming who holds it."""
        path = folder / LOCK_FILE
        for _ in range(5):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise _os_error(folder, exc) from None
            if cls._lock(fd, path):
                # the holder before us may have deleted the file between our open and our lock: then the
                # lock is on a file nobody else will open, so try again with the file now at that path
                try:
                    same = os.fstat(fd).st_ino == os.stat(path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    lock = cls(folder, fd)
                    lock._write()
                    return lock
            os.close(fd)
        raise ZooError(f"run directory {folder}: could not take its lock ({path}); try again")

    @classmethod
    def _lock(cls, fd: int, path: Path) -> bool:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            os.close(fd)
            raise ZooError(
                f"run directory {path.parent} is in use by {_describe(cls._read(path))}; "
                "wait for that run to end, or stop it first"
            ) from None
        except (ImportError, OSError):
            info = cls._read(path)
            if info and info.get("pid") != os.getpid() and _alive(info):
                os.close(fd)
                hint = "" if info.get("host") == socket.gethostname() else f"; if it is not running, delete {path}"
                raise ZooError(f"run directory {path.parent} is in use by {_describe(info)}{hint}") from None
            return True

    def _write(self) -> None:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "process_start": _process_start(os.getpid()),
            "since": datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(["zoo", *sys.argv[1:]]),
        }
        data = (json.dumps(info) + "\n").encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd < 0:
            return
        try:
            (self.folder / LOCK_FILE).unlink(missing_ok=True)
        except OSError:
            pass  # the folder is gone or read-only: the lock goes with the process anyway
        os.close(self._fd)
        self._fd = -1


# --- claiming, replacing, removing ---------------------------------------------------------------------
@dataclass
class RunFolder:
    """A run folder this process holds the lock of, and what to do with it when the run ends."""

    path: Path
    lock: RunLock
    created: Path | None = None  # the folder did not exist before: the topmost folder this run made
    aside: Path | None = None  # the run --overwrite replaced, kept until the new one can be resumed
    fresh: bool = True  # a new run (False: a resumed one, whose files are never removed)

    @classmethod
    def claim(cls, path: Path, overwrite: bool, words: Wording = RUN) -> RunFolder:
        """Lock ``path`` for a new run, creating it, or replacing the run in it when ``overwrite``."""
        top = None
        if not path.is_dir():
            top = path
            while not top.parent.exists() and top.parent != top:
                top = top.parent
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error(path, exc, words) from None
        try:
            lock = RunLock.acquire(path)
        except BaseException:
            # a run started at the same moment may have made the folder too and locked it first: it is that
            # run's now, not ours to remove
            if top is not None and RunLock.holder(path) is None:
                discard_run_dir(path, top)
            raise
        folder = cls(path, lock, created=top)
        try:
            folder.recover()
            check_target(path, overwrite, locked=True, words=words)  # again: another run may have written here meanwhile
            if run_files(path):
                replaced = contents(path)
                folder.aside = folder._set_aside()
                if replaced:  # a run stopped before its first checkpoint loses nothing worth naming
                    print(f"zoo: --overwrite {path}: replacing the run it held ({replaced}); deleted once the new "
                          "run has a checkpoint or finishes, put back if it fails before", file=sys.stderr)
            folder._write_marker()
        except BaseException:
            folder.abandon()
            raise
        return folder

    @classmethod
    def reopen(cls, path: Path) -> RunFolder:
        """Lock an existing run folder to resume it."""
        folder = cls(path, RunLock.acquire(path), fresh=False)
        try:
            folder.recover()
            remove_stale_temp_files(path)
        except BaseException:
            folder.lock.release()
            raise
        return folder

    def _marker(self) -> dict[str, Any]:
        return read_marker(self.path)

    def _write_marker(self) -> None:
        from zoo.training.slurm import batch_job

        data: dict[str, Any] = {"format": 1, "created": datetime.now().isoformat(timespec="seconds")}
        job = batch_job()
        if job is not None:
            data["slurm_job"] = job  # a requeue of this job goes on with this run (requeued_run)
        if self.aside is not None:
            data["replaces"] = self.aside.name
        try:
            atomic_write_text(self.path / MARKER, json.dumps(data) + "\n")
        except OSError as exc:
            raise _os_error(self.path, exc) from None

    def _set_aside(self) -> Path:
        aside = self.path.with_name(f".{self.path.name}.replaced-{secrets.token_hex(3)}")
        moved: list[Path] = []
        try:
            aside.mkdir()
            for item in run_files(self.path) + [self.path / MARKER]:
                if item.exists():
                    os.rename(item, aside / item.name)
                    moved.append(item)
        except OSError as exc:
            for item in moved:
                os.rename(aside / item.name, item)
            shutil.rmtree(aside, ignore_errors=True)
            raise _os_error(self.path, exc) from None
        return aside

    def recover(self) -> None:
        """Finish an --overwrite that a killed process left half done: drop the old run, or put it back."""
        name = self._marker().get("replaces")
        aside = self.path.parent / name if isinstance(name, str) and "/" not in name else None
        if aside is None or not aside.is_dir():
            return
        if resumable(self.path):
            shutil.rmtree(aside, ignore_errors=True)
            self._clear_replaces()
        else:
            self._put_back(aside)
            print(f"zoo: {self.path}: put back the run that an interrupted --overwrite had set aside", file=sys.stderr)

    def _clear_replaces(self) -> None:
        marker = self._marker()
        if marker.pop("replaces", None) is not None:
            atomic_write_text(self.path / MARKER, json.dumps(marker) + "\n")

    def _put_back(self, aside: Path) -> None:
        for item in run_files(self.path) + [self.path / MARKER]:
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)
            elif item.exists() or item.is_symlink():
                item.unlink()
        for item in sorted(aside.iterdir()):
            os.rename(item, self.path / item.name)
        aside.rmdir()

    def settle(self) -> None:
        """The new run can be resumed or has finished: the run it replaced goes for good."""
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)
            self.aside = None
            self._clear_replaces()

    def abandon(self) -> None:
        """The run failed before it could be resumed: remove what it wrote, put back what it replaced."""
        if self.fresh:
            if self.aside is not None:
                self._put_back(self.aside)
                self.aside = None
            elif self.created is not None:
                self.lock.release()
                discard_run_dir(self.path, self.created)
            else:  # a folder that was there, empty, before: leave it as it was
                for item in run_files(self.path) + [self.path / MARKER]:
                    shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
        self.lock.release()

    def end(self, ok: bool) -> bool:
        """The run is over: keep it (finished, or resumable) or :meth:`abandon` it, releasing the lock either
        way. Whether the run was kept."""
        if ok or not self.fresh or resumable(self.path):
            self.settle()
            self.lock.release()
            return True
        self.abandon()
        return False


def read_marker(path: Path) -> dict[str, Any]:
    """What a run folder's ``.zoo-run`` marker records ({} when there is none, or it is unreadable)."""
    try:
        data = json.loads(read_text(path / MARKER, MAX_TEXT_BYTES))
    except (ZooError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def requeued_run(path: Path) -> str | None:
    """The SLURM job this process runs in, when that job started the run in ``path`` and the run can go on
    (stopped, not finished): the job was requeued and runs its ``zoo train --run-dir`` again. None otherwise."""
    job = started_by_this_job(path)
    if job is None or finished(path) or not resumable(path):
        return None
    return job


def started_by_this_job(path: Path) -> str | None:
    """The SLURM batch job this process runs in, when its ``.zoo-run`` marker says that job claimed ``path``."""
    from zoo.training.slurm import batch_job

    job = batch_job()
    return job if job is not None and read_marker(path).get("slurm_job") == job else None


def plugin_flags(recipe_file: Path) -> str:
    """`` --plugin P`` for each plugin a run's recipe.yaml lists: what resuming it takes, since a resumed run
    imports them only when asked to (zoo.core.recipe.load)."""
    import shlex

    from zoo.core.recipe import load_yaml

    try:
        plugins = (load_yaml(recipe_file.read_text(encoding="utf-8")) or {}).get("plugins") or []
    except Exception:  # noqa: BLE001 - a hint in a message: an unreadable recipe just gives none
        return ""
    return "".join(f" --plugin {shlex.quote(p)}" for p in plugins if isinstance(p, str))


def resume_command(path: Path) -> str:
    """The command that continues the stopped run in ``path``."""
    import shlex

    return f"zoo train --resume {shlex.quote(str(path))}{plugin_flags(Path(path) / 'recipe.yaml')}"


def resumable(path: Path) -> bool:
    """Whether the run in ``path`` can go on with --resume: its last checkpoint is there (a single model's, a
    snapshot ensemble's), or an ensemble member has finished or has a last checkpoint of its own."""
    return (path / "checkpoints" / "last.ckpt").is_file() or any(
        finished(member) or (member / "checkpoints" / "last.ckpt").is_file() for member in member_folders(path)
    )


def finished(path: Path) -> bool:
    """Whether the run (or ensemble member) in ``path`` finished: its metrics.json is written last."""
    return (path / "metrics.json").is_file()


def member_folders(path: Path) -> list[Path]:
    """An ensemble's member folders, ``members/m<i>``, in member order."""
    found = [p for p in (path / "members").glob("m*") if p.is_dir() and p.name[1:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[1:]))


def contents(path: Path) -> str:
    """What a run folder holds that only training again would bring back, in words ('' when nothing)."""
    held = []
    if finished(path):
        held.append("a finished run (metrics.json)")
    if (path / "checkpoints").is_dir():
        held += [f"checkpoints/{p.name}" for p in sorted((path / "checkpoints").glob("*.ckpt"))]
    snapshots = sorted((path / "snapshots").glob("*.ckpt"))
    if snapshots:
        held.append(f"{len(snapshots)} snapshot{'s' if len(snapshots) > 1 else ''}")
    members = member_folders(path)
    done = [m.name for m in members if finished(m)]
    begun = [m.name for m in members if not finished(m) and (m / "checkpoints" / "last.ckpt").is_file()]
    if done:
        held.append(f"finished member{'s' if len(done) > 1 else ''} {', '.join(done)}")
    if begun:
        held.append(f"the checkpoint{'s' if len(begun) > 1 else ''} of member{'s' if len(begun) > 1 else ''} "
                    f"{', '.join(begun)}")
    return "; ".join(held)


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Temporary files a killed writer left (a checkpoint or JSON written to a temp name, then renamed).

    Called under the folder's lock, so no live process is writing them.
    """
    stale = [p for folder in (path, path / "checkpoints", path / "logs") if folder.is_dir()
             for p in folder.glob(".*.tmp")]
    stale += list(path.glob("*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def discard_run_dir(path: Path, up_to: Path | None = None) -> None:
    """Remove a run folder nothing ran in, and the folders above it up to ``up_to`` (runs/ by default)
    that this leaves empty."""
    shutil.rmtree(path, ignore_errors=True)
    top = up_to if up_to is not None else (RUNS_DIR if path.parent == RUNS_DIR else path)
    folder = path.parent
    while path != top and folder.is_relative_to(top):
        try:
            folder.rmdir()
        except OSError:
            break  # other runs live there
        if folder == top:
            break
        folder = folder.parent


def write_recipe(recipe: Recipe, path: Path) -> None:
    try:
        # whole or not at all: --resume and eval read it back
        atomic_write_text(
            path / "recipe.yaml",
            f"{RECIPE_HEADER}{recipe.source}; run again with: zoo train {path / 'recipe.yaml'}\n" + recipe.to_yaml(),
        )
    except OSError as exc:
        raise _os_error(path, exc) from None
