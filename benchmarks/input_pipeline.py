"""Training input pipeline: zoo's streamed JPEGs against torchvision's ImageFolder, images per second.

Both sides turn the same ImageNet-like JPEG files (about 500x375, quality 90; made here, seeded; see
_imagenet_like.py) into shuffled uint8 batches of 64 images of 3 x 224 x 224: decode, a RandomResizedCrop
box (scale 0.08-1, ratio 3/4-4/3) resized to 224, a random horizontal flip, with 2 DataLoader workers.

- zoo: the files are first written with ``litdata.optimize`` in the prepared format of ``zoo data prepare``
  (items ``{"image": bytes, "label": int, "path": str}``, untimed), then read by the ``streaming`` data set's
  own training loader, as ``zoo train`` reads them: a seeded permutation read item by item through
  litdata's ``StreamingDataset``, each item through ``zoo.data.images.decode_crop`` with
  ``random_resized_crop``'s box in the workers (kept from pass to pass, as in training), and each batch
  flipped by zoo's ``flip`` augmentation, on the CPU, in uint8.
- torchvision: ``ImageFolder`` (Pillow) + ``DataLoader`` with v2 transforms ``RandomResizedCrop(224,
  antialias=True)``, ``RandomHorizontalFlip()``, ``PILToTensor()``.

Each side's figure is one full pass over the files timed after one untimed warm-up pass of the same
loader (its workers then started and the files in the page cache). The sides take turns, ``--rounds``
times, each going first in every other round; the report gives each side's median and range, the median
of the per-round ratios, and the load average at the start (other work on the machine slows the two
sides differently).

    python benchmarks/input_pipeline.py                    # 2,000 images in a temporary folder, 3 rounds
    python benchmarks/input_pipeline.py --keep /tmp/ipb    # make (or reuse) the files and prepared copy there
    python benchmarks/input_pipeline.py --size 128          # where decoding at reduced scale comes in
    python benchmarks/input_pipeline.py --images 256 --rounds 1 --json   # plumbing only

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
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _imagenet_like  # noqa: E402

SIZE, BATCH, WORKERS = 224, 64, 2
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


# --- the files ---------------------------------------------------------------------------------------


def _item(entry: tuple[str, int, str]) -> dict:
    path, label, relative = entry
    return {"image": Path(path).read_bytes(), "label": label, "path": relative}


def prepare(images: Path, dest: Path) -> Path:
    """``images`` (class folders) written to ``dest`` as ``zoo data prepare`` writes a train split."""
    import litdata

    classes = sorted(p.name for p in images.iterdir() if p.is_dir())
    files = _imagenet_like.files(images)
    entries = [(str(f), classes.index(f.parent.name), str(f.relative_to(images))) for f in files]
    # in a child process: what litdata.optimize leaves behind in its caller slowed the streamed loader of
    # the same process to 21 images/s on a freshly prepared folder (477 images/s read by a fresh process)
    import multiprocessing

    writer = multiprocessing.get_context("spawn").Process(
        target=litdata.optimize,
        kwargs={"fn": _item, "inputs": entries, "output_dir": str(dest / "train"), "chunk_bytes": "64MB",
                "num_workers": 1, "verbose": False},
    )
    writer.start()
    writer.join()
    if writer.exitcode != 0:
        sys.exit(f"input_pipeline: writing the prepared copy failed (exit {writer.exitcode})")
    meta = {"format": 1, "classes": classes, "splits": {"train": len(entries)},
            "source": str(images.resolve()), "settings": {}}
    (dest / "zoo-data.json").write_text(json.dumps(meta))
    return dest


def files_ready(keep: Path | None, count: int) -> tuple[Path, Path]:
    """(image folder, prepared folder): made under ``keep`` unless it already holds them."""
    root = keep if keep is not None else Path(tempfile.mkdtemp(prefix="input-pipeline-"))
    images, prepared = root / "images", root / "prepared"
    if len(_imagenet_like.files(images)) != count:
        _imagenet_like.make_folder(images, count)
    if not (prepared / "zoo-data.json").is_file():
        prepare(images, prepared)
    return images, prepared


# --- zoo ---------------------------------------------------------------------------------------------


Batches = Iterator[tuple[torch.Tensor, torch.Tensor] | None]  # None ends each pass


def zoo_batches(prepared: Path, seed: int = 0, size: int = SIZE) -> Batches:
    """Endless passes of shuffled uint8 training batches (B, 3, size, size) from a prepared folder, flipped:
    the `streaming` data set's own training loader, as `zoo train` reads it with `random_resized_crop` first
    in `augment:` (its box drawn in the workers) and `flip` after it (on the batch)."""
    import zoo

    spec = {"name": "streaming", "root": str(prepared), "image_size": size, "batch_size": BATCH,
            "num_workers": WORKERS}
    dm = zoo.datasets.build(spec, "data")
    dm.seed = seed  # as zoo.core.build.build_data sets it from the recipe
    dm.train_box = zoo.augmentations.build({"name": "random_resized_crop", "scale": list(SCALE),
                                            "ratio": list(RATIO)}).per_image_box
    loader = dm.train_dataloader()
    flip = zoo.augmentations.build({"name": "flip"})
    generator = torch.Generator().manual_seed(seed)
    try:
        while True:
            for x, labels in loader:
                x, _ = flip(x, labels, generator)  # a pixel map: uint8 stays uint8, labels pass through
                yield x, labels
            yield None  # the end of a pass
    finally:
        dm.teardown("fit")  # its kept workers stopped, as at the end of a fit


# --- torchvision -------------------------------------------------------------------------------------


def torchvision_batches(images: Path, seed: int = 0, size: int = SIZE) -> Batches:
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    transform = v2.Compose(
        [v2.RandomResizedCrop(size, scale=SCALE, ratio=RATIO, antialias=True), v2.RandomHorizontalFlip(),
         v2.PILToTensor()]
    )
    loader = DataLoader(
        ImageFolder(str(images), transform=transform), batch_size=BATCH, shuffle=True, num_workers=WORKERS,
        persistent_workers=True, generator=torch.Generator().manual_seed(seed),
    )
    with _workers_stopped_after(loader):
        while True:
            yield from loader
            yield None


@contextlib.contextmanager
def _workers_stopped_after(loader):
    """Persistent workers stopped when the side is done, before the other side starts its own (left to the
    garbage collector, they linger, and the other side's forked workers inherit and try to stop them)."""
    try:
        yield
    finally:
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()


# --- timing ------------------------------------------------------------------------------------------


def images_per_second(batches: Iterator, size: int) -> tuple[float, int]:
    """One untimed warm-up pass, then (images per second, images) over the next full pass."""
    for _ in iter(lambda: next(batches), None):
        pass
    start, count = time.perf_counter(), 0
    for x, _ in iter(lambda: next(batches), None):
        assert x.dtype == torch.uint8 and tuple(x.shape[1:]) == (3, size, size)
        count += x.shape[0]
    rate = count / (time.perf_counter() - start)
    batches.close()
    return rate, count


def _box_decoder_built() -> bool:
    """Whether zoo decodes JPEG boxes alone here (zoo.data._jpeg_box, built at install where libjpeg's
    headers are) or whole images."""
    from zoo.data import images

    return images._jpeg_box is not None


def summary(values: list[float], digits: int = 1) -> dict:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="JPEG files to make (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="turns of each side (default 3)")
    parser.add_argument("--keep", type=Path, default=None, help="make the files here, or reuse those there")
    parser.add_argument("--size", type=int, default=SIZE, help=f"output side in pixels (default {SIZE})")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args(argv)

    load = os.getloadavg()
    images, prepared = files_ready(args.keep, args.images)
    torch.set_num_threads(1)  # the main process only collates and flips; the workers do the work
    zoo_ips, tv_ips, ratios, counts = [], [], [], set()
    for round_ in range(args.rounds):
        sides = {
            "zoo": lambda: zoo_batches(prepared, round_, args.size),
            "torchvision": lambda: torchvision_batches(images, round_, args.size),
        }
        # each side goes first in every other round, so that neither always meets the other's leftovers
        order = list(sides) if round_ % 2 == 0 else list(sides)[::-1]
        timed = {side: images_per_second(sides[side](), args.size) for side in order}
        (zoo_rate, zoo_count), (tv_rate, tv_count) = timed["zoo"], timed["torchvision"]
        zoo_ips.append(zoo_rate)
        tv_ips.append(tv_rate)
        ratios.append(zoo_rate / tv_rate)
        counts |= {zoo_count, tv_count}
    result = {
        "zoo_images_per_s": round(statistics.median(zoo_ips), 1),
        "torchvision_images_per_s": round(statistics.median(tv_ips), 1),
        "ratio": round(statistics.median(ratios), 2),
        "runs": {"zoo_images_per_s": summary(zoo_ips), "torchvision_images_per_s": summary(tv_ips),
                 "ratio": summary(ratios, 2)},
        "images": args.images,
        "images_per_pass": sorted(counts),
        "rounds": args.rounds,
        "batch_size": BATCH,
        "workers": WORKERS,
        "size": args.size,
        "load_avg_at_start": [round(v, 2) for v in load],
        "load_avg_at_end": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
        "box_decoder": _box_decoder_built(),
        "kept_in": str(args.keep) if args.keep else None,
    }
    if args.keep is None:
        import shutil

        shutil.rmtree(images.parent, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        runs = result["runs"]
        shape = f"{BATCH} x 3 x {args.size} x {args.size}"
        decoding = "boxes alone" if result["box_decoder"] else "whole images (zoo.data._jpeg_box not built)"
        print(f"zoo decodes {decoding}")
        print(f"{args.images} ImageNet-like JPEGs -> uint8 batches of {shape}, "
              f"{WORKERS} workers, {args.rounds} rounds (load average {load[0]:.2f} at the start, "
              f"{result['load_avg_at_end'][0]:.2f} at the end, {result['cpus']} CPUs); median [min, max]:")
        for side in ("zoo", "torchvision"):
            r = runs[f"{side}_images_per_s"]
            print(f"  {side:12s} {r['median']:8,.0f} images/s  [{r['min']:,.0f}, {r['max']:,.0f}]")
        r = runs["ratio"]
        print(f"  ratio        {r['median']:8.2f}x         [{r['min']:.2f}, {r['max']:.2f}]")
    return result


if __name__ == "__main__":
    main()
