"""Weights & Biases for a run: the Lightning logger (rank 0 only) and a callback for the extras.

``wandb_logger(recipe, run_dir)`` reads the recipe's ``logger.wandb`` section. Mode ``auto`` is online
when an API key is configured (``WANDB_API_KEY``, or a netrc login for the W&B host; checked locally,
without network) and offline otherwise; ``disabled`` gives no logger at all. The run's files go to
``run_dir/wandb/``, its config is the whole resolved recipe (nested, so W&B shows its sections), and its id
is written to ``run_dir/wandb_run_id.txt`` so a resumed job can continue the same run (``resume_id``).

Lightning's ``WandbLogger.experiment`` is wrapped in ``rank_zero_experiment``: on any other global rank it
returns a dummy and never calls ``wandb.init``; every logging method is ``rank_zero_only`` too. The logger
here relies on that and adds nothing that runs on other ranks; ``WandbExtras`` checks
``trainer.is_global_zero`` before touching the run.
"""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from zoo.core.recipe import Recipe

RUN_ID_FILE = "wandb_run_id.txt"
DEFAULT_HOST = "https://api.wandb.ai"


def api_key_configured() -> bool:
    """Whether W&B has credentials here: WANDB_API_KEY, or a netrc entry for its host. No network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", DEFAULT_HOST)).hostname or "api.wandb.ai"
    candidates = [os.environ.get("NETRC")] if os.environ.get("NETRC") else []
    candidates += [str(Path.home() / ".netrc"), str(Path.home() / "_netrc")]
    for file in candidates:
        if file and Path(file).is_file():
            try:
                auth = netrc.netrc(file).authenticators(host)
            except (netrc.NetrcParseError, OSError):
                continue
            if auth and auth[2]:
                return True
    return False


def resolve_mode(mode: str) -> str:
    """online, offline or disabled; ``auto`` is online only with an API key. WANDB_MODE=disabled wins."""
    if os.environ.get("WANDB_MODE") in ("disabled", "off"):
        return "disabled"
    if mode == "auto":
        return "online" if api_key_configured() else "offline"
    return mode


def read_run_id(run_dir: str | Path) -> str | None:
    """The W&B run id a run folder recorded, to resume that run."""
    path = Path(run_dir) / RUN_ID_FILE
    return (path.read_text().strip() or None) if path.is_file() else None


def _settings(mode: str):
    import wandb

    return wandb.Settings(
        mode=mode,  # online or offline (ZooWandbLogger keeps its own `mode` argument for itself)
        silent=True,  # no banner, no "syncing" lines: the one line that matters is printed below
        quiet=True,
        console="off" if mode == "offline" else "auto",  # offline: stdout stays ours (no capture wrapper)
        # system metrics (CPU, memory, disk, network, GPUs) and the environment record stay on, offline too:
        # turning them off (x_disable_machine_info) saved no measurable start-up time
        save_code=False,
        init_timeout=120,
    )


class ZooWandbLogger(WandbLogger):
    """WandbLogger whose config is the resolved recipe alone and which, once the run exists (rank 0 only),
    records its id in the run folder and, offline, says how to upload it."""

    def __init__(self, *args: Any, run_dir: Path, mode: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wandb_init.pop("anonymous", None)  # wandb 0.31 warns about it even when None
        self.run_dir = Path(run_dir)
        self.mode = mode
        self._announced = False

    @property
    def experiment(self):
        run = super().experiment  # rank_zero_experiment: a dummy, and no wandb.init, off rank 0
        if not self._announced and self._experiment is not None and rank_zero_only.rank == 0:
            self._announced = True
            (self.run_dir / RUN_ID_FILE).write_text(run.id + "\n")
            if self.mode == "offline":
                folder = Path(run.dir).resolve().parent  # run.dir is <offline-run-...>/files
                print(f"wandb: offline run {run.id} in {folder}; upload it with: wandb sync {folder}", file=sys.stderr)
        return run

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        # The config already is the full resolved recipe (set at wandb.init); the module's hparams would
        # only repeat it under "recipe" next to input_shape and num_classes.
        return None

    @rank_zero_only
    def finish(self, exit_code: int = 0) -> None:
        """Close the run (flushes the offline file); Lightning leaves that to interpreter exit."""
        run = self._experiment
        if run is None:
            return
        folder = Path(run.dir).parent
        run.finish(exit_code=exit_code)
        self._experiment = None
        if self.mode == "offline":
            # wandb-core writes the file's tail after finish() returns; wait so the run is complete on disk
            from zoo.monitoring.wandb_offline import run_file, wait_until_written

            try:
                wait_until_written(run_file(folder), timeout=15)
            except FileNotFoundError:
                pass


def wandb_logger(recipe: Recipe, run_dir: str | Path, resume_id: str | None = None) -> ZooWandbLogger | None:
    """The W&B logger of a run, or None when ``logger.wandb.mode`` is disabled. The run itself is created
    lazily by Lightning, on global rank 0 only."""
    section = recipe.logger.wandb
    mode = resolve_mode(section.mode)
    if mode == "disabled":
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    run_dir = Path(run_dir).resolve()  # wandb's service process may run in another directory
    kwargs: dict[str, Any] = dict(
        run_dir=run_dir,
        mode=mode,
        name=section.name or run_dir.name,
        save_dir=str(run_dir),
        project=section.project,
        entity=section.entity,
        group=section.group,
        tags=list(section.tags) or None,
        config=recipe.to_dict(),
        settings=_settings(mode),
    )
    if resume_id:
        kwargs.update(id=resume_id, resume="allow")
    return ZooWandbLogger(**kwargs)


def finish_wandb(trainer_or_logger: Any, exit_code: int = 0) -> None:
    """Finish the W&B run of a trainer (or a logger): call after its last fit/validate/test."""
    loggers = getattr(trainer_or_logger, "loggers", None)
    for logger in loggers if loggers is not None else [trainer_or_logger]:
        if isinstance(logger, ZooWandbLogger):
            logger.finish(exit_code)


def _wandb_loggers(trainer: L.Trainer) -> list[WandbLogger]:
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


class WandbExtras(L.Callback):
    """What W&B gets besides the logged metrics: the recipe file as an artifact and the augmentation grid at
    fit start; at test end a confusion matrix, per-class precision and recall, and the final metrics in the
    run summary. Does nothing without a WandbLogger, and nothing off global rank 0."""

    def __init__(self, recipe: Recipe, run_dir: str | Path, grid: bool = True) -> None:
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.grid = grid
        self._fit_logged = False
        self.final: dict[str, float] = {}

    def _run(self, trainer: L.Trainer):
        if not trainer.is_global_zero:
            return None
        loggers = _wandb_loggers(trainer)
        return loggers[0].experiment if loggers else None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # a resumed run reads this to continue the same W&B run rather than start a second one
        loggers = _wandb_loggers(trainer)
        if loggers and loggers[0]._experiment is not None:
            checkpoint["wandb_run_id"] = loggers[0]._experiment.id

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run = self._run(trainer)
        if run is None or self._fit_logged:
            return
        self._fit_logged = True
        import wandb

        recipe_file = self.run_dir / "recipe.yaml"
        if recipe_file.is_file():
            artifact = wandb.Artifact(f"recipe-{run.id}", type="recipe", description=f"resolved recipe of {run.name}")
            artifact.add_file(str(recipe_file), name="recipe.yaml")
            run.log_artifact(artifact)
        if self.grid and self.recipe.augment:
            from zoo.data.grid import augmentation_grid

            png = augmentation_grid(self.recipe, self.run_dir / "augmentations.png")
            run.log({"augmentations": wandb.Image(str(png)), "trainer/global_step": trainer.global_step})

    def _keep(self, trainer: L.Trainer, prefix: str) -> None:
        for key, value in trainer.callback_metrics.items():
            if key.startswith(prefix) and getattr(value, "numel", lambda: 1)() == 1:
                self.final[key.replace("/", "_")] = float(value)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            self._keep(trainer, "val/")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run = self._run(trainer)
        if run is None:
            return
        import wandb

        self._keep(trainer, "test/")
        step = {"trainer/global_step": trainer.global_step}
        dm = trainer.datamodule
        part = getattr(dm, "test", None)
        if part is not None and hasattr(part, "x"):
            from zoo.monitoring.metrics import classification_metrics

            probs = pl_module.predict_proba(part.x).cpu()
            y = part.y.cpu()
            classes = [str(c) for c in getattr(dm, "classes", range(probs.shape[1]))]
            preds = probs.argmax(-1)
            k = probs.shape[1]
            counts = [[0] * k for _ in range(k)]
            for t, p in zip(y.tolist(), preds.tolist()):
                counts[t][p] += 1
            per_class = classification_metrics(probs, y)
            table = wandb.Table(
                columns=["class", "precision", "recall", "support"],
                data=[[c, p, r, sum(counts[i])] for i, (c, p, r) in enumerate(zip(classes, per_class["precision"], per_class["recall"]))],
            )
            matrix = wandb.Table(
                columns=["actual", "predicted", "count"],
                data=[[classes[i], classes[j], counts[i][j]] for i in range(k) for j in range(k)],
            )
            run.log(
                {
                    "test/per_class": table,
                    "test/confusion_matrix": wandb.plot.confusion_matrix(
                        y_true=y.tolist(), preds=preds.tolist(), class_names=classes, title="test confusion matrix"
                    ),
                    "test/confusion_counts": matrix,
                    **step,
                }
            )
            self.final.update({f"test_{m}": per_class[m] for m in ("macro_f1", "top5_acc", "roc_auc", "pr_auc")})
        run.summary.update(self.final)
