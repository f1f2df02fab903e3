"""``zoo sweep --workers N``: N trials at once on one machine, each worker a Python process of its own.

Processes, not threads: a trial is a whole ``zoo.train`` run, and torch's and Lightning's global settings
and the signal handlers a run installs belong to a process. The workers share the sweep's storage and
work on its studies as any other process would (zoo.tools.sweep_study); this process holds the sweep
folder's lock, waits for them, and passes SIGINT, SIGTERM and SIGHUP (in a SLURM batch job, the requeue
signal too) on to them: each stops its trial as ``zoo train`` stops (checkpoint, then exit 130, 143 or 129;
138 for SIGUSR1), and the sweep then exits with the same code.
The workers run in their own process group, so a Ctrl-C in the terminal reaches them once, through here.
A signal sent to one worker alone stops the sweep as if sent to it; a worker killed outright (kill -9, out of
memory) has its running trial handed back at once, for the other workers to run (from its checkpoint: they
share the sweep folder); a worker whose sweep process was killed stops its trial and exits.
With more than one worker, each uses one torch thread (``torch.set_num_threads(1)``): N processes with a
thread per core each would fight over the cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.core.errors import ZooError

if TYPE_CHECKING:
    from zoo.tools.sweep_spec import SweepSpec

# the worker's entry point, run with ``python -c``: zoo's own command line has no hidden worker command
ORPHAN_CHECK_SECONDS = 1.0
POLL_SECONDS = 0.2  # how often the sweep looks at its workers
WORKER_CODE = "import sys; from zoo.tools.sweep_workers import worker_main; sys.exit(worker_main(sys.argv[1]))"


def run_workers(spec: SweepSpec, folder: Path, storage: str, workers: int, *, owner: bool, plugins: list[str],
                log: Callable[[str], None], signals: tuple[int, ...] | None = None) -> None:
    """Start the workers, wait for all of them; a signal is passed on, and raised here once they stopped.
    ``signals``: the ones that stop the sweep (default STOP_SIGNALS; in a SLURM batch job the requeue signal
    too), which the workers stop on as well."""
    from zoo.training.checkpoints import STOP_SIGNALS, Interrupted

    signals = tuple(signals or STOP_SIGNALS)
    job = {"sweep_file": str(Path(spec.path).resolve()), "folder": str(folder), "storage": storage,
           "owner": owner, "plugins": plugins, "threads": 1, "parent": os.getpid(), "signals": list(signals)}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    received: list[int] = []
    procs: list[subprocess.Popen] = []

    def pass_on(signum, frame) -> None:
        received.append(signum)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, pass_on) for sig in signals}
    try:
        for index in range(workers):
            # only the first worker finishes a stage's setup that a killed sweep left halfway: one is enough
            mine = {**job, "worker": index + 1, "owner": owner and index == 0}
            procs.append(subprocess.Popen([sys.executable, "-c", WORKER_CODE, json.dumps(mine)],
                                          env=env, start_new_session=True))
        log(f"{workers} workers (pids {', '.join(str(p.pid) for p in procs)}), one torch thread each")
        codes = _wait(procs, received, pass_on, storage, spec, folder, log, {128 + sig: sig for sig in signals})
    finally:
        for proc in procs:  # a failure here: no worker outlives the sweep
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise Interrupted(received[0], when="while its workers ran trials")
    failed = [(i, c) for i, c in enumerate(codes, 1) if c != 0]
    if len(failed) == len(codes) or any(c > 0 for _, c in failed):
        index, code = failed[0]
        raise ZooError(f"sweep worker {index} failed (exit status {code}); its message is above")


def _wait(procs: list[subprocess.Popen], received: list[int], pass_on, storage: str, spec: SweepSpec,
          folder: Path, log: Callable[[str], None], stopped_by: dict[int, int] | None = None) -> list[int]:
    """Every worker's exit status. A worker a signal stopped by itself (sent to it, not to the sweep) stops
    the sweep as that signal would (``stopped_by``: a worker's exit status after a stop signal, as zoo
    train's, and that signal); the trials of one killed outright (kill -9, out of memory) are handed back at
    once, so that the others run them and the sweep still finishes."""
    from zoo.tools.sweep_study import open_storage, take_back_of_process
    from zoo.training.checkpoints import STOP_SIGNALS

    stopped_by = stopped_by or {128 + sig: sig for sig in STOP_SIGNALS}
    seen: set[int] = set()
    while True:
        for proc in procs:
            code = proc.poll()
            if code is None or proc.pid in seen:
                continue
            seen.add(proc.pid)
            if code in stopped_by and not received:
                pass_on(stopped_by[code], None)
            elif code < 0 and not received:  # (one ended by a signal passed on: resume takes its trial back)
                taken = take_back_of_process(open_storage(storage), spec, folder, proc.pid)
                log(f"a worker (pid {proc.pid}) was killed by {signal.Signals(-code).name}; "
                    f"{taken} trial(s) it ran go to the others")
        if len(seen) == len(procs):
            return [proc.returncode for proc in procs]
        time.sleep(POLL_SECONDS)


def _stop_when_orphaned(parent: int) -> None:
    """SIGTERM to this worker once the sweep's process is gone (kill -9): its trial stops at a checkpoint and
    is handed back, instead of running on unseen while a resumed sweep hands the same trial to another."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="zoo-sweep-orphan-watch", daemon=True).start()


def worker_main(job_text: str) -> int:
    """One worker: the sweep's stages with the others on the storage; exit status as ``zoo train``'s."""
    from zoo.core.errors import ZooError as Refused
    from zoo.training.checkpoints import STOP_SIGNALS, Interrupted

    job = json.loads(job_text)
    prefix = f"[worker {job['worker']}] "

    def log(line: str) -> None:
        print(prefix + line, file=sys.stderr, flush=True)

    try:
        import torch

        torch.set_num_threads(int(job["threads"]))
        if job["plugins"]:
            from zoo.core import discovery

            discovery.load_local(job["plugins"], kind="--plugin")
        from zoo.tools.sweep_spec import load_sweep
        from zoo.tools.sweep_study import open_storage, participate
        from zoo.tools.sweep_trial import run_trial
        from zoo.training.checkpoints import SignalStop

        spec = load_sweep(job["sweep_file"])
        requeue = [sig for sig in job["signals"] if sig not in STOP_SIGNALS]
        signals = SignalStop(requeue[0] if requeue else None)
        signals.when = "between trials"
        signals.install()
        _stop_when_orphaned(job["parent"])
        try:
            participate(open_storage(job["storage"]), spec, Path(job["folder"]), run_trial, log, owner=job["owner"])
        finally:
            signals.restore()
    except Interrupted as stop:
        log(f"stopped: {stop}")
        return stop.exit_code
    except Refused as exc:
        print(f"zoo: {prefix}{exc}", file=sys.stderr)
        return 2
    return 0
