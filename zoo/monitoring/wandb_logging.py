"""Weights & Biases for a run: the Lightning logger (rank 0 only) and a callback for the extras.

``wandb_logger(recipe, run_dir)`` reads the recipe's ``logger.wandb`` section with W&B's environment
variables (zoo.monitoring.wandb_target: the mode, the project, offline when the server does not answer);
``disabled`` gives no logger at all. The run's files go to
``run_dir/wandb/`` (an ensemble member's to its ensemble's, so one ``wandb sync`` uploads them together),
its config is the whole resolved recipe (nested, so W&B shows its sections) plus a ``run`` section (world
size, parameter count), and its id is written to ``run_dir/wandb_run_id.txt`` so a resumed job continues
the same run (``resume_id``).

The W&B run is created only when training (or evaluation) really starts (``WandbExtras`` starts it), so a
recipe refused anywhere before that leaves no W&B run behind. What W&B holds is whole and holds each
value once, across kills and resumes: every sitting of a run (each start or resume writes a folder of its
own) continues wandb's step count where the earlier ones' files end; whatever the run's
``logs/metrics.csv`` holds and those files lost (``kill -9`` loses the last unwritten block, often the whole
history) is logged again; and a value W&B already holds for an optimizer step, such as the steps a resume
replays from an older checkpoint, is not logged twice. Offline this is exact, read from the sittings'
``.wandb`` files; online the local file is what is consulted as well, so values the server received after
the file's last whole block could appear twice there.

Lightning's ``WandbLogger.experiment`` is wrapped in ``rank_zero_experiment``: on any other global rank it
returns a dummy and never calls ``wandb.init``; every logging method is ``rank_zero_only`` too. The logger
here relies on that and adds nothing that runs on other ranks; ``WandbExtras`` checks
``trainer.is_global_zero`` before touching the run.
"""

from __future__ import annotations

import csv
import os
import shlex
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.logger import DummyExperiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from zoo.core.io import atomic_write_text
from zoo.core.recipe import Recipe
from zoo.monitoring.wandb_offline import STEP, Held, held_by_sittings
from zoo.monitoring.wandb_target import init_or_offline, init_timeout, project, resolve_mode

RUN_ID_FILE = "wandb_run_id.txt"
METRICS_CSV = Path("logs") / "metrics.csv"  # the run folder's own log (zoo.training.checkpoints.RunCSVLogger)


def read_run_id(run_dir: str | Path) -> str | None:
    """The W&B run id a run folder recorded, to resume that run."""
    path = Path(run_dir) / RUN_ID_FILE
    return (path.read_text().strip() or None) if path.is_file() else None


def wandb_home(run_dir: str | Path) -> Path:
    """The folder whose ``wandb/`` holds a run's W&B files: the run folder itself, except for an ensemble's
    member (``<ensemble>/members/m<i>/``), whose runs sit with the ensemble's own so that one ``wandb sync``
    uploads the whole ensemble."""
    run_dir = Path(run_dir).resolve()
    if run_dir.parent.name == "members" and (run_dir.parent.parent / "recipe.yaml").is_file():
        return run_dir.parent.parent
    return run_dir


@contextmanager
def staged_in(run_dir: str | Path) -> Iterator[None]:
    """Artifact files wait for their upload in a staging folder (a copy, or the manifest of a large one),
    by default under the user's home; here under the run folder's ``wandb/``, so that a copied run folder
    carries them. wandb reads the place from WANDB_DATA_DIR each time it stages a file."""
    before = os.environ.get("WANDB_DATA_DIR")
    os.environ["WANDB_DATA_DIR"] = str(wandb_home(run_dir) / "wandb" / "staging")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("WANDB_DATA_DIR", None)
        else:
            os.environ["WANDB_DATA_DIR"] = before


def sync_command(run_dir: str | Path) -> str | None:
    """The one command that uploads every offline W&B run of a run folder (members and every sitting of a
    resumed run included: they all live in its ``wandb/``), or None when it has none."""
    wandb_dir = Path(run_dir) / "wandb"
    if not any(wandb_dir.glob("offline-run-*/*.wandb")):
        return None
    return f"wandb sync {shlex.quote(str(wandb_dir))}"


def announce_sync(run_dir: str | Path) -> None:
    """Say, once, how to upload what a run logged offline (nothing when it logged nothing offline)."""
    command = sync_command(run_dir)
    if command is None:
        return
    folders = sorted((Path(run_dir) / "wandb").glob("offline-run-*"))
    runs = {f.name.rsplit("-", 1)[-1] for f in folders}
    what = f"{len(runs)} W&B run{'s' * (len(runs) > 1)}"
    if len(folders) > len(runs):
        what += f" in {len(folders)} sittings"
    print(
        f"wandb: {what} logged offline; upload {'them' if len(runs) > 1 else 'it'} with: {command}",
        file=sys.stderr,
    )


def wandb_settings(mode: str):
    import wandb

    return wandb.Settings(
        mode=mode,  # online or offline (ZooWandbLogger keeps its own `mode` argument for itself)
        silent=True,  # no banner, no "syncing" lines: the one line that matters is announce_sync's
        quiet=True,
        console="off" if mode == "offline" else "auto",  # offline: stdout stays ours (no capture wrapper)
        # system metrics (CPU, memory, disk, network, GPUs) and the environment record stay on, offline too:
        # turning them off (x_disable_machine_info) saved no measurable start-up time
        save_code=False,
        init_timeout=init_timeout(),
    )


def _number(text: str) -> float | int:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


class ZooWandbLogger(WandbLogger):
    """WandbLogger whose config is the resolved recipe alone, whose run starts only when ``start()`` is
    called (rank 0 only), and which logs each value once and the whole history (see the module's doc)."""

    def __init__(
        self, *args: Any, run_dir: Path, mode: str, log_model: bool | str = False, **kwargs: Any
    ) -> None:
        # Lightning's own log_model stays off: WandbExtras uploads the checkpoints
        super().__init__(*args, **kwargs)
        self._wandb_init.pop("anonymous", None)  # wandb 0.31 warns about it even when None
        self.run_dir = Path(run_dir)
        self.mode = mode
        self.log_checkpoints = log_model
        self.started = False
        self.to_summary = False  # after training: evaluations go to the summary, not onto the curves
        self.held = Held()
        self.backfilled = 0  # rows of logs/metrics.csv that W&B had lost, logged again in this sitting
        self._step = 0  # wandb's own row counter, continued across sittings

    def start(self) -> None:
        """Create the W&B run (on global rank 0) now: before this, the logger records nothing anywhere."""
        self.started = True
        _ = self.experiment

    @property
    def experiment(self):
        if not self.started:
            return DummyExperiment()  # Lightning asks for it while setting up, before any check has passed
        if self._experiment is not None:
            return super().experiment
        # rank_zero_experiment: a dummy, and no wandb.init, off rank 0
        run, self.mode = init_or_offline(self._init, self.mode, wandb_home(self.run_dir) / "wandb")
        if self._experiment is not None and rank_zero_only.rank == 0:
            self._continue(run)
        return run

    def _init(self, mode: str):
        self._wandb_init["settings"] = wandb_settings(mode)
        return super().experiment

    def _continue(self, run) -> None:
        """Record the run's id, then carry on from what the run's earlier sittings hold and fill in what
        they lost from the run folder's metrics.csv."""
        from zoo.monitoring.wandb_offline import sitting_dirs

        atomic_write_text(self.run_dir / RUN_ID_FILE, run.id + "\n")
        own = Path(run.dir).resolve().parent  # run.dir is <run folder>/files
        earlier = [f for f in sitting_dirs(own.parent, run.id) if f.resolve() != own]
        self.held = held_by_sittings(earlier)
        # online, a resumed run also knows the server's step count
        self._step = max(self.held.next_step, int(getattr(run, "step", 0) or 0))
        self.backfilled = self._backfill(self.run_dir / METRICS_CSV)

    def _backfill(self, csv_file: Path) -> int:
        """Log the rows of metrics.csv (everything the run logged before this sitting) that W&B lacks."""
        if not csv_file.is_file():
            return 0
        logged = 0
        with csv_file.open(newline="") as f:
            for row in csv.DictReader(f):
                step = row.get("step") or ""
                if not step.isdigit():
                    continue
                values = {k: _number(v) for k, v in row.items() if k != "step" and v not in ("", None)}
                logged += self._log(values, int(step))
        return logged

    def _log(self, row: Mapping[str, Any], step: int, once: bool = False) -> bool:
        """One history row at optimizer step ``step``, less what W&B already holds there (``once``: anywhere).
        Whether anything was logged."""
        fresh = {k: v for k, v in row.items() if not self.held.has(step, k, once)}
        if not fresh:
            return False
        self.experiment.log({**fresh, STEP: step}, step=self._step)
        self._step += 1
        self.held.add(step, fresh)
        return True

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.to_summary:
            # the best checkpoint evaluated after training: the run's result, not another point of its curves
            self.experiment.summary.update({k: v for k, v in metrics.items() if k != "epoch"})
        elif step is None:
            self.experiment.log(dict(metrics), step=self._step)
            self._step += 1
        else:
            self._log(metrics, step)

    @rank_zero_only
    def log_once(self, row: Mapping[str, Any], step: int) -> None:
        """Media and tables: logged unless an earlier sitting already logged them under the same key."""
        self._log(row, step, once=True)

    @rank_zero_only
    def end_training(self) -> None:
        """Training is over: the summary takes each value at its last step, wherever W&B got it from (an
        earlier sitting, the backfill or this one); evaluations from now on go to the summary alone."""
        if self._experiment is not None:
            self._experiment.summary.update({k: v for k, (_, v) in self.held.latest.items()})
        self.to_summary = True

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
    when ``WandbExtras`` starts it, on global rank 0 only."""
    section = recipe.logger.wandb
    mode = resolve_mode(section.mode)
    if mode == "disabled":
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    run_dir = Path(run_dir).resolve()  # wandb's service process may run in another directory
    kwargs: dict[str, Any] = dict(
        run_dir=run_dir,
        mode=mode,
        log_model=section.log_model,
        name=section.name or run_dir.name,
        save_dir=str(wandb_home(run_dir)),
        project=project(section.project),
        entity=section.entity,
        group=section.group,
        tags=list(section.tags) or None,
        config=recipe.to_dict(),
        settings=wandb_settings(mode),
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


def parameter_counts(module) -> dict[str, int]:
    params = list(module.parameters())
    return {
        "parameters": sum(p.numel() for p in params),
        "trainable_parameters": sum(p.numel() for p in params if p.requires_grad),
    }


class WandbExtras(L.Callback):
    """What W&B gets besides the logged metrics. When training (or, for a resumed run that had finished
    training, evaluation) starts: the run itself, the world size and parameter count in its config, the
    recipe file as an artifact and the augmentation grid. When training ends: the checkpoints as a model
    artifact (``logger.wandb.log_model``). At test end: the confusion matrix (an image) and per-class
    precision and recall (a table), and the remaining test metrics in the summary. Does nothing without a
    ZooWandbLogger, and nothing off global rank 0."""

    def __init__(self, recipe: Recipe, run_dir: str | Path, grid: bool = True) -> None:
        self.recipe = recipe
        self.run_dir = Path(run_dir)
        self.grid = grid

    def _logger(self, trainer: L.Trainer) -> ZooWandbLogger | None:
        if not trainer.is_global_zero:
            return None
        return next((lg for lg in trainer.loggers if isinstance(lg, ZooWandbLogger)), None)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # a resumed run reads this to continue the same W&B run rather than start a second one
        logger = self._logger(trainer)
        if logger is not None and logger._experiment is not None:
            checkpoint["wandb_run_id"] = logger._experiment.id

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._logger(trainer)
        if logger is None or logger.started:
            return
        logger.start()
        run = logger.experiment
        import wandb

        run.config.update(
            {"run": {"world_size": trainer.world_size, **parameter_counts(pl_module)}}, allow_val_change=True
        )
        recipe_file = self.run_dir / "recipe.yaml"
        name = f"recipe-{run.id}"
        if recipe_file.is_file() and name not in logger.held.artifacts:
            with staged_in(self.run_dir):  # add_file copies the file to the staging folder
                artifact = wandb.Artifact(name, type="recipe", description=f"resolved recipe of {run.name}")
                artifact.add_file(str(recipe_file), name="recipe.yaml")
                run.log_artifact(artifact)
        if self.grid and self.recipe.augment and not logger.held.has(-1, "augmentations", once=True):
            from zoo.data.grid import augmentation_grid

            png = augmentation_grid(self.recipe, self.run_dir / "augmentations.png")
            logger.log_once({"augmentations": wandb.Image(str(png))}, trainer.global_step)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._start(trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._logger(trainer)
        if logger is None or not logger.started:
            return
        logger.end_training()
        if logger.log_checkpoints:
            self._log_checkpoints(trainer, logger)

    def _log_checkpoints(self, trainer: L.Trainer, logger: ZooWandbLogger) -> None:
        import wandb

        run = logger.experiment
        name = f"model-{run.id}"
        callback = trainer.checkpoint_callback
        files = {"best.ckpt": getattr(callback, "best_model_path", "")}
        if logger.log_checkpoints != "best":
            files["last.ckpt"] = getattr(callback, "last_model_path", "")
        files = {k: v for k, v in files.items() if v and Path(v).is_file()}
        if not files or name in logger.held.artifacts:
            return
        score = getattr(callback, "best_model_score", None)
        artifact = wandb.Artifact(
            name,
            type="model",
            description=f"checkpoints of {run.name}",
            metadata={"val/acc": float(score) if score is not None else None, STEP: trainer.global_step},
        )
        with staged_in(self.run_dir):
            for file_name, path in files.items():
                # immutable: training is over and the files stay as they are, so no staged copy of each one
                artifact.add_file(path, name=file_name, policy="immutable")
            run.log_artifact(artifact, aliases=["latest", "best"])

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._logger(trainer)
        if logger is None or not logger.started:
            return
        dm = trainer.datamodule
        part = getattr(dm, "test", None)
        if part is not None and hasattr(part, "x"):
            probs, labels = pl_module.predict_proba(part.x).cpu(), part.y.cpu()
        elif hasattr(dm, "batches"):
            # a streamed split, scored batch by batch: all of it, as this runs on the logging rank alone
            scored = [(pl_module.predict_proba(x).cpu(), y) for x, y in dm.batches("test", whole=True)]
            if not scored:
                return
            probs, labels = torch.cat([p for p, _ in scored]), torch.cat([y for _, y in scored])
        else:
            return

        from zoo.monitoring.metrics import classification_metrics

        report = classification_metrics(probs, labels)
        classes = [str(c) for c in getattr(dm, "classes", range(probs.shape[1]))]
        with staged_in(self.run_dir):  # a logged table becomes an artifact, staged when it is logged
            logger.log_once(
                evaluation_media(report, classes, f"test confusion matrix of {logger.experiment.name}"),
                trainer.global_step,
            )
        logger.experiment.summary.update(
            {f"test/{m}": report[m] for m in ("macro_f1", "top5_acc", "roc_auc", "pr_auc")}
        )


def evaluation_media(report: dict[str, Any], classes: list[str], title: str) -> dict[str, Any]:
    """The confusion matrix (an image) and per-class precision and recall (a table) of an evaluation."""
    import matplotlib.pyplot as plt
    import wandb

    from zoo.monitoring.figures import confusion_figure

    support = [sum(row) for row in report["confusion"]]
    table = wandb.Table(
        columns=["class", "precision", "recall", "support"],
        data=[list(r) for r in zip(classes, report["precision"], report["recall"], support)],
    )
    fig = confusion_figure(report["confusion"], classes, title)
    try:
        image = wandb.Image(fig)
    finally:
        plt.close(fig)
    return {"test/confusion_matrix": image, "test/per_class": table}
