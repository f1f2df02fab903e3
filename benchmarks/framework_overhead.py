"""Framework overhead: a recipe trained the way `zoo train` trains it, against a hand-written PyTorch loop.

Both sides do the same work on the same data: the network zoo.core.build.build_network makes from the recipe
(initialized the same way), the recipe's augmentation pipeline (zoo.data.augment.AugmentPipeline) on each
training batch, standardization after it, cross-entropy, the recipe's optimizer (same parameter groups)
and learning-rate schedule stepped every batch, fp32, the training split held on the device and batched
by index over a fresh permutation each epoch. Whatever zoo spends beyond that is framework overhead.

* zoo: zoo.training.fit.fit_one (Classifier + make_trainer + the recipe's DataModule: Lightning with zoo's
  callbacks and loggers), as `zoo train` runs it, with the recipe's ``performance.steps_per_execution``
  (the default recipe runs an epoch's 20 optimizer steps per Lightning step; ``--override
  performance.steps_per_execution=1`` measures one Lightning step per batch). The progress bar is off,
  as it is whenever stderr is not a terminal (``--progress-bar`` turns it on); W&B is off (``--wandb
  offline`` turns it on).
* hand: a plain for-loop over index-sliced tensor batches: augment, forward, loss.backward(),
  optimizer.step(), scheduler.step(); nothing else (no metrics, no logging, no checkpoints), and torch's
  default (non-deterministic) algorithms, where the recipes ask Lightning for deterministic ones.

What is timed: training epochs. A zoo epoch runs from one on_train_epoch_start to the next (the last
one to on_train_end), so it holds every per-step and per-epoch cost of the training loop (hooks,
logging, metrics, callbacks, the epoch-end reduction of the training metrics), less the epoch-end
validation run (from Lightning's validation loop starting, its set-up included, to its end) and the
checkpoint files written after it: the hand loop does neither, and both are reported apart
(``zoo_val_and_checkpoint_s_per_epoch``).

How: the two sides alternate epoch by epoch inside one process. The zoo fit's timing callback runs one
hand-loop epoch (its own model, optimizer and schedule) at each on_train_epoch_start, while zoo's clock
is stopped, so every zoo epoch has a hand epoch beside it that ran under the same load: the machine is
shared, and load that comes and goes would otherwise land on one side more than the other. The first
epoch of each side in every run is a warm-up and not timed. Figures, in training samples per second:

* ``zoo_samples_per_s``, ``hand_samples_per_s``: each side's best epoch (wall clock), the one least
  disturbed by other jobs; ``ratio`` = zoo / hand of these two (the figure the target is about);
* ``*_median`` and ``ratio_median``: the median epochs; ``ratio_paired``: the median over neighbouring
  epoch pairs of hand time / zoo time, the steadiest estimate on a busy machine;
* ``*_cpu_samples_per_s`` and ``ratio_cpu``: the same per CPU second of the process, which other jobs
  taking the cores barely move.

Workloads:

* ``mlp_digits``: the default recipe, recipes/mlp-digits.yaml (MLP 2x512, batch norm, dropout 0.2,
  1-pixel random crop, AdamW, cosine), on scikit-learn's digits (1,257 training images, batch 64).
* ``resnet20_synthetic``: ResNet-20 (the zoo's ``resnet`` model, depth 20) on the ``synthetic`` data
  set's uint8 3x32x32 (CIFAR-sized) images, flip + pad-4 crop, Nesterov SGD with warmup + cosine (the
  resnet-digits recipe's optimizer and schedule), batch 128, 1,024 training images.

    python benchmarks/framework_overhead.py --json                 # 2-4 minutes on 2 busy CPU cores
    python benchmarks/framework_overhead.py --threads 2             # torch threads (default 1, see below)
    python benchmarks/framework_overhead.py --override performance.steps_per_execution=1
    python benchmarks/framework_overhead.py --quick --json          # a tiny run: checks that it works

Threads: 1 torch thread by default. On the project's shared 2-core machine two OpenMP threads stall
whenever another process holds a core, and then both sides measure their neighbours more than
themselves. ``--threads 2`` measures the 2-thread case: less time in arithmetic per step, so the same
per-step overhead weighs more.

W&B: off by default, because its offline mode runs a background process that competes for the same
two cores during the whole run; ``--wandb offline`` measures the recipes exactly as shipped.

Not a test: throughput depends on the machine and on whatever else it is running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Spinning OpenMP threads collapse when the cores are shared; waiting passively costs nothing measurable
# on an idle machine. Must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F

TARGET = 0.95

# Workload -> (recipe, overrides, epochs per run, runs); --quick shrinks them as QUICK says.
WORKLOADS = {
    "mlp_digits": ("mlp-digits", [], 8, 5),
    "resnet20_synthetic": (
        "resnet-digits",
        [
            (
                "data={name: synthetic, shape: [3, 32, 32], num_classes: 10, n_train: 1024, n_val: 256, "
                "n_test: 256, batch_size: 128, standardize: channel}"
            ),
            "augment=[flip, {name: crop, padding: 4}]",
            "tta={crops: 0}",
            "schedule.warmup_epochs=1",
        ],
        4,
        3,
    ),
}
QUICK = {
    "mlp_digits": (["data.val_fraction=0.05", "data.test_fraction=0.05"], 2, 1),
    "resnet20_synthetic": (
        ["data.n_train=64", "data.n_val=32", "data.n_test=32", "data.batch_size=32",
         "data.eval_batch_size=32"],
        2,
        1,
    ),
}


def load_recipe(name: str, overrides: list[str], epochs: int, wandb: str):
    from zoo.core.recipe import load

    return load(name, [*overrides, f"trainer.max_epochs={epochs}", f"logger.wandb.mode={wandb}"])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now() -> tuple[float, float]:
    """Wall-clock and process CPU seconds; CPU time barely moves when other jobs take the cores."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = now()
    return wall - start[0], cpu - start[1]


# --- by hand -----------------------------------------------------------------------------------------


class HandLoop:
    """The same training written as a plain PyTorch loop, one epoch per call."""

    def __init__(self, recipe, device: torch.device) -> None:
        from zoo.core.build import build_data, build_network, build_optimizer, build_schedule
        from zoo.data.augment import AugmentPipeline

        spec = recipe.to_dict()
        self.device = device
        self.label_smoothing = recipe.regularization.label_smoothing
        torch.manual_seed(recipe.seed)
        dm = build_data(recipe.data, seed=recipe.seed)
        shape, classes = dm.input_shape, dm.num_classes
        self.x, self.y = dm.train.x.to(device), dm.train.y.to(device)  # the whole split on the device, once
        self.mean = dm.mean.expand(shape).to(device)
        self.std = dm.std.expand(shape).to(device)
        self.net = build_network(spec["model"], shape, classes).to(device)
        if hasattr(self.net, "initialize"):
            self.net.initialize(self.standardize(dm.sample().to(device)))
        self.augment = AugmentPipeline(spec["augment"], classes, seed=recipe.seed)
        decay_all = recipe.regularization.decay_norm_and_bias
        self.optimizer = build_optimizer(spec["optimizer"], self.net, decay_all)
        self.batch_size = dm.batch_size
        self.steps = -(-len(self.x) // self.batch_size)
        total = self.steps * recipe.trainer.max_epochs
        self.scheduler = build_schedule(spec["schedule"], self.optimizer, total, self.steps)["scheduler"]
        self.epochs_done = 0

    @staticmethod
    def unit(batch: torch.Tensor) -> torch.Tensor:
        return batch.float().div_(255) if batch.dtype == torch.uint8 else batch.float()

    def standardize(self, batch: torch.Tensor) -> torch.Tensor:
        return (self.unit(batch) - self.mean) / self.std

    def epoch(self) -> tuple[float, float]:
        """One training epoch; its (wall, cpu) seconds."""
        # Lightning turns deterministic algorithms on for zoo's side (the recipe default, warn) and this may
        # run inside its fit: the loop runs with torch's defaults, as a minimal loop would, then puts it back.
        deterministic = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        torch.use_deterministic_algorithms(False)
        net, opt, sched, bs = self.net, self.optimizer, self.scheduler, self.batch_size
        x, y, n = self.x, self.y, len(self.x)
        # its own random draws (dropout) leave zoo's generators where they were: zoo trains as it would alone
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.enable_grad():
                net.train()
                _sync(self.device)
                start = now()
                gen = torch.Generator().manual_seed(self.epochs_done)
                order = torch.randperm(n, generator=gen).to(self.device)
                for i in range(self.steps):
                    idx = order[i * bs : (i + 1) * bs]
                    xb, yb = x[idx], y[idx]
                    if self.augment:
                        xb, yb = self.augment(self.unit(xb), yb)
                    logits = net(self.standardize(xb))
                    loss = F.cross_entropy(logits, yb, label_smoothing=self.label_smoothing)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                _sync(self.device)
                took = since(start)
        finally:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        self.epochs_done += 1
        return took


# --- zoo, with the hand loop's epochs in between -------------------------------------------------------


def epoch_timer(device: torch.device, hand: HandLoop):
    """A Lightning callback timing zoo's training epochs and running one hand-loop epoch before each.

    Validation passes and checkpoint writes are taken out of zoo's epochs and kept apart. The hand epoch
    runs while zoo's clock is stopped, so the two sides alternate epoch by epoch (hand, zoo, hand, zoo,
    ...) and every zoo epoch has a hand epoch next to it that ran under the same load on the machine.
    """
    from lightning.pytorch import Callback

    class EpochTimer(Callback):
        def __init__(self) -> None:
            # per epoch, (wall, cpu) seconds: zoo's training, what was taken out of it, and the hand loop's
            self.train_s: list[tuple[float, float]] = []
            self.other_s: list[tuple[float, float]] = []
            self.hand_s: list[tuple[float, float]] = []
            self._start: tuple[float, float] | None = None
            self._excluded = (0.0, 0.0)

        def _exclude(self, span: tuple[float, float]) -> None:
            self._excluded = (self._excluded[0] + span[0], self._excluded[1] + span[1])

        def setup(self, trainer, pl_module, stage: str) -> None:
            if stage != "fit":
                return
            save = trainer.save_checkpoint

            def timed_save(*args, **kwargs):
                begin = now()
                try:
                    return save(*args, **kwargs)
                finally:
                    if self._start is not None:
                        self._exclude(since(begin))

            trainer.save_checkpoint = timed_save  # measured, not changed: the same method runs
            val_loop = trainer.fit_loop.epoch_loop.val_loop
            validate = val_loop.run

            def timed_validation():
                if self._start is None:
                    return validate()
                _sync(device)
                begin = now()
                try:
                    return validate()
                finally:
                    _sync(device)
                    self._exclude(since(begin))

            val_loop.run = timed_validation  # the whole pass, its set-up (model.eval(), loaders) included

        def _close(self) -> None:
            if self._start is None:
                return
            _sync(device)
            total = since(self._start)
            self.train_s.append((total[0] - self._excluded[0], total[1] - self._excluded[1]))
            self.other_s.append(self._excluded)
            self._start = None

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._close()
            self.hand_s.append(hand.epoch())
            _sync(device)
            self._excluded = (0.0, 0.0)
            self._start = now()

        def on_train_end(self, trainer, pl_module) -> None:
            self._close()

    return EpochTimer()


def run_pair(recipe, device: torch.device, progress: bool = False) -> dict:
    """One zoo fit through zoo.training.fit.fit_one, as `zoo train` runs it, with hand-loop epochs in between."""
    from zoo.training.fit import fit_one

    hand = HandLoop(recipe, device)
    timer = epoch_timer(device, hand)
    with tempfile.TemporaryDirectory() as folder:
        fit_one(recipe, Path(folder) / "run", progress=progress, callbacks=[timer])
    if len(timer.train_s) != len(timer.hand_s):
        raise RuntimeError(f"timed {len(timer.train_s)} zoo epochs but {len(timer.hand_s)} hand epochs")
    return {"zoo": timer.train_s, "hand": timer.hand_s, "other": timer.other_s}


# --- measuring -----------------------------------------------------------------------------------------


def measure(recipe, runs: int, device: torch.device, progress: bool = False) -> dict:
    from zoo.core.build import build_data

    dm = build_data(recipe.data, seed=recipe.seed)
    samples, batch_size = len(dm.train), dm.batch_size
    results = [run_pair(recipe, device, progress) for _ in range(runs)]
    median = statistics.median

    def rates(side: str, clock: int) -> list[float]:
        # every timed epoch (all but each run's first, the warm-up); clock 0: wall, 1: CPU
        return [samples / epoch[clock] for run in results for epoch in run[side][1:]]

    zoo, hand = rates("zoo", 0), rates("hand", 0)
    zoo_cpu, hand_cpu = rates("zoo", 1), rates("hand", 1)
    paired = [h[0] / z[0] for run in results for z, h in zip(run["zoo"][1:], run["hand"][1:])]
    other = [wall for run in results for wall, _ in run["other"][1:]]
    best_zoo, best_hand = round(max(zoo), 1), round(max(hand), 1)
    epochs = recipe.trainer.max_epochs
    return {
        "zoo_samples_per_s": best_zoo,
        "hand_samples_per_s": best_hand,
        "ratio": round(best_zoo / best_hand, 3),
        "zoo_median": round(median(zoo), 1),
        "hand_median": round(median(hand), 1),
        "ratio_median": round(median(zoo) / median(hand), 3),
        "ratio_paired": round(median(paired), 3),
        "zoo_cpu_samples_per_s": round(median(zoo_cpu), 1),
        "hand_cpu_samples_per_s": round(median(hand_cpu), 1),
        "ratio_cpu": round(median(zoo_cpu) / median(hand_cpu), 3),
        "zoo_ms_per_step_over_hand": round(1000 * batch_size * (1 / median(zoo) - 1 / median(hand)), 3),
        "zoo_val_and_checkpoint_s_per_epoch": round(median(other), 4) if other else None,
        "train_samples": samples,
        "batch_size": batch_size,
        "steps_per_epoch": -(-samples // batch_size),
        "epochs_per_run": epochs,
        "timed_epochs_per_run": epochs - 1,
        "runs": runs,
        "model": recipe.model.get("name"),
        "optimizer": recipe.optimizer.get("name"),
        "schedule": recipe.schedule.get("name"),
        "augment": [a["name"] for a in recipe.augment],
        "deterministic_zoo": recipe.trainer.deterministic,
        "steps_per_execution": recipe.performance.steps_per_execution,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads on both sides (default 1)")
    parser.add_argument("--runs", type=int, default=None, help="zoo fits, each with a hand loop beside it")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run, the first one untimed")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override for both sides, as on the zoo command line (repeatable)")
    parser.add_argument("--wandb", choices=["disabled", "offline"], default="disabled", help="zoo's W&B mode")
    parser.add_argument("--progress-bar", action="store_true", help="zoo with its progress bar (on stderr)")
    parser.add_argument("--quick", action="store_true", help="a tiny run: checks that it works, not speed")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args(argv)
    if args.wandb == "disabled":
        os.environ["WANDB_MODE"] = "disabled"
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    import warnings

    from zoo.training.fit import _quiet_lightning

    _quiet_lightning()  # what `zoo train` does first: Lightning's tips are noise here too
    warnings.filterwarnings("ignore", message=r".*does not have many workers")

    results = {}
    for name in args.workloads:
        recipe_name, overrides, epochs, runs = WORKLOADS[name]
        if args.quick:
            extra, epochs, runs = QUICK[name]
            overrides = [*overrides, *extra]
        epochs = args.epochs or epochs
        runs = args.runs or runs
        if epochs < 2:
            parser.error("--epochs: at least 2 (the first is a warm-up)")
        recipe = load_recipe(recipe_name, [*overrides, *args.override], epochs, args.wandb)
        # Lightning's progress bar (and anything else that prints while training) goes to stderr, so
        # stdout holds the results alone
        with contextlib.redirect_stdout(sys.stderr):
            results[name] = measure(recipe, runs, device, args.progress_bar)

    lowest = min(w["ratio"] for w in results.values())
    out = {
        "workloads": results,
        "target_ratio": TARGET,
        "min_ratio": lowest,
        "target_met": lowest >= TARGET,
        "measures": "training samples/s over training epochs (zoo: on_train_epoch_start to the next, less "
        "validation and checkpoint writes); hand and zoo epochs alternate in one process; first epoch of "
        "each run untimed; ratio = zoo / hand of each side's best epoch",
        "device": str(device) if device.type != "cuda" else f"cuda ({torch.cuda.get_device_name(device)})",
        "torch_threads": torch.get_num_threads(),
        "cpu_cores": os.cpu_count(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "overrides": args.override,
        "wandb": args.wandb,
        "progress_bar": args.progress_bar,
        "quick": args.quick,
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(out))
        return out
    for name, w in results.items():
        print(f"{name}: {w['train_samples']} samples/epoch, batch {w['batch_size']}, "
              f"{w['runs']} runs x {w['timed_epochs_per_run']} timed epochs, hand and zoo epochs alternating")
        for side in ("zoo", "hand"):
            print(f"  {side:4s} {w[side + '_samples_per_s']:10,.1f} samples/s in its best epoch "
                  f"(median {w[side + '_median']:,.1f})")
        print(f"  ratio zoo/hand {w['ratio']:.3f} (medians {w['ratio_median']:.3f}, "
              f"paired {w['ratio_paired']:.3f}, CPU time {w['ratio_cpu']:.3f}); "
              f"zoo's overhead {w['zoo_ms_per_step_over_hand']:.2f} ms/step")
        print(f"  not counted: zoo's validation + checkpoints, "
              f"{w['zoo_val_and_checkpoint_s_per_epoch']} s/epoch")
    print(f"{out['torch_threads']} torch threads on {out['device']} ({out['cpu_cores']} cores); "
          f"target {TARGET}: {'met' if out['target_met'] else 'NOT met'} (lowest ratio {lowest})")
    return out


if __name__ == "__main__":
    main()
