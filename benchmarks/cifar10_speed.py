"""CIFAR-10 speed: a zoo recipe against airbench (PyPI) on the same device and the same images.

The zoo side runs cifar10-fast on a GPU and cifar10-cpu on the CPU (``--recipe`` picks another).

Both sides train on the shared CIFAR-10 JPEG copy. The images are decoded once, by the zoo's
``imagefolder`` data set (and its decode cache); the zoo trains on that data set's train split and
airbench gets exactly the same train images and the same 10,000 test images, handed over as the
``cifar10/train.pt`` and ``cifar10/test.pt`` files its ``CifarLoader`` reads (uint8 NHWC images,
int64 labels, class names), so airbench runs its own unmodified loader and training function. The
zoo's train split is the JPEG copy's 50,000 training images less the 10% it holds out for validation
(the recipe's ``val_fraction``), so both sides train on 45,000 images, not the 50,000 of airbench's
published runs.

Each side runs in its own process: importing airbench switches cuDNN autotuning on for the whole
process, which must not leak into the zoo's run. Each side gets one untimed warm-up run first (what
airbench's README does with ``warmup94()``; for the zoo, a 3-step run of the same recipe), so CUDA
start-up and kernel selection are paid outside the measurement on both sides (``--no-warmup`` skips it).

What is compared (``train_seconds``) is airbench's own timer: training steps plus the final
test-time-augmented evaluation, excluding the per-epoch evaluations. The zoo gets the same
definition: its training loop less its per-epoch validation passes, plus its test pass (with the
recipe's test-time augmentation), CUDA synchronized at every edge. The checkpoints the zoo writes
after each validation count as training time: they are part of its run, and airbench writes none. ``wall_seconds`` is each side's
whole training call (zoo: ``zoo.train``, data loading, checkpoints and every evaluation included;
airbench: ``train94(...)`` with its per-epoch evaluations), for context.

    python benchmarks/cifar10_speed.py --json             # on a GPU: full size, one run per side
    python benchmarks/cifar10_speed.py --device cpu --no-warmup --json   # 2-core CPU: about 40 minutes
    python benchmarks/cifar10_speed.py --runs 5 --json    # mean of five seeds per side
    python benchmarks/cifar10_speed.py --tiny --json      # 300 images, 2 epochs, narrow nets: plumbing only
    python benchmarks/cifar10_speed.py --tiny --only zoo  # without airbench installed

airbench is not a dependency of the zoo and this script installs nothing: ``pip install airbench==0.1.8``.
On the CPU airbench needs three documented stand-ins for its hard-coded CUDA calls (see
``patch_airbench_for_cpu``); its training code itself runs unchanged, in float32, since its half
precision is about 100x slower than float32 on a CPU. The zoo's cifar10-cpu recipe trains under
bfloat16 autocast, which this project's CPUs (AVX-512 BF16) run about 1.9x faster than float32 for
this network: that, not a different network, is most of its lead in time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.util
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _cifar_jpeg

AIRBENCH_VERSION = "0.1.8"
INSTALL_HINT = f"pip install airbench=={AIRBENCH_VERSION}"
# From the README shipped in the airbench 0.1.8 sdist (single A100, mean of many runs). The issue's
# 2.59 s figure is for a faster variant that the PyPI package does not ship.
PUBLISHED = {
    "93": {"test_acc": 0.9300, "seconds": None, "gpu": "A100"},
    "94": {"test_acc": 0.9401, "seconds": 3.83, "gpu": "A100"},
    "95": {"test_acc": 0.9501, "seconds": 10.4, "gpu": "A100"},
    "96": {"test_acc": 0.9605, "seconds": 46.3, "gpu": "A100"},
}
# What the zoo must reach. On a GPU: airbench's accuracy (within a tolerance) in at most 1.5x its time.
# On the CPU (the 2-core machines this project runs on): at least 90% test accuracy in less training
# time than airbench in the same benchmark run.
TARGET = {
    "cuda": {"max_time_ratio": 1.5, "accuracy_tolerance": 0.002},
    "cpu": {"max_time_ratio": 1.0, "min_test_acc": 0.90},
}
# The zoo recipe each device runs unless --recipe names another.
DEFAULT_RECIPE = {"cuda": "cifar10-fast", "cpu": "cifar10-cpu"}
# --tiny: enough to run every code path on a 2-core CPU in seconds. Both networks are narrowed too (the
# zoo's nets to 8-16 channels, airbench's conv groups to 1/8 of their widths): at full width one
# 64-image step took several seconds on a busy 2-core machine, on each side.
TINY = {
    "train_per_class": 20,
    "test_per_class": 10,
    "batch_size": 32,
    "epochs": 2,
    "zoo_model": {"resnet": ["model.width=8"], "speedrun_cnn": ["model.widths=[8,16,16]"]},
    "airbench_width_divisor": 8,
}


# --------------------------------------------------------------------------------------------------
# zoo side (runs in its own process)
# --------------------------------------------------------------------------------------------------
def _sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def make_phase_timer():
    """A Lightning callback splitting a zoo run into training, per-epoch validation and testing time."""
    from lightning.pytorch.callbacks import Callback

    class PhaseTimer(Callback):
        def __init__(self) -> None:
            self.train = self.fit_val = self.test = 0.0
            self.steps = self.epochs = 0
            self._t0 = self._v0 = self._s0 = 0.0

        def on_train_start(self, trainer, pl_module) -> None:
            _sync()
            self._t0 = time.perf_counter()
            self.fit_val = 0.0

        def on_validation_start(self, trainer, pl_module) -> None:
            if trainer.state.fn == "fit" and not trainer.sanity_checking:
                _sync()
                self._v0 = time.perf_counter()

        def on_validation_end(self, trainer, pl_module) -> None:
            if trainer.state.fn == "fit" and not trainer.sanity_checking:
                _sync()
                self.fit_val += time.perf_counter() - self._v0

        def on_train_end(self, trainer, pl_module) -> None:
            _sync()
            self.train = time.perf_counter() - self._t0 - self.fit_val
            self.steps, self.epochs = trainer.global_step, trainer.current_epoch

        def on_test_start(self, trainer, pl_module) -> None:
            _sync()
            self._s0 = time.perf_counter()

        def on_test_end(self, trainer, pl_module) -> None:
            _sync()
            self.test = time.perf_counter() - self._s0

    return PhaseTimer()


def zoo_overrides(spec: dict, device: str) -> list[str]:
    """Overrides that point the recipe at the JPEG folder and at one device; ``spec['extra']`` last."""
    from zoo.core.recipe import load

    # switching the data set keeps the recipe's batch sizes and split (zoo.core.recipe.apply_override)
    out = ["data.name=imagefolder", f"data.root={spec['folder']}"]
    # one device, so that a many-GPU machine does not turn the run into DDP
    out += ["trainer.devices=1", "trainer.accelerator=" + ("gpu" if device == "cuda" else "cpu")]
    out += ["logger.wandb.mode=disabled"]  # the comparison is of training; airbench logs nothing either
    if spec["tiny"]:
        out += [
            f"data.batch_size={TINY['batch_size']}",
            f"trainer.max_epochs={TINY['epochs']}",
            "schedule.warmup_epochs=0.5",  # a recipe's warmup of several epochs would outlast the run
            *TINY["zoo_model"][load(spec["recipe"]).model["name"]],
        ]
    return out + list(spec["extra"])


def write_airbench_data(dm, dest: Path) -> None:
    """The zoo's own train and test splits, saved the way airbench's CifarLoader caches torchvision's CIFAR-10."""
    import torch

    (dest / "cifar10").mkdir(parents=True, exist_ok=True)
    for name, split in (("train", dm.train), ("test", dm.test)):
        # the zoo keeps NCHW; torchvision's CIFAR10.data, which airbench caches, is NHWC
        images = split.x.permute(0, 2, 3, 1).contiguous()
        torch.save(
            {"images": images, "labels": split.y.to(torch.int64), "classes": list(dm.classes)},
            dest / "cifar10" / f"{name}.pt",
        )


def environment(device: str) -> dict:
    import lightning
    import torch

    import zoo

    return {
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "gpu_count": torch.cuda.device_count(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if device == "cuda" else None,
            "lightning": lightning.__version__,
            "zoo": getattr(zoo, "__version__", None),
        },
    }


def zoo_worker(spec: dict) -> dict:
    """Resolve the device, build the data (and airbench's copy of it), then time the recipe's runs."""
    import torch

    import zoo
    from zoo.core.build import build_data
    from zoo.core.catalog import monitors
    from zoo.core.recipe import load

    device = spec["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: PyTorch sees no CUDA device here")
    spec["recipe"] = spec["recipe"] or DEFAULT_RECIPE[device]
    overrides = zoo_overrides(spec, device)
    recipe = load(spec["recipe"], overrides)
    # Decoding here leaves the zoo's cache behind, so the timed runs read decoded tensors as usual.
    dm = build_data(recipe.data, seed=recipe.seed)
    counts = {"train_images": len(dm.train), "val_images": len(dm.val), "test_images": len(dm.test)}
    if spec["airbench_dir"]:
        write_airbench_data(dm, Path(spec["airbench_dir"]))
    del dm
    out = {**environment(device), "recipe": spec["recipe"], "counts": counts, "overrides": overrides, "runs": []}
    if not spec["train"]:
        return out

    timers = []

    # A monitor, so that zoo.train itself, unchanged, puts the timer on its Trainer.
    @monitors.register("benchmark_phases")
    def benchmark_phases():
        """Times training (less validation) and testing of a run, for benchmarks/cifar10_speed.py."""
        timers.append(make_phase_timer())
        return timers[-1]

    with_timer = [*recipe.monitors, {"name": "benchmark_phases"}]
    overrides = [*overrides, f"monitors={json.dumps(with_timer)}"]
    scratch = Path(spec["scratch"])
    if spec["warmup"]:
        # A few steps and one batch of each evaluation: CUDA context, cuDNN/cuBLAS set-up, allocator.
        # max_steps (not limit_train_batches) so that an epoch-based lr warmup still fits the run.
        warm = ["trainer.max_steps=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
        with warnings.catch_warnings():
            # it stops before any validation, so the checkpoint callback finds no val/acc and says so
            warnings.simplefilter("ignore")
            zoo.train(spec["recipe"], [*overrides, *warm], run_dir=scratch / "zoo-warmup", progress=False)
    for i in range(spec["runs"]):
        seed = recipe.seed + i
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        result = zoo.train(
            spec["recipe"], [*overrides, f"seed={seed}"], run_dir=scratch / f"zoo-{i}", progress=False
        )
        wall = time.perf_counter() - start
        timer = timers[-1]
        out["runs"].append(
            {
                "seed": seed,
                "test_acc": result.test_acc,
                "val_acc": result.val_acc,
                "train_seconds": timer.train + timer.test,
                "train_loop_seconds": timer.train,
                "test_seconds": timer.test,
                "fit_validation_seconds": timer.fit_val,
                "wall_seconds": wall,
                "steps": timer.steps,
                "epochs": timer.epochs,
                "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before and after
            }
        )
    return out


# --------------------------------------------------------------------------------------------------
# airbench side (runs in its own process, after the zoo's has written ./cifar10/{train,test}.pt)
# --------------------------------------------------------------------------------------------------
def patch_airbench_for_cpu(abu, make_net):
    """Let airbench run on the CPU, for --tiny checks on machines without a GPU. Never used on a GPU.

    airbench 0.1.8 hard-codes CUDA in three places; each gets the smallest stand-in that keeps its
    code path as it is:

    1. ``CifarLoader`` loads data to ``torch.device(0)`` and ``train()`` builds its test loader with
       that default: ``airbench.utils.CifarLoader`` becomes a subclass defaulting to the CPU, which
       also keeps the images in float32 (half-precision convolutions on this CPU ran the backward pass
       of one 64-image batch in minutes, about 100x slower than float32).
    2. ``make_net94`` ends with ``.half().cuda()``: the net is built with ``Module.cuda`` made a no-op
       for that one call, then turned to float32 to match the images.
    3. ``train()`` times itself with ``torch.cuda.Event`` and ``torch.cuda.synchronize``: airbench's
       utils module alone sees a ``torch`` whose ``cuda`` has wall-clock events and a no-op
       synchronize; every other attribute is the real torch.
    """
    import types

    import torch
    from torch import nn

    class WallClockEvent:
        def __init__(self, enable_timing: bool = False) -> None:
            self.at = 0.0

        def record(self, stream=None) -> None:
            self.at = time.perf_counter()

        def elapsed_time(self, end: WallClockEvent) -> float:
            return (end.at - self.at) * 1000  # milliseconds, as CUDA events report

    class TorchWithCpuTiming(types.ModuleType):
        def __getattr__(self, name):
            return getattr(torch, name)

    shim = TorchWithCpuTiming("torch")
    shim.cuda = types.SimpleNamespace(Event=WallClockEvent, synchronize=lambda device=None: None)
    abu.torch = shim

    base = abu.CifarLoader

    class CpuCifarLoader(base):
        def __init__(
            self,
            path,
            train=True,
            batch_size=500,
            aug=None,
            drop_last=None,
            shuffle=None,
            altflip=False,
            gpu="cpu",
        ):
            super().__init__(path, train, batch_size, aug, drop_last, shuffle, altflip, gpu)
            self.images = self.images.float()

    abu.CifarLoader = CpuCifarLoader

    def make_net_on_cpu():
        cuda = nn.Module.cuda
        nn.Module.cuda = lambda self, device=None: self
        try:
            net = make_net()
        finally:
            nn.Module.cuda = cuda
        return net.float()

    return make_net_on_cpu


def parse_airbench_table(text: str, columns: list[str]) -> dict:
    """airbench's final printed row (epoch ``eval``): its own timer and TTA accuracy.

    ``columns`` is airbench's own column list; only run 0 prints the header line, so it is not looked for.
    """
    columns = [c.strip() for c in columns]
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(columns) and cells[columns.index("epoch")] == "eval":
            row = dict(zip(columns, cells))
            return {"tta_val_acc": float(row["tta_val_acc"]), "seconds": float(row["total_time_seconds"])}
    raise RuntimeError(f"airbench printed no final 'eval' row; its output was:\n{text}")


def airbench_worker(spec: dict) -> dict:
    import torch

    os.chdir(spec["data_dir"])  # airbench's train() reads its test set from ./cifar10/test.pt
    import airbench.utils as abu

    variant = spec["variant"]
    lib = importlib.import_module(f"airbench.lib_airbench{variant}")
    train_fn, make_net = getattr(lib, f"train{variant}"), getattr(lib, f"make_net{variant}")
    hyp = lib.hyp
    if spec["width_divisor"]:
        widths = {k: max(8, w // spec["width_divisor"]) for k, w in hyp["net"]["widths"].items()}
        make_net = functools.partial(make_net, widths=widths)
    if spec["device"] == "cpu":
        make_net = patch_airbench_for_cpu(abu, make_net)
    batch_size = spec["batch_size"] or hyp["opt"]["batch_size"]
    kwargs = {"make_net": make_net, "verbose": True}
    if spec["epochs"] is not None:
        kwargs["epochs"] = spec["epochs"]

    def loader():
        # what train94() builds when given no loader, but through abu.CifarLoader so the CPU stand-in applies
        return abu.CifarLoader("cifar10", train=True, batch_size=batch_size, aug=hyp["aug"], altflip=True)

    log = sys.stderr if spec["echo"] else io.StringIO()
    if spec["warmup"]:
        with contextlib.redirect_stdout(log):
            train_fn(loader(), run="warmup", **kwargs)
    test_loader = abu.CifarLoader("cifar10", train=False, batch_size=2000)
    runs = []
    for i in range(spec["runs"]):
        torch.manual_seed(i)
        out = io.StringIO()
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        with contextlib.redirect_stdout(out):
            model = train_fn(loader(), run=i, **kwargs)
        _sync()
        wall = time.perf_counter() - start
        if spec["echo"]:
            print(out.getvalue(), file=sys.stderr, end="")
        own = parse_airbench_table(out.getvalue(), abu.logging_columns_list)
        acc = abu.evaluate(model, test_loader, tta_level=hyp["net"]["tta_level"])
        runs.append(
            {
                "seed": i,
                "test_acc": acc,
                "printed_tta_acc": own["tta_val_acc"],
                "train_seconds": own["seconds"],
                "wall_seconds": wall,
                "batch_size": batch_size,
                "epochs": kwargs.get("epochs", hyp["opt"]["train_epochs"]),
                "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before and after
            }
        )
    return {"runs": runs}


# --------------------------------------------------------------------------------------------------
# the parent (standard library only: importing torch and Lightning here would cost every run seconds)
# --------------------------------------------------------------------------------------------------
def airbench_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("airbench")
    except PackageNotFoundError:
        return None


def run_worker(side: str, spec: dict, scratch: Path, quiet: bool) -> dict:
    spec_path, out_path = scratch / f"{side}-spec.json", scratch / f"{side}-result.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        side,
        "--spec",
        str(spec_path),
        "--out",
        str(out_path),
    ]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    if spec["device"] != "cuda":
        # OpenMP threads that spin while waiting collapse when other jobs share the cores: on a busy 2-core
        # machine one airbench step took 1.8 s spinning and 0.04 s waiting passively. Same for both sides.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    done = subprocess.run(
        cmd,
        check=False,
        env=env,
        text=True,
        cwd=_cifar_jpeg.ROOT,
        stdout=subprocess.PIPE if quiet else sys.stderr,
        stderr=subprocess.STDOUT if quiet else None,
    )
    if done.returncode != 0:
        tail = (done.stdout or "")[-4000:]
        print(
            f"cifar10_speed: the {side} worker failed (exit {done.returncode})"
            + (f":\n{tail}" if tail else ""),
            file=sys.stderr,
        )
        sys.exit(1)
    return json.loads(out_path.read_text())


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def summarize(runs: list[dict]) -> dict:
    return {
        "test_acc": round(mean([r["test_acc"] for r in runs]), 4),
        "train_seconds": round(mean([r["train_seconds"] for r in runs]), 3),
        "wall_seconds": round(mean([r["wall_seconds"] for r in runs]), 3),
        "runs": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in runs],
    }


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help=f"{TINY['train_per_class']}+{TINY['test_per_class']} images per class, "
        f"{TINY['epochs']} epochs, batch {TINY['batch_size']}, narrowed networks: checks that "
        "it works, not speed",
    )
    parser.add_argument("--only", choices=["zoo", "airbench"], help="run one side (no ratio then)")
    parser.add_argument(
        "--runs", type=int, default=1, help="timed runs per side (seeds 0..N-1 on top of the recipe's)"
    )
    parser.add_argument("--variant", choices=sorted(PUBLISHED), default="94", help="airbench variant")
    parser.add_argument(
        "--recipe", help=f"zoo recipe (default: {DEFAULT_RECIPE['cuda']} on a GPU, {DEFAULT_RECIPE['cpu']} on the CPU)"
    )
    parser.add_argument(
        "--zoo-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra zoo recipe override, applied last (repeatable)",
    )
    parser.add_argument(
        "--data",
        help="unpacked CIFAR-10 JPEG folder (default: data/cifar10-jpg, else the "
        "shared archive unpacked to a temporary folder)",
    )
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument(
        "--warmup",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="an untimed warm-up run per side first (default: on, off with --tiny)",
    )
    parser.add_argument("--worker", choices=["zoo", "airbench"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        spec = json.loads(Path(args.spec).read_text())
        result = (zoo_worker if args.worker == "zoo" else airbench_worker)(spec)
        Path(args.out).write_text(json.dumps(result))
        return None

    sides = [args.only] if args.only else ["zoo", "airbench"]
    if "airbench" in sides and importlib.util.find_spec("airbench") is None:
        print(
            f"cifar10_speed: airbench is not installed; {INSTALL_HINT} (or run with --only zoo)",
            file=sys.stderr,
        )
        sys.exit(2)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    warmup = (not args.tiny) if args.warmup is None else args.warmup

    with tempfile.TemporaryDirectory(prefix="cifar10-speed-") as tmp:
        scratch = Path(tmp)
        if args.tiny:
            quota = {"train": TINY["train_per_class"], "test": TINY["test_per_class"]}
            folder, source = _cifar_jpeg.tiny_folder(scratch / "tiny", quota, args.data)
        else:
            folder, source = _cifar_jpeg.full_folder(args.data, scratch)
        common = {"runs": args.runs, "warmup": warmup, "scratch": str(scratch)}
        # The zoo's worker runs even for --only airbench: it decodes the images and writes airbench's copy.
        zoo_out = run_worker(
            "zoo",
            {
                **common,
                "device": args.device,
                "recipe": args.recipe,
                "folder": str(folder),
                "tiny": args.tiny,
                "extra": args.zoo_override,
                "train": "zoo" in sides,
                "airbench_dir": str(scratch / "airbench") if "airbench" in sides else None,
            },
            scratch,
            quiet=args.json,
        )
        device = zoo_out["device"]
        if device == "cpu" and not args.tiny and not args.json:
            print(
                "cifar10_speed: full size on a 2-core CPU takes about 15 minutes for the zoo and 25 for "
                "airbench; --tiny checks the plumbing in seconds",
                file=sys.stderr,
            )
        ab_out = None
        if "airbench" in sides:
            ab_out = run_worker(
                "airbench",
                {
                    **common,
                    "device": device,
                    "variant": args.variant,
                    "data_dir": str(scratch / "airbench"),
                    "batch_size": TINY["batch_size"] if args.tiny else None,
                    "epochs": TINY["epochs"] if args.tiny else None,
                    "echo": not args.json,
                    "width_divisor": TINY["airbench_width_divisor"] if args.tiny else None,
                },
                scratch,
                quiet=args.json,
            )

    skipped = {"skipped": f"--only {args.only}"}
    zoo_side = skipped
    if "zoo" in sides:
        zoo_side = {"recipe": zoo_out["recipe"], "overrides": zoo_out["overrides"], **summarize(zoo_out["runs"])}
    ab_side = skipped
    if ab_out is not None:
        ab_side = {
            "variant": f"airbench{args.variant}",
            "published": PUBLISHED[args.variant],
            **summarize(ab_out["runs"]),
        }
        if device == "cpu":
            ab_side["cpu_stand_ins"] = (
                "CifarLoader on the CPU in float32; make_net's .cuda() a no-op and the "
                "net float32; torch.cuda.Event/synchronize as wall-clock stand-ins"
            )
    time_ratio = wall_ratio = gap = met = None
    if len(sides) == 2:
        z, a = zoo_out["runs"], ab_out["runs"]
        # ratios of the unrounded means, so they agree with the rounded seconds to within their rounding
        time_ratio = round(mean([r["train_seconds"] for r in z]) / mean([r["train_seconds"] for r in a]), 3)
        wall_ratio = round(mean([r["wall_seconds"] for r in z]) / mean([r["wall_seconds"] for r in a]), 3)
        gap = round(mean([r["test_acc"] for r in z]) - mean([r["test_acc"] for r in a]), 4)
        if not args.tiny:
            target = TARGET[device]
            if device == "cuda":
                met = time_ratio <= target["max_time_ratio"] and gap >= -target["accuracy_tolerance"]
            else:
                zoo_acc = mean([r["test_acc"] for r in z])
                met = time_ratio < target["max_time_ratio"] and zoo_acc >= target["min_test_acc"]
    env = {k: zoo_out[k] for k in ("device", "gpu", "gpu_count")}
    result = {
        "benchmark": "cifar10_speed",
        "tiny": args.tiny,
        **env,
        "cpu_cores": _cifar_jpeg.cpu_cores(),
        "versions": {**zoo_out["versions"], "airbench": airbench_version()},
        "data": {"source": source, **zoo_out["counts"]},
        "runs": args.runs,
        "warmup": warmup,
        "tiny_settings": TINY if args.tiny else None,
        "zoo": zoo_side,
        "airbench": ab_side,
        "time_ratio": time_ratio,
        "wall_ratio": wall_ratio,
        "accuracy_gap": gap,
        "target": {**TARGET[device], "met": met},
        "timing": "train_seconds: training steps + final TTA test pass, per-epoch evaluation excluded "
        "(airbench's own timer; the zoo's by callback); wall_seconds: the whole training call",
    }
    if args.json:
        print(json.dumps(result))
        return result
    counts = zoo_out["counts"]
    print(
        f"data: {source}; {counts['train_images']} train / {counts['test_images']} test images; "
        f"device {device}" + (f" ({result['gpu']})" if result["gpu"] else "")
    )
    for name, side in (("zoo " + zoo_out["recipe"], zoo_side), (f"airbench{args.variant}", ab_side)):
        if "skipped" not in side:
            print(
                f"{name:24s} test acc {side['test_acc']:.4f}  train {side['train_seconds']:.2f} s  "
                f"wall {side['wall_seconds']:.2f} s  (mean of {args.runs})"
            )
    if time_ratio is not None:
        print(
            f"time ratio zoo/airbench: {time_ratio:.2f}x (wall {wall_ratio:.2f}x); accuracy gap {gap:+.4f}"
            + ("" if met is None else f"; target {'met' if met else 'not met'}")
        )
    return result


if __name__ == "__main__":
    main()
