"""Memory of streamed training against data set size: peak RSS of `zoo train` on 5,000 and 20,000 images.

For each size it generates that many 256x256 JPEGs (seeded, 10 classes), prepares them in the format of
``zoo data prepare`` (with litdata.optimize, or ``zoo data prepare`` itself where this checkout has it), and
trains a tiny model on them with the ``streaming`` data set for a fixed number of steps, sampling the resident
memory (RSS) of the whole process tree, trainer and loader workers, every 0.2 s. A streamed run holds only the
batches in flight, so its peak should barely grow with the data set: the target is a 20k/5k ratio of at most
1.15, and a 20k peak below the 20,000 images' decoded size (20,000 x 3 x 256 x 256 bytes, 3.9 GB), which is
what an in-memory data set would hold.

    python benchmarks/streaming_memory.py                 # about 5-10 minutes on a busy 2-core CPU
    python benchmarks/streaming_memory.py --keep /tmp/sm  # keep (and on a second call reuse) the folders
    python benchmarks/streaming_memory.py --keep /tmp/sm --repeats 3   # medians of 3 runs a size

Both RSS and PSS are summed over the processes. RSS counts a page the forked workers share with the trainer
(torch's libraries and whatever the trainer held when it forked them) once per process: an upper bound of
the memory the run takes, which grows with the number of processes alive at once (the trainer, its two
kept training workers and, at validation, two more). PSS splits each shared page among its sharers: what
the run takes. The largest single process's RSS (the trainer's) is printed too: what a per-process limit
or `/usr/bin/time` would see.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ZOO = Path(sys.executable).with_name("zoo")
CLASSES = 10
SIDE = 256
HELD_OUT = 200  # validation and test images each, the same for every size: only training data grows


def jpeg(i: int) -> bytes:
    """Image ``i``: smooth seeded colour fields (a JPEG of about a photo's size at this side, not noise's)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(i)
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((SIDE, SIDE), Image.BILINEAR)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90)
    return out.getvalue()


def generate(folder: Path, n: int) -> None:
    """``n`` training images and the held-out ones as an image folder, written once (marked done)."""
    if (folder / ".done").exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    for part, count, offset in (("train", n, 0), ("val", HELD_OUT, 10**7), ("test", HELD_OUT, 2 * 10**7)):
        for c in range(CLASSES):
            (folder / part / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (folder / part / f"c{i % CLASSES}" / f"{i:06d}.jpg").write_bytes(jpeg(offset + i))
    (folder / ".done").write_text("")


def _item(entry: tuple[str, int, str]) -> dict:
    path, label, rel = entry
    return {"image": Path(path).read_bytes(), "label": label, "path": rel}


def has_prepare() -> bool:
    done = subprocess.run([str(ZOO), "data", "prepare", "--help"], capture_output=True)
    return done.returncode == 0


def prepare(source: Path, dest: Path, workers: int) -> str:
    """``source`` in the prepared format at ``dest`` (once); returns what wrote it."""
    if (dest / "zoo-data.json").exists():
        return "kept"
    shutil.rmtree(dest, ignore_errors=True)
    if has_prepare():
        command = [str(ZOO), "data", "prepare", str(source), str(dest), "--workers", str(workers)]
        subprocess.run(command, check=True)
        return "zoo data prepare"
    import litdata

    classes = [f"c{c}" for c in range(CLASSES)]
    counts = {}
    for part in ("train", "val", "test"):
        entries = [(str(source / part / cls / name), label, f"{part}/{cls}/{name}")
                   for label, cls in enumerate(classes) for name in sorted(os.listdir(source / part / cls))]
        counts[part] = len(entries)
        litdata.optimize(fn=_item, inputs=entries, output_dir=str(dest / part), chunk_bytes="64MB",
                         num_workers=workers, verbose=False)
    meta = {"format": 1, "classes": classes, "splits": counts, "source": str(source), "settings": {}}
    (dest / "zoo-data.json").write_text(json.dumps(meta))
    return "litdata.optimize"


def _pss(pid: int) -> int:
    """Proportional set size: each shared page split among the processes that share it."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_memory(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS) in bytes of ``pid`` and all its descendants, summed, from /proc, and the largest RSS of
    one of them."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
    total_rss = total_pss = largest = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        total_rss += rss.get(p, 0)
        total_pss += _pss(p)
        largest = max(largest, rss.get(p, 0))
        stack += children.get(p, [])
    return total_rss, total_pss, largest


def train_peak(prepared: Path, run_dir: Path, steps: int, image_size: int, workers: int) -> dict:
    """Peak RSS of the process tree of one `zoo train` on ``prepared``, and how long it took."""
    recipe = run_dir.parent / f"{run_dir.name}.yaml"
    recipe.write_text(
        "model: {name: resnet, depth: 8, width: 8}\n"
        f"data: {{name: streaming, root: {prepared}, image_size: {image_size}, batch_size: 64, "
        f"eval_batch_size: 100, num_workers: {workers}}}\n"
        "optimizer: {name: nesterov, lr: 0.05}\n"
        "schedule: {name: constant}\n"
        f"trainer: {{max_epochs: 1000, max_steps: {steps}}}\n"
        "logger: {wandb: {mode: disabled}}\n"
        "augment: [{name: flip}]\n"
    )
    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.Popen([str(ZOO), "train", str(recipe), "--run-dir", str(run_dir), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0, 0, 0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[:] = [max(a, b) for a, b in zip(peak, tree_memory(proc.pid))]
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"zoo train on {prepared} failed ({proc.returncode}):\n{err[-3000:]}")
    summary = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    seconds = round(time.perf_counter() - start, 1)
    return {"peak_rss_bytes": peak[0], "peak_pss_bytes": peak[1], "peak_rss_one_process_bytes": peak[2],
            "seconds": seconds,
            "test_acc": summary["test_acc"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[5000, 20000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--steps", type=int, default=150, help="training steps per run (batches of 64)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="loader workers (and preparing processes)")
    parser.add_argument("--keep", type=Path, help="keep the generated folders here, and reuse what is there")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each size, taking turns; each figure is the median of its runs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    scratch = args.keep or Path(tempfile.mkdtemp(prefix="zoo-streaming-memory-"))
    scratch.mkdir(parents=True, exist_ok=True)
    results = {}
    try:
        prepared = {}
        for n in args.sizes:
            source, dest = scratch / f"images-{n}", scratch / f"prepared-{n}"
            generate(source, n)
            prepared[n] = (dest, prepare(source, dest, args.workers))
        runs: dict[int, list[dict]] = {n: [] for n in args.sizes}
        for _ in range(args.repeats):
            for n in args.sizes:  # the sizes take turns, so that a busy spell of the machine falls on both
                dest = prepared[n][0]
                runs[n].append(train_peak(dest, scratch / f"run-{n}", args.steps, args.image_size, args.workers))
        for n, done in runs.items():
            results[n] = {"prepared_by": prepared[n][1], "runs": done,
                          **{key: statistics.median(r[key] for r in done) for key in done[0]}}
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    decoded = args.sizes[1] * 3 * SIDE * SIDE
    report = {
        "sizes": args.sizes, "steps": args.steps, "image_size": args.image_size, "workers": args.workers,
        "runs": {str(n): r for n, r in results.items()}, "decoded_bytes_large": decoded, "ratio_target": 1.15,
        "load_avg": os.getloadavg(),
    }
    for kind in ("rss", "pss", "rss_one_process"):
        small, large = (results[n][f"peak_{kind}_bytes"] for n in args.sizes)
        report[f"{kind}_ratio"] = round(large / small, 3)
        report[f"{kind}_large_below_decoded"] = large < decoded
    if args.json:
        print(json.dumps(report))
        return
    for n in args.sizes:
        r = results[n]
        rss, pss = r["peak_rss_bytes"] / 2**20, r["peak_pss_bytes"] / 2**20
        one = r["peak_rss_one_process_bytes"] / 2**20
        print(f"{n:>6} images: peak RSS {rss:6.0f} MiB, PSS {pss:6.0f} MiB, largest process's RSS {one:5.0f} MiB "
              f"({r['seconds']} s, "
              f"prepared by {r['prepared_by']}, test acc {r['test_acc']:.3f})")
    ratios = (f"RSS {report['rss_ratio']:.3f}, PSS {report['pss_ratio']:.3f}, largest process's RSS "
              f"{report['rss_one_process_ratio']:.3f}")
    print(f"ratio {args.sizes[1]}/{args.sizes[0]}: {ratios} (target <= 1.15)")
    where = {k: "below" if report[f"{k}_large_below_decoded"] else "ABOVE" for k in ("rss", "pss", "rss_one_process")}
    print(f"decoded size of {args.sizes[1]:,} images: {decoded / 2**20:.0f} MiB; the {args.sizes[1]:,} run's "
          f"peak RSS summed over its processes is {where['rss']} it, its peak PSS {where['pss']} it, its largest "
          f"process's peak RSS {where['rss_one_process']} it")
    print(f"load average: {', '.join(f'{x:.2f}' for x in report['load_avg'])}")


if __name__ == "__main__":
    main()
