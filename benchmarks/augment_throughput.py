"""Augmentation throughput: zoo's batched device pipeline against torchvision's per-sample transforms.

Both sides run the same operations on the same uint8 32x32 RGB images: horizontal flip, pad-4 random crop,
colour jitter (torchvision's, with its per-image random order), then CutMix. zoo draws batches from an
in-memory tensor (as zoo.data.datamodule.TensorBatches does) and augments each whole uint8 batch in the main
process (on the GPU when there is one), as training does; torchvision transforms one image at a time in
DataLoader workers and applies v2.CutMix to each collated batch (in the workers too, through collate_fn,
which is where its documentation suggests doing it).

Each of ``--repeats`` runs times zoo, then torchvision, over the same images; the report gives the median
and the range over the runs, and the load average when it started (other work on the machine slows the
two sides differently, so compare figures taken on a quiet machine). On a GPU it also times a ResNet-20
training step on batches of the same size, to set the augmentation's milliseconds per batch against it.

    python benchmarks/augment_throughput.py              # 10,000 synthetic images, 3 runs
    python benchmarks/augment_throughput.py --data cifar # the first images of the shared CIFAR-10 JPEGs
    python benchmarks/augment_throughput.py --quick --json

Not a test: throughput depends on the machine and on whatever else it is running.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tarfile
import time
from pathlib import Path

# OpenMP threads that spin while waiting for each other collapse when the cores are shared (other jobs, or
# the DataLoader workers): on a loaded 2-core machine a 2-thread batch took ~10x longer than a 1-thread one.
# Spinning would also take a core from torchvision's workers while they run. Waiting passively costs the
# batched side a wake-up per parallel region: on an otherwise idle machine zoo measured 10-20% more images/s
# with spinning threads, which is left out here. It must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset, default_collate

from zoo.data.augment import AugmentPipeline  # noqa: E402

CIFAR_TAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg" / "cifar10-jpg.tar.gz"
NUM_CLASSES = 10
JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}
ZOO_STEPS = [
    {"name": "flip"},
    {"name": "crop", "padding": 4},
    {"name": "color_jitter", **JITTER},
    {"name": "cutmix", "alpha": 1.0},
]


def synthetic_images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 images (N, 3, 32, 32) and labels; speed does not depend on what the pixels show."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    return x, torch.randint(0, NUM_CLASSES, (n,), generator=gen)


def cifar_images(n: int, tar_path: Path = CIFAR_TAR) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` training JPEGs of the shared CIFAR-10 archive, decoded without unpacking it."""
    from PIL import Image

    classes: dict[str, int] = {}
    images, labels = [], []
    with tarfile.open(tar_path, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] != "train":
                continue
            data = tar.extractfile(member).read()
            rgb = Image.open(io.BytesIO(data)).convert("RGB").tobytes()
            hwc = torch.frombuffer(bytearray(rgb), dtype=torch.uint8).view(32, 32, 3)
            images.append(hwc.permute(2, 0, 1))
            labels.append(classes.setdefault(parts[1], len(classes)))
            if len(images) == n:
                break
    return torch.stack(images), torch.tensor(labels)


def shuffled_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int = 0):
    """One shuffled epoch, one index gather per batch: what zoo.data.datamodule.TensorBatches does.

    Repeated here because importing zoo.data.datamodule loads Lightning, which would add seconds to ``--quick``.
    """
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    for i in range(0, len(x), batch_size):
        idx = order[i : i + batch_size]
        yield x.index_select(0, idx), y.index_select(0, idx)


def time_zoo(x: torch.Tensor, y: torch.Tensor, batch_size: int, device: torch.device) -> dict:
    """Images per second through shuffled batches + AugmentPipeline, after one warm-up batch.

    On a GPU, also the mean GPU time per batch (CUDA events around each batch's augmentation).
    """
    pipe = AugmentPipeline(ZOO_STEPS, NUM_CLASSES, seed=0)
    cuda = device.type == "cuda"

    def step(xb, yb):
        # uint8 crosses to the device and goes into the pipeline as it is, as in training
        return pipe(xb.to(device, non_blocking=True), yb.to(device, non_blocking=True))

    step(*next(shuffled_batches(x, y, batch_size, seed=1)))  # first-call costs are not throughput
    gpu_ms = []
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    seen = batches = 0
    for xb, yb in shuffled_batches(x, y, batch_size):
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
        step(xb, yb)
        if cuda:
            end.record()
            gpu_ms.append((begin, end))
        seen += len(xb)
        batches += 1
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    result = {"images_per_s": seen / elapsed, "ms_per_batch": 1000 * elapsed / batches}
    if gpu_ms:
        result["gpu_ms_per_batch"] = sum(b.elapsed_time(e) for b, e in gpu_ms) / len(gpu_ms)
    return result


def time_model_step(batch_size: int, device: torch.device, steps: int = 10) -> float:
    """Milliseconds per training step (forward, backward, SGD) of a CIFAR ResNet-20 on ``device``: median of
    ``steps`` after two warm-up steps, synchronized on a GPU."""
    from zoo.core.build import build_network

    net = build_network({"name": "resnet", "depth": 20}, (3, 32, 32), NUM_CLASSES).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    xb = torch.rand(batch_size, 3, 32, 32, device=device)
    yb = torch.randint(0, NUM_CLASSES, (batch_size,), device=device)
    times = []
    for i in range(steps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(xb), yb).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


class PerSample(Dataset):
    """The uint8 images, each run through a torchvision transform when fetched."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform) -> None:
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.transform(self.x[i]), int(self.y[i])


class CutMixCollate:
    """default_collate, then v2.CutMix on the batch (a class, so DataLoader workers can pickle it)."""

    def __init__(self) -> None:
        from torchvision.transforms import v2

        self.cutmix = v2.CutMix(num_classes=NUM_CLASSES, alpha=1.0)

    def __call__(self, samples):
        return self.cutmix(*default_collate(samples))


def time_torchvision(x: torch.Tensor, y: torch.Tensor, batch_size: int, workers: int) -> dict:
    """Images per second out of a DataLoader augmenting per sample, timed from its first batch on."""
    from torchvision.transforms import v2

    transform = v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomCrop(32, padding=4),
            v2.ColorJitter(**JITTER),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    loader = DataLoader(
        PerSample(x, y, transform),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=CutMixCollate(),
        generator=torch.Generator().manual_seed(0),
    )
    it = iter(loader)
    next(it)  # workers start and fill their queues here; that start-up is not throughput
    start = time.perf_counter()
    seen = 0
    for xb, _ in it:
        seen += len(xb)
    return {"images_per_s": seen / (time.perf_counter() - start)}


def summary(values: list[float], digits: int = 1) -> dict:
    """Median and range of one figure over the runs."""
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="torchvision DataLoader workers")
    parser.add_argument("--data", choices=["synthetic", "cifar"], default="synthetic")
    parser.add_argument("--device", default="auto", help="zoo's device: auto (cuda if available), cpu, cuda")
    parser.add_argument("--threads", type=int, default=None, help="zoo's torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each side; medians and ranges are reported")
    parser.add_argument("--model-step", action=argparse.BooleanOptionalAction, default=None,
                        help="also time a ResNet-20 training step on zoo's device (default: on a GPU only)")
    parser.add_argument("--quick", action="store_true", help="a tiny run (checks that it works, not speed)")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    if args.quick:
        args.images, args.batch_size, args.repeats = 384, 64, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)

    if args.data == "cifar":
        if not CIFAR_TAR.exists():
            sys.exit(f"no CIFAR-10 archive at {CIFAR_TAR}; use --data synthetic")
        x, y = cifar_images(args.images)
    else:
        x, y = synthetic_images(args.images)

    zoo_runs, tv_runs = [], []
    for _ in range(args.repeats):  # alternating, so that a change in the machine's load hits both sides
        zoo_runs.append(time_zoo(x, y, args.batch_size, device))
        tv_runs.append(time_torchvision(x, y, args.batch_size, args.workers))
    zoo_ips = [r["images_per_s"] for r in zoo_runs]
    tv_ips = [r["images_per_s"] for r in tv_runs]
    ratios = [z / t for z, t in zip(zoo_ips, tv_ips)]
    result = {
        "ratio": round(statistics.median(ratios), 2),
        "zoo_images_per_s": round(statistics.median(zoo_ips), 1),
        "torchvision_images_per_s": round(statistics.median(tv_ips), 1),
        "runs": {"ratio": summary(ratios, 2), "zoo_images_per_s": summary(zoo_ips),
                 "torchvision_images_per_s": summary(tv_ips)},
        "repeats": args.repeats,
        "load_avg_at_start": [round(v, 2) for v in load],
        "zoo_ms_per_batch": round(statistics.median(r["ms_per_batch"] for r in zoo_runs), 3),
        "device": str(device) if device.type != "cuda" else f"cuda ({torch.cuda.get_device_name(device)})",
        "batch_size": args.batch_size,
        "images": len(x),
        "data": args.data,
        "torchvision_workers": args.workers,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "zoo_gpu_ms_per_batch": None,
        "model_step_ms": None,
        "augment_share_of_step": None,
    }
    if device.type == "cuda":
        result["zoo_gpu_ms_per_batch"] = round(statistics.median(r["gpu_ms_per_batch"] for r in zoo_runs), 3)
    if args.model_step if args.model_step is not None else device.type == "cuda":
        step_ms = time_model_step(args.batch_size, device, steps=3 if args.quick else 10)
        augment_ms = result["zoo_gpu_ms_per_batch"] or result["zoo_ms_per_batch"]
        result["model_step_ms"] = round(step_ms, 3)
        result["augment_share_of_step"] = round(augment_ms / step_ms, 4)
    if args.json:
        print(json.dumps(result))
        return result
    steps = " + ".join(s["name"] for s in ZOO_STEPS)
    runs = result["runs"]
    print(f"{len(x)} {args.data} uint8 32x32x3 images, batch {args.batch_size}, {args.repeats} runs "
          f"(load average {load[0]:.2f} at the start): {steps}; median [min, max] over the runs")
    print(f"zoo (batched on {result['device']}, {result['torch_threads']} torch threads): "
          f"{runs['zoo_images_per_s']['median']:,.0f} images/s "
          f"[{runs['zoo_images_per_s']['min']:,.0f}, {runs['zoo_images_per_s']['max']:,.0f}], "
          f"{result['zoo_ms_per_batch']:.2f} ms per batch")
    if result["zoo_gpu_ms_per_batch"] is not None:
        print(f"    GPU time per batch: {result['zoo_gpu_ms_per_batch']:.3f} ms")
    print(f"torchvision v2 (per sample, DataLoader num_workers={args.workers} "
          f"on {os.cpu_count()} CPU cores): "
          f"{runs['torchvision_images_per_s']['median']:,.0f} images/s "
          f"[{runs['torchvision_images_per_s']['min']:,.0f}, {runs['torchvision_images_per_s']['max']:,.0f}]")
    print(f"ratio zoo / torchvision: {result['ratio']:.1f}x "
          f"[{runs['ratio']['min']:.1f}, {runs['ratio']['max']:.1f}]")
    if result["model_step_ms"] is not None:
        print(f"ResNet-20 training step, batch {args.batch_size}, on {result['device']}: "
              f"{result['model_step_ms']:.2f} ms; augmentation is "
              f"{100 * result['augment_share_of_step']:.1f}% of it")
    return result


if __name__ == "__main__":
    main()
