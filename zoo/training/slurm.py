"""SLURM batch jobs that are preempted or reach their time limit: which job this is, and requeueing it.

Lightning's own answer, ``SLURMEnvironment(auto_requeue=True)``, saves an ``hpc_ckpt_*.ckpt`` from inside its
signal handler, in the middle of whatever step is running, and the requeued job loads it on its own. A
checkpoint taken mid-step does not resume exactly (the step's update half done, the loader's position, the
generators and the epoch's running figures out of step with the weights), and Lightning's handler never stops
the run: SLURM kills it. So zoo keeps Lightning's environment for what it reads from SLURM (ranks, nodes,
the main address and port) with ``auto_requeue=False``, which installs no handler; the requeue signal is one
more signal zoo's :class:`zoo.training.checkpoints.SignalStop` stops on (the step finishes, ``last.ckpt`` is
written as on SIGTERM), and the command that owns the run calls ``scontrol requeue`` once the run is over.

Like Lightning, only the requeue signal requeues: SLURM sends SIGTERM for ``scancel`` and at the time limit
as well, and a preemption whose partition requeues jobs (``PreemptMode=REQUEUE``) is requeued by SLURM
itself; SIGTERM checkpoints and stops, as anywhere else.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from typing import Any

from zoo.core.errors import ZooError

SCONTROL_TIMEOUT_S = 60  # SLURM's warning (--signal=USR1@90) leaves about this long before the kill


def batch_job() -> str | None:
    """This SLURM job as ``scontrol`` names it (``<array job>_<task>`` for an array task) when this process runs
    in a batch job as Lightning's ``SLURMEnvironment.detect`` decides (interactive jobs, named ``bash`` or
    ``interactive``, excluded); None otherwise."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    job = os.environ.get("SLURM_JOB_ID")
    if not job or not SLURMEnvironment.detect():
        return None
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        job = f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return job if re.fullmatch(r"[0-9]+(_[0-9]+)?", job) else None


def requeue_signal(checkpoint: Any) -> signal.Signals | None:
    """The signal that asks this job to checkpoint and requeue (``checkpoint.requeue_signal``), when this is a
    SLURM batch job and signals stop runs with a checkpoint (``checkpoint.on_signal``); None otherwise."""
    if not checkpoint.on_signal or checkpoint.requeue_signal is None or batch_job() is None:
        return None
    return signal.Signals[checkpoint.requeue_signal]


def cluster_environment() -> list[Any]:
    """The Trainer plugin for a SLURM batch job: Lightning's environment without its requeue handler (see the
    module's docstring); nothing outside SLURM, where Lightning finds its environment itself."""
    if batch_job() is None:
        return []
    from lightning.fabric.plugins.environments import SLURMEnvironment

    try:
        return [SLURMEnvironment(auto_requeue=False)]
    except RuntimeError as exc:  # SLURM variables that contradict each other (--ntasks without --ntasks-per-node)
        raise ZooError(f"SLURM: {exc}") from None


def requeue(job: str) -> str | None:
    """``scontrol requeue JOB``; None when it worked, else one line saying why not."""
    command = ["scontrol", "requeue", job]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SCONTROL_TIMEOUT_S)
    except FileNotFoundError:
        return "scontrol is not on PATH"
    except subprocess.TimeoutExpired:
        return f"{' '.join(command)} did not answer within {SCONTROL_TIMEOUT_S} s"
    except OSError as exc:
        return f"{' '.join(command)}: {exc.strerror or exc}"
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        return f"{' '.join(command)} exited with {done.returncode}" + (f": {said[-1]}" if said else "")
    return None
