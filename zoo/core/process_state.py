"""The Python process's own shared state, read before a plugin is imported (or a component built) and
put back after it.

torch's settings are zoo.core.torch_state's; these are the rest a plugin can change for every run of the
process: the working folder (where runs/ goes), the environment variables that steer a run (WANDB_MODE,
CUDA devices, ZOO_DISABLE_PLUGINS), the warnings filters and display (a plugin that ignores warnings
would hide zoo's own, the one saying it took a name zoo ships included), logging, and the random
generators of Python and NumPy. zoo.core.discovery wraps each plugin import in a snapshot and a restore,
zoo.core.registry each build.
"""

from __future__ import annotations

import logging
import os
import random
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np


def _loggers(names: Iterable[str] | None = None) -> dict[str, tuple[Any, ...]]:
    """The level, handlers, propagation and disabled flag of the loggers ``names`` (None: all that exist,
    the root's included). Loggers the import created are its own, as are a library's it imported first."""
    if names is None:
        names = [""] + [n for n, log in logging.Logger.manager.loggerDict.items() if isinstance(log, logging.Logger)]
    found = {name: logging.getLogger(name or None) for name in names}
    return {name: (log.level, tuple(log.handlers), log.propagate, log.disabled) for name, log in found.items()}


# The environment variables that steer a run: zoo's, W&B's, torch's, Lightning's, CUDA's, the thread
# pools' and distributed training's. Others are left to whoever sets them: libraries set their own when
# imported (scikit-learn's KMP_*), and need them.
RUN_VARIABLES = (
    "ZOO_", "WANDB_", "TORCH", "PYTORCH_", "PL_", "LIGHTNING_", "CUDA_", "CUBLAS_", "NCCL_", "OMP_", "MKL_",
    "MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK",
)


def _run_variables() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key.startswith(RUN_VARIABLES)}


def snapshot(build: bool = False) -> dict[str, Any]:
    """What a restore puts back: the settings it warns about and, unless for a ``build`` (building draws
    random numbers by design), the random states it restores quietly."""
    state = {
        "working folder": os.getcwd(),
        "environment": _run_variables(),
        "warnings": (list(warnings.filters), warnings.showwarning),
        "logging": (logging.Logger.manager.disable, _loggers()),
    }
    if not build:
        state["python random state"] = random.getstate()
        state["numpy random state"] = np.random.get_state()
    return state


def restore(before: dict[str, Any]) -> list[str]:
    """Put back whatever differs from ``before``: the changes worth a warning, in words. The random
    generators, when ``before`` holds them, are put back without one, as torch's is (runs seed them anyway)."""
    changed = []
    if os.getcwd() != before["working folder"]:
        changed.append(f"working folder to {os.getcwd()}")
        os.chdir(before["working folder"])
    env, env_before = _run_variables(), before["environment"]
    if env != env_before:
        keys = sorted(k for k in env.keys() | env_before.keys() if env.get(k) != env_before.get(k))
        changed.append(f"environment variables {', '.join(keys)}")  # names only: values may be secrets
        for key in keys:
            if key in env_before:
                os.environ[key] = env_before[key]
            else:
                del os.environ[key]
    filters, shown = before["warnings"]
    if warnings.filters != filters or warnings.showwarning is not shown:
        changed.append("warnings filters")
        warnings.resetwarnings()  # also drops what each module cached of the old filters
        warnings.filters = list(filters)
        warnings.showwarning = shown
    disable, loggers = before["logging"]
    if (logging.Logger.manager.disable, _loggers(loggers)) != before["logging"]:
        changed.append("logging configuration")
        logging.disable(disable)
        for name, (level, handlers, propagate, disabled) in loggers.items():
            log = logging.getLogger(name or None)
            log.setLevel(level)
            log.handlers[:] = handlers
            log.propagate, log.disabled = propagate, disabled
    if "python random state" in before:
        random.setstate(before["python random state"])
        np.random.set_state(before["numpy random state"])
    return changed
