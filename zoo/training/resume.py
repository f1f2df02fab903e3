"""Going on with a stopped run: which checkpoint, trained with which recipe, and the logs trimmed to it.

A stopped run folder resumes from its ``checkpoints/last.ckpt`` with the folder's own recipe, which must be
the one the checkpoint was trained with; metrics.csv is cut back to the rows logged before the checkpoint
(the resumed run logs the rest again) and the run's W&B id is read so the same W&B run goes on. Single runs
(zoo.training.run) and ensemble members (zoo.training.ensemble_training) both go on through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.core.errors import ZooError, brief
from zoo.core.recipe import Recipe, load
from zoo.training.checkpoints import seconds_so_far
from zoo.training.fit import LAST_CHECKPOINT


def load_unfinished(path: Path) -> Recipe:
    """The recipe of a run folder that has not finished; a clear error for a finished one."""
    if (path / "metrics.json").is_file():
        raise ZooError(f"--resume {path}: that run finished (see its metrics.json); there is nothing to resume")
    return load(path / "recipe.yaml")


def resume_point(path: Path) -> tuple[Recipe, Path, int, float, int | None]:
    """The recipe, checkpoint and step a stopped run folder goes on from, the seconds its sittings took to
    that checkpoint and the rows of metrics.csv logged before it; a clear error when it cannot."""
    resolved = load_unfinished(path)
    if resolved.ensemble is not None:
        raise ZooError(f"--resume {path}: an ensemble goes on member by member, not from one checkpoint")
    ckpt, step, seconds, rows = checkpoint_to_resume(path, resolved)
    return resolved, ckpt, step, seconds, rows


def checkpoint_to_resume(
    path: Path, resolved: Recipe, run: Path | None = None, ignored: tuple[str, ...] = ()
) -> tuple[Path, int, float, int | None]:
    """The ``last.ckpt`` of the run in ``path``, checked to have been trained with ``resolved``; its step, the
    seconds its sittings took to it and the rows of metrics.csv logged before it. ``run``: the folder whose
    recipe.yaml ``resolved`` comes from (an ensemble's, for a member); ``ignored``: recipe keys that may
    differ (see :func:`refuse_edited_recipe`)."""
    from zoo.training.checkpoints import metrics_rows
    from zoo.training.evaluation import safe_load

    ckpt = path / "checkpoints" / LAST_CHECKPOINT
    if not ckpt.is_file():
        raise ZooError(
            f"--resume {path}: no checkpoints/{LAST_CHECKPOINT} (the run stopped before its first checkpoint); "
            f"start it again with: zoo train {path / 'recipe.yaml'} --run-dir {path} --overwrite"
        )
    state = safe_load(ckpt)
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        raise ZooError(f"{ckpt}: not a zoo training checkpoint (no global_step)")
    refuse_edited_recipe(state, resolved, run or path, ignored)
    return ckpt, state["global_step"], seconds_so_far(state), metrics_rows(state)


def refuse_edited_recipe(state: dict[str, Any], resolved: Recipe, run: Path, ignored: tuple[str, ...] = ()) -> None:
    """A clear error when checkpoint ``state`` was trained with another recipe than ``resolved``, which
    comes from ``run``'s recipe.yaml; keys in ``ignored`` (an ensemble's W&B names, which follow its
    folder's name) may differ."""
    trained = (state.get("hyper_parameters") or {}).get("recipe")
    if not isinstance(trained, dict):
        return
    changed = [c for c in recipe_changes(trained, resolved.to_dict()) if c.split(":", 1)[0] not in ignored]
    if changed:
        raise ZooError(
            f"--resume {run}: recipe.yaml is not the recipe its checkpoint was trained with "
            f"({'; '.join(changed[:3])}{'; ...' if len(changed) > 3 else ''}); a resumed run goes on "
            f"with its own recipe: undo the edit, or train the edited recipe as a new run: "
            f"zoo train {run / 'recipe.yaml'} --run-dir NEW_FOLDER"
        )


def recipe_changes(before: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: old -> new`` for every value that differs (keys only ``now`` has are a newer zoo's defaults)."""
    changes = []
    for key in sorted(set(before) | set(now), key=str):
        where = f"{prefix}{key}"
        if key not in before:
            continue
        old, new = before[key], now.get(key, "(removed)")
        if key == "name" and isinstance(old, str) and ":" not in old and str(new).endswith(f":{old}"):
            continue  # the same component, qualified because another plugin now holds its name too
        if isinstance(old, dict) and isinstance(new, dict):
            changes += recipe_changes(old, new, f"{where}.")
        elif old != new:
            changes.append(f"{where}: {brief(old)} -> {brief(new)}")
    return changes


def prepare_resume(path: Path, step: int, rows: int | None) -> str | None:
    """Trim the metrics a stopped run logged after its checkpoint (the replay logs them again); its W&B id."""
    from zoo.monitoring.wandb_logging import read_run_id
    from zoo.training.checkpoints import trim_metrics_csv

    trim_metrics_csv(path / "logs" / "metrics.csv", step, rows)
    return read_run_id(path)
