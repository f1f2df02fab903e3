"""The W&B run of an ensemble itself, next to its members' runs.

Members are W&B runs of their own (``<run folder>-m<i>``), trained like any run; the ensemble adds one
more run named after its run folder, in the same group (the run folder's name, unless the recipe names a
group), holding what only the combination has: its accuracy and loss on val and test, the members' table
(seed, W&B run, accuracies), the combination rule, its test confusion matrix and, with
``logger.wandb.log_model``, ``ensemble.ckpt`` as a model artifact. Its files go to the run folder's
``wandb/`` with the members' (see ``wandb_logging.wandb_home``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.core.io import atomic_write_text
from zoo.core.recipe import Recipe
from zoo.monitoring.wandb_logging import (
    RUN_ID_FILE,
    evaluation_media,
    staged_in,
    wandb_home,
    wandb_settings,
)
from zoo.monitoring.wandb_target import init_or_offline, project, resolve_mode

MEMBER_COLUMNS = ["member", "seed", "wandb_run_id", "test_acc", "val_acc"]


def log_ensemble(
    recipe: Recipe,
    run_dir: Path,
    *,
    test: dict[str, Any],
    val: dict[str, Any],
    members: list[dict[str, Any]],
    checkpoint: Path,
) -> str | None:
    """Log the ensemble's own W&B run; its id (also written to ``run_dir/wandb_run_id.txt``), or None when
    W&B is disabled. ``test`` and ``val``: ``zoo.training.evaluation.evaluate`` reports of the ensemble."""
    section = recipe.logger.wandb
    mode = resolve_mode(section.mode)
    if mode == "disabled":
        return None
    import wandb

    from zoo.monitoring.wandb_offline import run_file, wait_until_written

    run_dir = Path(run_dir).resolve()
    def init(mode: str):
        return wandb.init(
            dir=str(wandb_home(run_dir)),
            project=project(section.project),
            entity=section.entity,
            group=section.group or run_dir.name,
            job_type="ensemble",
            name=section.name or run_dir.name,
            tags=list(section.tags) or None,
            config={**recipe.to_dict(), "run": {"members": len(members), "combine": recipe.ensemble.combine}},
            settings=wandb_settings(mode),
        )

    run, mode = init_or_offline(init, mode, wandb_home(run_dir) / "wandb")
    exit_code = 1
    try:
        atomic_write_text(run_dir / RUN_ID_FILE, run.id + "\n")
        table = wandb.Table(
            columns=MEMBER_COLUMNS, data=[[m.get(c) for c in MEMBER_COLUMNS] for m in members]
        )
        classes = test.get("classes") or [str(i) for i in range(len(test["confusion"]))]
        with staged_in(run_dir):  # logged tables become artifacts, staged as they are logged
            media = evaluation_media(test, classes, f"test confusion matrix of {run.name}")
            run.log({"ensemble/members": table, **media})
        mean_member = sum(m["test_acc"] for m in members) / len(members)
        run.summary.update(
            {
                "test/acc": test["acc"],
                "test/loss": test["nll"],
                "val/acc": val["acc"],
                "val/loss": val["nll"],
                **{f"test/{m}": test[m] for m in ("macro_f1", "top5_acc", "roc_auc", "pr_auc")},
                "test/mean_member_acc": mean_member,
                "test/best_member_acc": max(m["test_acc"] for m in members),
                "ensemble/combine": recipe.ensemble.combine,
            }
        )
        if section.log_model and checkpoint.is_file():
            artifact = wandb.Artifact(
                f"model-{run.id}",
                type="model",
                description=f"the ensemble {run.name}",
                metadata={"members": len(members), "combine": recipe.ensemble.combine},
            )
            with staged_in(run_dir):
                artifact.add_file(str(checkpoint), name=checkpoint.name, policy="immutable")
                run.log_artifact(artifact, aliases=["latest", "best"])
        exit_code = 0
    finally:
        folder = Path(run.dir).parent
        run.finish(exit_code=exit_code)
        if mode == "offline":
            wait_until_written(run_file(folder), timeout=15)
    return run.id
