"""A sweep's folder: claimed, locked and removed by the rules of a run folder (zoo.training.run_folder),
plus ``sweep.json``, the record that lets a stopped sweep go on.

The record holds the sweep as it was read (every key, the base recipe's resolved path), the Optuna storage
that holds its trials (``storage``: by default ``study.db`` in the folder) and its studies' names.
``zoo sweep --resume DIR`` reads the sweep file again from where it was, refuses it if it changed, and goes
on with the studies: finished trials are kept, the trials it left running go on from their checkpoints
(zoo.tools.sweep_study), the rest run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.core.errors import ZooError
from zoo.core.io import read_text, write_json
from zoo.tools.sweep_spec import described, study_name
from zoo.training.run_folder import RUNS_DIR, RunFolder, Wording, check_target, new_run_path, started_by_this_job

if TYPE_CHECKING:
    from zoo.tools.sweep_spec import SweepSpec

RECORD = "sweep.json"
WORDS = Wording(option="--sweep-dir", resume="zoo sweep --resume", name="sweep folder")


STUDY_FILE = "study.db"  # the default storage of the sweep's trials


def default_storage(folder: Path) -> str:
    return f"sqlite:///{Path(folder).resolve() / STUDY_FILE}"


def claim(spec: SweepSpec, sweep_dir: str | Path | None, overwrite: bool, storage: str | None = None) -> RunFolder:
    """A new sweep's folder, locked (``sweep_dir``, or a fresh one under runs/<name>/), with its record.
    ``storage``: the Optuna storage URL of its trials (None: SQLite in the folder)."""

    path = Path(sweep_dir) if sweep_dir is not None else new_run_path(spec.name, RUNS_DIR / spec.name)
    if sweep_dir is not None:
        check_target(path, overwrite, words=WORDS)
    folder = RunFolder.claim(path, overwrite, words=WORDS)
    folder.can_resume = False  # what keeps a stopped sweep is its trials (see :func:`keep_if_started`)
    try:
        write_json(path / RECORD, {"sweep_file": str(Path(spec.path).resolve()), "sweep": described(spec),
                                   "storage": storage or default_storage(path),
                                   "studies": [study_name(spec, stage) for stage in range(spec.stages)]})
    except BaseException:
        folder.abandon()
        raise
    return folder


def read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(read_text(path / RECORD))
    except (OSError, ValueError):
        record = None
    if not (isinstance(record, dict) and isinstance(record.get("sweep_file"), str)):
        raise ZooError(f"--resume {path}: not a sweep folder (no readable {RECORD} in it)")
    return record


def check_same(path: Path, record: dict[str, Any], spec: SweepSpec) -> None:
    """Refuse to go on with a sweep file that no longer says what the stopped sweep ran."""
    before, now = record.get("sweep"), described(spec)
    if before != now:
        changed = sorted(k for k in set(before or {}) | set(now) if (before or {}).get(k) != now.get(k))
        raise ZooError(
            f"--resume {path}: {record['sweep_file']} changed since the sweep started ({', '.join(changed)}); "
            f"undo the edit, or start the edited sweep in a new folder"
        )


def requeued_sweep(path: Path, spec: SweepSpec, storage: str | None, log: Callable[[str], None]) -> bool:
    """Whether ``zoo sweep SPEC --sweep-dir PATH`` is a requeued SLURM job running its command again, to go on
    with the sweep it started there (not finished); the same sweep file and storage, or refused."""
    job = started_by_this_job(path)
    if job is None or (path / "results.json").is_file() or not (path / RECORD).is_file():
        return False
    record = read_record(path)
    check_same(path, record, spec)
    if storage is not None and storage != storage_of(path):
        raise ZooError(f"--storage {storage}: SLURM job {job} started the sweep in {path} on {storage_of(path)}; "
                       f"its requeue goes on only with that storage")
    log(f"zoo: {path}: started by this SLURM job ({job}), which was requeued: going on with its trials")
    return True


def reopen(path: Path) -> RunFolder:
    """A stopped sweep's folder, locked again (refused while another process runs it)."""
    return RunFolder.reopen(path)


def storage_of(path: Path) -> str:
    """The Optuna storage URL that holds the sweep's trials."""
    storage = read_record(path).get("storage")
    return storage if isinstance(storage, str) else default_storage(path)


def keep_if_started(folder: RunFolder) -> None:
    """A sweep that fails or is stopped keeps its folder once a trial finished or can be resumed, so it can go
    on; before that the folder goes, as a refused run's does."""
    started = any(p.is_dir() for p in folder.path.glob("s*-t*"))
    if started:
        folder.fresh = False
