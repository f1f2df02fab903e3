"""Scaling: the zoo's training throughput (samples/s) against batch size and, with several GPUs, device count.

For each batch size the recipe is trained for a fixed number of optimizer steps: ``--warmup`` steps
first (untimed: CUDA set-up, cuDNN kernel choice, allocator growth), then ``--steps`` timed ones. The
model, data set, augmentations, optimizer and schedule are the recipe's, built by the zoo's own
functions, and the Trainer is the zoo's (zoo.training.fit.make_trainer: its callbacks, loggers and the
recipe's trainer settings such as precision). What is left out is what does not scale with the batch:
validation is switched off (``limit_val_batches=0``) and the time between the end of one epoch and the
first batch of the next (epoch-end hooks, the checkpoint written there, the next epoch's shuffle) is not
counted; every batch's data fetch, augmentation, forward, backward and optimizer step is. CUDA is
synchronized where the clock starts and stops. The zoo's divergence guard is switched off for the sweep
(``checkpoint.divergence_guard=false``): a short run at a large batch may diverge, and must still run
its steps.

Each row's ``ratio`` is its throughput over that of the smallest batch size (on the same number of
devices). With several GPUs, ``device_rows`` repeat the sweep on 2, 4, ... GPUs with DDP (per-device
batch as listed, global batch = batch x devices), each in its own process, with ``speedup`` over one
device at the same per-device batch and ``efficiency`` = speedup / devices. On one device or none,
``devices`` is 1 and ``device_rows`` is empty.

    python benchmarks/batch_scaling.py --json                        # GPU: cifar10-fast; CPU: resnet-digits
    python benchmarks/batch_scaling.py --recipe mlp-digits --batch-sizes 32 64 128 256
    python benchmarks/batch_scaling.py --quick --json                # a tiny run: checks that it works, not speed

On a GPU the default recipe, cifar10-fast, reads the shared CIFAR-10 JPEG copy (data/cifar10-jpg, or the
archive unpacked to a temporary folder); ``--data-root`` points any recipe at another image folder.
Not a test: throughput depends on the machine and on whatever else it is running.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Spinning OpenMP threads collapse when other jobs share the cores (several-fold slower steps on the
# project's busy 2-core machine); waiting passively costs nothing measurable. Set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _cifar_jpeg

DEFAULTS = {
    # device: (recipe, batch sizes, timed steps, warm-up steps)
    "cuda": ("cifar10-fast", [128, 256, 512, 1024, 2048], 50, 10),
    "cpu": ("resnet-digits", [16, 32, 64, 128, 256], 20, 3),
}
QUICK = ("resnet-digits", [16, 32, 64], 4, 1)
# Data sets whose files are usually absent here but whose JPEG copy is shared: swapped in unless --data-root.
JPEG_STANDINS = {"cifar10"}
CARRIED_DATA_KEYS = ("batch_size", "eval_batch_size", "val_fraction", "split_seed", "standardize")


def make_step_timer():
    """A callback timing optimizer steps from ``warmup`` on, epoch boundaries excluded, and counting their samples."""
    import torch
    from lightning.pytorch.callbacks import Callback

    def sync() -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    class StepTimer(Callback):
        def __init__(self, warmup: int) -> None:
            self.warmup = warmup
            self.seconds = 0.0
            self.steps = self.samples = 0
            self._open: float | None = None
            self._timed_batch = False

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self._timed_batch = trainer.global_step >= self.warmup
            if self._timed_batch and self._open is None:
                sync()
                self._open = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if self._timed_batch:
                self.steps += 1
                self.samples += len(batch[0])

        def _close(self) -> None:
            if self._open is not None:
                sync()
                self.seconds += time.perf_counter() - self._open
                self._open = None

        # Callbacks run before the checkpoint callback (Lightning orders checkpointing last), so the
        # clock stops before the epoch's checkpoint is written.
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            self._close()

        def on_train_end(self, trainer, pl_module) -> None:
            self._close()

    return StepTimer


def build_data_once(recipe):
    from zoo.core.build import build_data

    return build_data(recipe.data, seed=recipe.seed)


def with_batch_size(dm, batch_size: int):
    """The same tensors and statistics, batched differently (no second decode or statistics pass)."""
    from zoo.data.datamodule import DataModule

    return DataModule(
        dm.train,
        dm.val,
        dm.test,
        num_classes=dm.num_classes,
        batch_size=batch_size,
        eval_batch_size=dm.eval_batch_size,
        mean=dm.mean,
        std=dm.std,
        classes=dm.classes,
        seed=dm.seed,
    )


def measure(
    recipe_name: str,
    overrides: list[str],
    batch_size: int,
    devices: int,
    steps: int,
    warmup: int,
    run_dir: Path,
    dm=None,
) -> dict | None:
    """Train ``warmup + steps`` steps at ``batch_size`` per device; samples/s of the timed ones (rank 0 only)."""
    import lightning as L
    import torch

    from zoo.core.recipe import load
    from zoo.training.classifier import Classifier
    from zoo.training.fit import make_trainer

    run = [
        *overrides,
        f"data.batch_size={batch_size}",
        f"trainer.devices={devices}",
        f"trainer.max_steps={warmup + steps}",
        "trainer.max_epochs=1000000",  # max_steps ends the run; epochs only bound it
        "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "logger.wandb.mode=disabled",
        "performance.steps_per_execution=1",  # the step timer times Lightning's steps: one optimizer step each
    ]
    if devices > 1:
        run.append("trainer.strategy=ddp")
    recipe = load(recipe_name, run)
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    dm = build_data_once(recipe) if dm is None else with_batch_size(dm, batch_size)
    module = Classifier(recipe.to_dict(), dm.input_shape, dm.num_classes)
    module.set_input_stats(dm.mean, dm.std)
    module.initialize(dm.sample())
    timer = make_step_timer()(warmup)
    trainer = make_trainer(recipe, run_dir, progress=False, extra_callbacks=[timer])
    trainer.fit(module, datamodule=dm)
    world = trainer.world_size
    if trainer.global_rank != 0:
        return None
    if timer.steps < steps:
        raise SystemExit(
            f"batch {batch_size}: only {timer.steps} of {steps} timed steps ran (did a monitor stop the run?)"
        )
    per_rank = timer.samples / timer.seconds
    row = {
        "batch_size": batch_size,
        "devices": world,
        "global_batch": batch_size * world,
        "steps": timer.steps,
        "samples": timer.samples * world,
        "seconds": round(timer.seconds, 4),
        "samples_per_s": round(per_rank * world, 1),
        "_unrounded": per_rank * world,
    }
    if batch_size > len(dm.train):
        row["note"] = (
            f"batch larger than the {len(dm.train)}-sample training split: every step sees all of it"
        )
    del trainer, module
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def data_overrides(recipe_name: str, data_root: str | None, scratch: Path) -> tuple[list[str], str]:
    """Point a recipe at an image folder: the given one, or the shared CIFAR-10 JPEGs for a CIFAR-10 recipe."""
    from zoo.core.recipe import load

    data = load(recipe_name).data
    if data_root is None and data["name"] not in JPEG_STANDINS:
        return [], f"the recipe's own ({data['name']})"
    if data_root is None:
        folder, how = _cifar_jpeg.full_folder(None, scratch)
        source = f"CIFAR-10 JPEG copy, {how}: {folder}"
    else:
        folder, source = Path(data_root).expanduser().resolve(), f"image folder {data_root}"
    out = ["data.name=imagefolder", f"data.root={folder}"]
    out += [f"data.{k}={json.dumps(data[k])}" for k in CARRIED_DATA_KEYS if k in data]
    return out, source


def device_counts(requested: list[int] | None, device: str) -> list[int]:
    import torch

    # On the CPU, "devices" are DDP processes (gloo): only when asked for, to try the DDP path out.
    available = (
        torch.cuda.device_count() if device == "cuda" else (_cifar_jpeg.cpu_cores() if requested else 1)
    )
    if requested:
        bad = [n for n in requested if n > available or n < 1]
        if bad:
            raise SystemExit(f"--device-counts {bad}: this machine has {available} usable device(s)")
        return sorted(set(requested) | {1})
    counts, n = [1], 2
    while n <= available:
        counts.append(n)
        n *= 2
    if available > 1 and available not in counts:
        counts.append(available)
    return counts


def run_ddp(
    args, overrides: list[str], batch_size: int, devices: int, steps: int, warmup: int, scratch: Path
) -> dict:
    """One DDP measurement in a fresh process: Lightning starts the other ranks by running it again."""
    out = scratch / f"ddp-{devices}-{batch_size}.json"
    spec = {
        "recipe": args.recipe,
        "overrides": overrides,
        "batch_size": batch_size,
        "devices": devices,
        "steps": steps,
        "warmup": warmup,
        "run_dir": str(scratch / f"ddp-{devices}-{batch_size}"),
        "out": str(out),
    }
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    done = subprocess.run(cmd, check=False, text=True, capture_output=True, cwd=_cifar_jpeg.ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{devices} devices, batch {batch_size}: the DDP run failed\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def quiet_lightning() -> None:
    """What ``zoo train`` quiets, and the checkpoint callback's complaint that validation, switched off
    here on purpose, logged no ``val/acc``."""
    import warnings

    from zoo.training.fit import _quiet_lightning

    _quiet_lightning()
    warnings.filterwarnings("ignore", message=r".*could not find the monitored key")


def worker(spec: dict) -> None:
    quiet_lightning()
    row = measure(
        spec["recipe"],
        spec["overrides"],
        spec["batch_size"],
        spec["devices"],
        spec["steps"],
        spec["warmup"],
        Path(spec["run_dir"]),
    )
    if row is not None:  # rank 0
        Path(spec["out"]).write_text(json.dumps(row))


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", help="default: cifar10-fast on a GPU, resnet-digits on the CPU")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="per-device batch sizes")
    parser.add_argument("--steps", type=int, help="timed optimizer steps per batch size")
    parser.add_argument("--warmup", type=int, help="untimed steps before them")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument(
        "--device-counts",
        type=int,
        nargs="+",
        help="GPU counts (default: 1, 2, 4, ... up to all); on the CPU, DDP processes (default: 1)",
    )
    parser.add_argument("--data-root", help="train on this image folder instead of the recipe's data")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe override (repeatable), e.g. trainer.precision=32-true",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="a tiny run: checks that it works, not speed")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return None

    import lightning
    import torch

    quiet_lightning()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: PyTorch sees no CUDA device here")
    recipe, sizes, steps, warmup = QUICK if args.quick else DEFAULTS[device]
    recipe = args.recipe or recipe
    args.recipe = recipe
    sizes = sorted(set(args.batch_sizes or sizes))
    steps = args.steps or steps
    warmup = args.warmup if args.warmup is not None else warmup
    if steps < 1 or warmup < 0 or min(sizes) < 1:
        parser.error("--steps and batch sizes must be positive, --warmup not negative")
    # --quick stays on one device unless counts are asked for: it checks the plumbing, not the GPUs
    counts = [1] if args.quick and not args.device_counts else device_counts(args.device_counts, device)

    with tempfile.TemporaryDirectory(prefix="batch-scaling-") as tmp:
        scratch = Path(tmp)
        data, source = data_overrides(recipe, args.data_root, scratch)
        overrides = [*data, f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}"]
        from zoo.core.recipe import load

        if getattr(getattr(load(recipe, overrides), "checkpoint", None), "divergence_guard", False):
            # A short run at a large batch with the lr scaled up may well diverge, and the guard would then
            # stop it early; a NaN step costs the same time, so the sweep runs its steps regardless.
            overrides.append("checkpoint.divergence_guard=false")
        overrides += args.override
        resolved = load(recipe, overrides)
        dm = build_data_once(resolved)
        rows = [measure(recipe, overrides, bs, 1, steps, warmup, scratch / f"bs{bs}", dm) for bs in sizes]
        device_rows = []
        for n in counts[1:]:
            device_rows += [run_ddp(args, overrides, bs, n, steps, warmup, scratch) for bs in sizes]
        train_size = len(dm.train)

    base = rows[0]["_unrounded"]
    for row in rows:
        row["ratio"] = round(row["_unrounded"] / base, 3)
    single = {row["batch_size"]: row["_unrounded"] for row in rows}
    for row in device_rows:
        speedup = row["_unrounded"] / single[row["batch_size"]]
        row["speedup"] = round(speedup, 3)
        row["efficiency"] = round(speedup / row["devices"], 3)
    for row in rows + device_rows:
        del row["_unrounded"]
    result = {
        "benchmark": "batch_scaling",
        "quick": args.quick,
        "recipe": recipe,
        "overrides": overrides,
        "data": source,
        "train_samples": train_size,
        "precision": resolved.trainer.precision,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "gpu_count": torch.cuda.device_count(),
        "devices": max(counts),
        "device_counts": counts,
        "cpu_cores": _cifar_jpeg.cpu_cores(),
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": lightning.__version__,
        },
        "steps": steps,
        "warmup_steps": warmup,
        "rows": rows,
        "device_rows": device_rows,
        "timing": "samples/s over the timed steps (fetch, augment, forward, backward, optimizer step); "
        "validation off; epoch boundaries and checkpoint writes not counted; ratio: over the smallest batch",
    }
    if args.json:
        print(json.dumps(result))
        return result
    print(
        f"{recipe} on {device}"
        + (f" ({result['gpu']})" if result["gpu"] else "")
        + f", data: {source}; {warmup} warm-up + {steps} timed steps per batch size"
    )
    print(f"{'batch':>7} {'devices':>7} {'samples/s':>11} {'ratio':>7}")
    for row in rows:
        print(
            f"{row['batch_size']:>7} {row['devices']:>7} {row['samples_per_s']:>11,.0f} {row['ratio']:>7.2f}"
        )
    for row in device_rows:
        print(
            f"{row['batch_size']:>7} {row['devices']:>7} {row['samples_per_s']:>11,.0f} "
            f"speedup {row['speedup']:.2f} (efficiency {row['efficiency']:.2f})"
        )
    return result


if __name__ == "__main__":
    main()
