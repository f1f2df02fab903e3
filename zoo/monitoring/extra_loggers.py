"""TensorBoard and MLflow beside logs/metrics.csv and W&B (``logger.tensorboard``, ``logger.mlflow``), and the
recipe's ``logger.extra`` Lightning loggers.

Each resumed sitting of a run logs to the same place as the first: TensorBoard to ``<run>/logs/tensorboard``,
MLflow to the run whose id the first sitting wrote to ``<run>/mlflow_run_id.txt``. Lightning's loggers write on
global rank 0 only (their ``experiment`` is a dummy elsewhere), and so does the id file here.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from zoo.core.errors import ZooError
from zoo.core.io import atomic_write_text

MLFLOW_RUN_ID_FILE = "mlflow_run_id.txt"
MLFLOW_STORE = Path("mlruns")  # in the working folder, like MLflow's own default
TENSORBOARD_DIR = "tensorboard"  # under the run's logs/


def default_tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else a SQLite store in ./mlruns (MLflow 3 refuses its plain-file store by default)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{MLFLOW_STORE.resolve() / 'mlflow.db'}"


class RunMLFlowLogger(MLFlowLogger):
    """Lightning's MLflow logger, writing the id of the MLflow run it starts into the run folder."""

    def __init__(self, run_dir: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run_dir = run_dir

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        # Lightning flattens the recipe's lists as `augment[0]/name`, and MLflow refuses brackets in a name
        flat = _flatten_dict(_convert_params(params))
        super().log_hyperparams({re.sub(r"\[(\d+)\]", r"/\1", key): value for key, value in flat.items()})

    @property
    def experiment(self):
        client = MLFlowLogger.experiment.fget(self)
        id_file = self.run_dir / MLFLOW_RUN_ID_FILE
        if rank_zero_only.rank == 0 and self._run_id and not id_file.is_file():
            atomic_write_text(id_file, self._run_id + "\n")
        return client


def read_mlflow_run_id(run_dir: Path) -> str | None:
    path = run_dir / MLFLOW_RUN_ID_FILE
    if not path.is_file():
        return None
    return path.read_text().strip() or None


def _tracking_uri(recipe: Any) -> tuple[str, str]:
    """The MLflow tracking URI a run logs to, and where it was set (for messages)."""
    if recipe.logger.mlflow.tracking_uri:
        return recipe.logger.mlflow.tracking_uri, f"{recipe.source or 'recipe'}: logger.mlflow.tracking_uri"
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"], "MLFLOW_TRACKING_URI"
    return default_tracking_uri(), f"{recipe.source or 'recipe'}: logger.mlflow (the default store, ./mlruns)"


# served stores are not opened up front: MLflow retries an unreachable server for minutes
SERVED_STORES = ("http", "https", "databricks")


def check_mlflow_store(recipe: Any) -> None:
    """Open the MLflow store the recipe logs to, so that one that cannot be written (a missing or read-only
    folder, MLflow 3's refused plain-file store) is one line before the run folder is claimed, not an MLflow
    traceback at the run's first log."""
    if not recipe.logger.mlflow.enabled:
        return
    uri, where = _tracking_uri(recipe)
    if uri.split(":", 1)[0] in SERVED_STORES:
        return
    from mlflow.tracking import MlflowClient

    _quiet_mlflow()
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 -- any store's failure, told in its own words
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "MLFLOW_ALLOW_FILE_STORE" in reason:  # MLflow's own words run to a paragraph
            reason = ("MLflow 3 refuses its plain-file store; use a sqlite:///FILE URI (or set "
                      "MLFLOW_ALLOW_FILE_STORE=true)")
        raise ZooError(f"{where}: the MLflow store {uri} cannot be opened: {reason}") from None


def _quiet_mlflow() -> None:
    # the SQLite store announces each schema migration it checks at INFO: a dozen lines per run
    for name in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)


def mlflow_logger(recipe: Any, run_dir: Path) -> RunMLFlowLogger:
    section = recipe.logger.mlflow
    uri = _tracking_uri(recipe)[0]
    artifacts = None
    if section.tracking_uri is None and not os.environ.get("MLFLOW_TRACKING_URI"):
        (MLFLOW_STORE / "artifacts").mkdir(parents=True, exist_ok=True)
        artifacts = str((MLFLOW_STORE / "artifacts").resolve())
    _quiet_mlflow()
    return RunMLFlowLogger(
        run_dir,
        experiment_name=section.experiment or "zoo",
        run_name=section.run_name or run_dir.name,
        tracking_uri=uri,
        artifact_location=artifacts,
        run_id=read_mlflow_run_id(run_dir),
    )


def recipe_loggers(recipe: Any, run_dir: Path) -> list[Any]:
    """The loggers the recipe asks for besides logs/metrics.csv and W&B (none by default)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from zoo.core.recipe_callbacks import build_extra_loggers

    loggers: list[Any] = []
    if recipe.logger.tensorboard.enabled:
        loggers.append(TensorBoardLogger(run_dir / "logs", name=TENSORBOARD_DIR, version="", default_hp_metric=False))
    if recipe.logger.mlflow.enabled:
        loggers.append(mlflow_logger(recipe, run_dir))
    return [*loggers, *build_extra_loggers(recipe)]
