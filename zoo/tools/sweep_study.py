"""A sweep's trials as Optuna studies: the storage, the samplers and pruners, and the loop every worker runs.

Each stage is one study, named ``<sweep name>/stage-<k>``, in the sweep's storage. Every process that works
on the sweep (the ``--workers`` of one machine, a ``zoo sweep`` started elsewhere with the same ``--storage``)
runs the same loop (:func:`work_stage`) on that study, then waits there until the stage's count of trials
has finished, then computes the next stage's ranges from the study (the same figures give every process
the same ranges) and goes on with the next study.

Exact counts without a coordinator: a worker asks the study for a trial (the storage numbers trials
atomically), then counts the trials numbered below it that did not fail. If those already reach the
stage's count, its trial is surplus: it is told FAIL (user attribute ``surplus``) and nothing runs.
A failed trial is not counted, so a trial handed back (see below) is replaced by exactly one other.
A grid's points are all enqueued by whoever creates the study before it is marked ready (workers wait
for that): asking pops a waiting trial atomically, so no point runs twice and every point runs.

Handing back: a trial stopped by a signal, or found still RUNNING by ``zoo sweep --resume`` of the sweep
folder it ran in (that process holds the folder's lock, so nothing else runs it: it was killed), is told
FAIL and enqueued again with its parameters and its run folder's name; the worker of that folder that pops
it resumes it from its checkpoint (a worker of another folder starts it afresh in its own). A machine
that died without a resume: on an SQL storage every running trial's process records a heartbeat (Optuna's,
kept by a thread here since Study.optimize is not used), and a worker that finds one silent past the grace
period fails it and enqueues it again (``fail_stale_trials``); a journal file has no heartbeats, so its
trials wait for their machine's ``zoo sweep --resume``. A worker whose sweep process was killed stops its
trial (SIGTERM to itself) rather than run on unseen.

Samplers are seeded per trial from the sweep's seed, the stage and the trial's number: reproducible,
and different in every worker (the same seed in each would draw the same values).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.core.errors import ZooError, brief
from zoo.tools.sweep_spec import best_trial, described, override_text, study_name

if TYPE_CHECKING:
    import optuna

    from zoo.tools.sweep_spec import Param, SweepSpec, TrialFn

POLL_SECONDS = 0.5  # how often a worker waiting for the others looks at the study again
SQLITE_BUSY_SECONDS = 60  # workers share one SQLite file: wait for its lock rather than fail
# SQL storages: a running trial's process records a heartbeat this often; one silent for the grace period
# (a machine that died) is failed by whichever worker looks next, and enqueued again
HEARTBEAT_SECONDS, GRACE_SECONDS = 30, 180
SETUP_SECONDS = 120  # a study's creator enqueues a grid in well under a second; past this, it died doing it


def open_storage(url: str, where: str = "--storage") -> optuna.storages.BaseStorage:
    """The Optuna storage at ``url``: an SQLAlchemy URL (sqlite:///, postgresql://, mysql://) or
    ``journal:///path/file.log`` (Optuna's JournalStorage on a file; a shared file system will do)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if url.startswith("journal://"):
            return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal://"):]))
        if "://" not in url:
            raise ValueError("not a URL (sqlite:///FILE, postgresql://..., mysql://..., journal:///FILE)")
        kwargs = {"connect_args": {"timeout": SQLITE_BUSY_SECONDS}} if url.startswith("sqlite") else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_SECONDS,
                                              grace_period=GRACE_SECONDS, heartbeat_stale_trial_callback=_enqueue_again)
    except Exception as exc:  # SQLAlchemy and the drivers raise their own kinds
        raise ZooError(f"{where} {url}: Optuna cannot open it: {str(exc).splitlines()[0]}") from None


def stage_size(spec: SweepSpec, params: Sequence[Param], stage: int) -> int:
    if spec.sampler == "grid":
        return math.prod(len(p.grid(spec.grid_points)) for p in params)
    return int(spec.trials_per_stage[stage])


def _sampler(spec: SweepSpec, seed: int | None) -> optuna.samplers.BaseSampler:
    import optuna

    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.tpe_startup_trials)
    # a grid's points are all enqueued: this sampler draws only the surplus trials that never run
    return optuna.samplers.RandomSampler(seed=seed)


def _pruner(spec: SweepSpec, stage: int) -> optuna.pruners.BasePruner:
    import optuna

    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner_startup_trials,
                                           n_warmup_steps=spec.pruner_warmup_epochs)
    if spec.pruner == "hyperband":
        epochs = spec.epochs_per_stage[stage]
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=int(epochs) if epochs else "auto")
    return optuna.pruners.NopPruner()


def _trial_seed(spec: SweepSpec, stage: int, number: int) -> int:
    import numpy as np

    return int(np.random.SeedSequence([spec.seed, stage, number]).generate_state(1)[0])


def _choice_value(option: Any) -> Any:
    """What Optuna records for a choice: the option itself when it is a plain value, else its JSON text."""
    if option is None or isinstance(option, (str, int, float, bool)):
        return option
    return json.dumps(option, sort_keys=True)


def _sweep_identity(spec: SweepSpec) -> dict[str, Any]:
    """What must match for a process to join a study: the sweep, wherever its files lie on this machine."""
    data = described(spec)
    del data["base"]
    return data


def stage_study(storage, spec: SweepSpec, stage: int, params: Sequence[Param], *, owner: bool) -> optuna.Study:
    """The stage's study: created (with a grid's points enqueued) by the first process to get there, joined
    by the others once it is ready. ``owner``: this process resumes a folder that worked on the study, so
    it finishes a setup a killed process left halfway."""
    import optuna

    name = study_name(spec, stage)
    direction = spec.goal
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=direction,
                                    sampler=_sampler(spec, None), pruner=_pruner(spec, stage))
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=_sampler(spec, None),
                                  pruner=_pruner(spec, stage))
        created = False
    if created or (owner and not study.user_attrs.get("ready")):
        study.set_user_attr("sweep", _sweep_identity(spec))
        study.set_user_attr("ranges", {p.key: p.describe() for p in params})
        if spec.sampler == "grid":  # nothing asks before the study is ready: its trials are the points enqueued
            for point in grid_points(spec, params)[len(study.get_trials(deepcopy=False)):]:
                study.enqueue_trial(point)
        study.set_user_attr("ready", True)
    deadline = time.monotonic() + SETUP_SECONDS
    while not study.user_attrs.get("ready"):  # its creator is enqueueing the grid
        if time.monotonic() > deadline:
            raise ZooError(f"study {name!r}: the process that created it stopped before setting it up; "
                           "zoo sweep --resume the sweep folder it ran in")
        time.sleep(POLL_SECONDS)
    theirs = study.user_attrs.get("sweep")
    if theirs != _sweep_identity(spec) or study.direction.name.lower() != direction:
        raise ZooError(f"study {name!r} in this storage belongs to another sweep of that name "
                       f"(its settings differ); name the sweep differently or use another storage")
    return study


def grid_points(spec: SweepSpec, params: Sequence[Param]) -> list[dict[str, Any]]:
    import itertools

    axes = [[_choice_value(v) if not p.numeric else v for v in p.grid(spec.grid_points)] for p in params]
    return [dict(zip((p.key for p in params), combo)) for combo in itertools.product(*axes)]


def suggest(trial: optuna.Trial, params: Sequence[Param]) -> dict[str, Any]:
    """The trial's value of every parameter, as the recipe takes it (an enqueued trial's values are fixed)."""
    values = {}
    for p in params:
        if p.numeric:
            values[p.key] = float(trial.suggest_float(p.key, p.low, p.high, log=p.kind == "log_uniform"))
        else:
            by_value = {_choice_value(o): o for o in p.options}
            values[p.key] = by_value[trial.suggest_categorical(p.key, list(by_value))]
    return values


def _folder_id(folder: Path) -> str:
    return str(Path(folder).resolve())


def _enqueue_again(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """A trial that will not finish where it ran, queued to run again: in its run folder (from its checkpoint)
    if a worker of that folder takes it, afresh elsewhere."""
    attrs = {k: trial.user_attrs[k] for k in ("folder", "run_name") if k in trial.user_attrs}
    study.enqueue_trial(trial.params, user_attrs={**attrs, "rerun_of": trial.number})


def hand_back(study: optuna.Study, trial: optuna.trial.FrozenTrial, why: str) -> None:
    """Fail a trial that will not finish here and enqueue it again."""
    from optuna.trial import TrialState

    _enqueue_again(study, trial)
    study._storage.set_trial_user_attr(trial._trial_id, "handed_back", why)
    study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)


class _Heartbeat:
    """While a trial runs: its heartbeat in the storage, from a thread (storages without heartbeats: nothing)."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial) -> None:
        from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

        storage = study._storage
        self.storage = storage if isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage) else None
        self.trial_id = trial._trial_id
        self.stop = threading.Event()

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_SECONDS):
            self.storage.record_heartbeat(self.trial_id)

    def __enter__(self) -> _Heartbeat:
        if self.storage is not None:
            self.storage.record_heartbeat(self.trial_id)
            threading.Thread(target=self._beat, name="zoo-sweep-heartbeat", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()


def ask(study: optuna.Study) -> optuna.Trial:
    """A new trial (a waiting one first), numbered by the storage."""
    with warnings.catch_warnings():
        # Optuna would have heartbeats kept by Study.optimize; here :class:`_Heartbeat` keeps them
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        return study.ask()


def fail_dead_trials(study: optuna.Study) -> None:
    """Fail (and enqueue again) the running trials whose heartbeat stopped: their process died."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _take_back(storage, spec: SweepSpec, match: dict[str, Any], why: str) -> list[int]:
    """Hand back the RUNNING trials whose user attributes include ``match``; how many, stage by stage."""
    import optuna
    from optuna.trial import TrialState

    counts = []
    for stage in range(spec.stages):
        try:
            study = optuna.load_study(study_name=study_name(spec, stage), storage=storage)
        except KeyError:
            break
        stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                 if all(t.user_attrs.get(k) == v for k, v in match.items())]
        for t in stale:
            hand_back(study, t, why)
        counts.append(len(stale))
    return counts


def take_back_stale(storage, spec: SweepSpec, folder: Path, log: Callable[[str], None]) -> None:
    """Hand back the trials this folder's killed sweep left RUNNING: its resume holds the folder's lock, so
    none of them runs. Called once, before any worker of the resumed sweep starts."""
    mine = {"folder": _folder_id(folder)}
    for stage, count in enumerate(_take_back(storage, spec, mine, "its sweep was killed")):
        if count:
            log(f"stage {stage + 1}: {count} trial(s) the killed sweep left running go on")


def take_back_of_process(storage, spec: SweepSpec, folder: Path, pid: int) -> int:
    """Hand back the trials that a worker of this folder, killed, left RUNNING."""
    mine = {"folder": _folder_id(folder), "pid": pid}
    return sum(_take_back(storage, spec, mine, f"its worker (pid {pid}) was killed"))


def work_stage(study: optuna.Study, spec: SweepSpec, stage: int, params: Sequence[Param], folder: Path,
               trial_fn: TrialFn, log: Callable[[str], None]) -> None:
    """Run this stage's trials until its count has finished, here and in every other worker."""
    from optuna.trial import TrialState

    from zoo.tools.sweep_trial import ReportToTrial, reported_key

    count = stage_size(spec, params, stage)
    while True:
        fail_dead_trials(study)
        trials = study.get_trials(deepcopy=False)
        live = [t for t in trials if t.state != TrialState.FAIL]
        if sum(t.state.is_finished() for t in live) >= count:
            return
        if len(live) >= count and not any(t.state == TrialState.WAITING for t in live):
            time.sleep(POLL_SECONDS)  # the last trials run in other workers
            continue
        trial = ask(study)
        earlier = sum(t.number < trial.number and t.state != TrialState.FAIL for t in study.get_trials(deepcopy=False))
        if earlier >= count:
            trial.set_user_attr("surplus", f"{earlier} trials numbered below it already make the count")
            study.tell(trial, state=TrialState.FAIL)
            continue
        study.sampler = _sampler(spec, _trial_seed(spec, stage, trial.number))
        values = suggest(trial, params)
        own = trial.user_attrs.get("folder") == _folder_id(folder) and trial.user_attrs.get("run_name")
        run_dir = folder / (own or f"s{stage + 1}-t{trial.number + 1:02d}")
        trial.set_user_attr("folder", _folder_id(folder))
        trial.set_user_attr("run_name", run_dir.name)
        trial.set_user_attr("pid", os.getpid())
        overrides = trial_overrides(spec, stage, folder) + [override_text(k, v) for k, v in values.items()]
        report = ReportToTrial(trial, reported_key(spec.metric), prune=spec.pruner != "none")
        try:
            with _Heartbeat(study, trial):
                metrics, status, seconds, epochs = trial_fn(spec.base, overrides, run_dir, [report])
        except BaseException as exc:
            hand_back(study, study._storage.get_trial(trial._trial_id), f"stopped: {brief(str(exc))}")
            raise
        if spec.metric not in metrics:
            raise ZooError(f"metric {spec.metric!r} not among the run's metrics: {', '.join(sorted(metrics))}")
        value = float(metrics[spec.metric])
        if report.pruned:
            status = "pruned"
        # a trial handed back and taken again has a new number in the study; the row keeps its folder's
        number = int(run_dir.name.rsplit("-t", 1)[1])
        row = {"stage": stage + 1, "trial": number, **values, spec.metric: value, "status": status,
               "epochs": epochs or report.epochs, "seconds": seconds, "run_dir": str(run_dir)}
        if spec.metric != "val_acc" and "val_acc" in metrics:
            row["val_acc"] = float(metrics["val_acc"])
        trial.set_user_attr("row", row)
        if status == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        else:  # Optuna fails a NaN value; a diverged trial is the worst instead
            worst = -math.inf if spec.goal == "maximize" else math.inf
            study.tell(trial, value if math.isfinite(value) else worst)
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        log(f"  s{stage + 1} t{number:02d}  {shown}  {spec.metric}={value:.4f}  {status}")


def trial_overrides(spec: SweepSpec, stage: int, folder: Path) -> list[str]:
    """Every trial's overrides but its parameters: its W&B group (the sweep folder's name, unless the sweep
    names one), the sweep's and the stage's overrides, the seed, the stage's epochs."""
    group = [] if any(o.startswith("logger.wandb.group=") for o in spec.overrides) else [
        f"logger.wandb.group={folder.name}"]
    out = [*group, *spec.overrides, *spec.stage_overrides[stage], f"seed={spec.seed}"]
    epochs = spec.epochs_per_stage[stage]
    if epochs:
        out.append(f"trainer.max_epochs={int(epochs)}")
    return out


def stage_rows(storage, spec: SweepSpec, stage: int) -> list[dict[str, Any]] | None:
    """The finished trials' rows of a stage (every worker's), or None when its study does not exist yet."""
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=study_name(spec, stage), storage=storage)
    except KeyError:
        return None
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    return [dict(t.user_attrs["row"]) for t in sorted(done, key=lambda t: t.number) if "row" in t.user_attrs]


def finished_trials(storage, spec: SweepSpec) -> int | None:
    """The trials the sweep's studies in ``storage`` ran, when every stage already ran its count there (a sweep
    of this name finished on this storage: joining it runs nothing); None otherwise."""
    import optuna
    from optuna.trial import TrialState

    ran = 0
    for stage in range(spec.stages):
        try:
            study = optuna.load_study(study_name=study_name(spec, stage), storage=storage)
        except KeyError:
            return None
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        if done < stage_size(spec, spec.params, stage):
            return None
        ran += done
    return ran


def participate(storage, spec: SweepSpec, folder: Path, trial_fn: TrialFn, log: Callable[[str], None],
                *, owner: bool) -> None:
    """Work on every stage of the sweep with the other processes on its storage. ``owner``: this process
    resumes the sweep's folder (or is its first worker), and finishes a stage's setup a killed process left
    halfway."""
    params = list(spec.params)
    for stage in range(spec.stages):
        study = stage_study(storage, spec, stage, params, owner=owner)
        epochs = spec.epochs_per_stage[stage]
        log(f"stage {stage + 1}/{spec.stages}: {stage_size(spec, params, stage)} trials"
            + (f", {epochs} epochs each" if epochs else "") + "; "
            + ", ".join(f"{p.key} {p.describe()}" for p in params))
        work_stage(study, spec, stage, params, folder, trial_fn, log)
        best = best_trial(stage_rows(storage, spec, stage) or [], spec.metric, spec.goal)
        if best is not None:
            params = [p.narrow(best[p.key], o) for p, o in zip(params, spec.params)]


def ranges_of(storage, spec: SweepSpec) -> list[dict[str, str]]:
    """Each stage's searched ranges, as its study recorded them."""
    import optuna

    out = []
    for stage in range(spec.stages):
        try:
            out.append(optuna.load_study(study_name=study_name(spec, stage), storage=storage).user_attrs["ranges"])
        except KeyError:
            break
    return out
