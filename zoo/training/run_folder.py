"""Run folders: where each run writes, how an existing one is replaced, and how a refused one is removed."""

from __future__ import annotations

import os
import secrets
import shutil
from datetime import datetime
from pathlib import Path

from zoo.core.errors import ZooError
from zoo.core.recipe import Recipe

RUNS_DIR = Path("runs")
RUN_DIR_ENV = "ZOO_RUN_DIR"


def new_run_dir(name: str, root: Path = RUNS_DIR) -> Path:
    """A fresh directory under ``root``: time-stamped, with a random suffix so parallel runs never share one."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = root / f"{name}-{stamp}-{secrets.token_hex(2)}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def claim_run_dir(run_dir: str | Path | None, name: str, overwrite: bool) -> tuple[Path, Path | None]:
    """The run's folder, new or empty, and where an overwritten run's old contents wait (or None).

    The old contents move to a hidden sibling rather than being deleted: the caller drops them once the
    new run has trained (``settle_replaced``), or puts them back if it was refused before training.
    """
    if run_dir is None:
        return new_run_dir(name), None
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise ZooError(f"--run-dir {path}: a file is in the way (not a directory); name another folder")
    aside = None
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise ZooError(
                f"run directory {path} already exists; continue it with --resume {path}, "
                "or replace it with --overwrite"
            )
        aside = path.with_name(f".{path.name}.replaced-{secrets.token_hex(3)}")
        os.replace(path, aside)
    path.mkdir(parents=True, exist_ok=True)
    return path, aside


def settle_replaced(path: Path, aside: Path | None, started: bool) -> None:
    """After --overwrite: drop the old run once the new one trained, or put it back if it never started."""
    if aside is None:
        return
    if started:
        shutil.rmtree(aside, ignore_errors=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
        os.replace(aside, path)


def discard_run_dir(path: Path) -> None:
    """Remove a run folder nothing ran in, and the runs/ folder too if that leaves it empty."""
    shutil.rmtree(path, ignore_errors=True)
    if path.parent == RUNS_DIR:
        try:
            path.parent.rmdir()
        except OSError:
            pass  # other runs live there


def write_recipe(recipe: Recipe, path: Path) -> None:
    (path / "recipe.yaml").write_text(
        f"# resolved from {recipe.source}; run again with: zoo train {path / 'recipe.yaml'}\n" + recipe.to_yaml()
    )
