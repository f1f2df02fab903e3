"""Streamed against in-memory data: the same recipe, the same images, the same seeds, side by side.

Trains recipes/cifar10-imagefolder-cpu.yaml twice per seed, alternating: once as shipped (`imagefolder`:
every image decoded into memory before training) and once streamed (`streaming`: the same splits
written by `zoo data prepare` with the recipe's own image-folder settings, decoded per image in
DataLoader workers). The streamed run keeps each 32x32 image whole (`crop_pct: 1.0`, no resize), so the
pixels the network sees are the same; only the order of the batches and where decoding happens differ.
Prints the test accuracy of each, the difference in points, and the ratio of training times
(zoo.train's own clock, and the whole process); ``--json`` adds them as one JSON line.

    python benchmarks/streaming_accuracy.py --data /tmp/cifar10-jpg --seeds 0 1 --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from _cifar_jpeg import full_folder
from measure_recipe import train_once

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "cifar10-imagefolder-cpu.yaml"


def prepare(source: Path, dest: Path, data: dict[str, Any]) -> float:
    """``zoo data prepare`` of ``source`` with the recipe's image-folder settings; its wall time."""
    import time

    cmd = [sys.executable, "-m", "zoo", "data", "prepare", str(source), str(dest), "--overwrite"]
    if data.get("limit_per_class") is not None:
        cmd += ["--limit-per-class", str(data["limit_per_class"])]
    for key in ("val_fraction", "test_fraction", "split_seed"):
        if key in data:
            cmd += [f"--{key.replace('_', '-')}", str(data[key])]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def streamed_recipe(scratch: Path, prepared: Path, data: dict[str, Any]) -> Path:
    """The shipped recipe with its data section replaced by the prepared copy, streamed."""
    path = scratch / "cifar10-streamed.yaml"
    streamed = {"name": "streaming", "root": str(prepared), "image_size": 32, "crop_pct": 1.0,
                "batch_size": data["batch_size"]}
    path.write_text(yaml.safe_dump({"base": str(RECIPE), "data": streamed}))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="the CIFAR-10 JPEG copy (train/ and test/); default: unpack the shared archive")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for the runs (default 1)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (last line)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="streaming-accuracy-"))
    try:
        source, how = full_folder(args.data, scratch)
        from zoo.core.recipe import load

        data = dict(load(RECIPE).data)
        prepared = scratch / "prepared"
        prepare_s = prepare(source, prepared, data)
        print(f"prepared {source} in {prepare_s:.1f} s", flush=True)
        arms = {"memory": (str(RECIPE), [f"data.root={source}"]), "streamed": (str(streamed_recipe(scratch, prepared, data)), [])}
        rows = []
        for seed in args.seeds:
            row: dict[str, Any] = {"seed": seed}
            for arm, (recipe, overrides) in arms.items():
                done = train_once(recipe, overrides, seed, scratch / "runs" / arm, args.threads)
                row[arm] = {"test_acc": done["summary"]["test_acc"], "train_s": done["summary"]["seconds"],
                            "wall_s": round(done["wall_s"], 1), "load": done["load"]}
                print(f"seed {seed} {arm}: test {done['summary']['test_acc']:.4f}, zoo.train {done['summary']['seconds']:.0f} s,"
                      f" process {done['wall_s']:.0f} s, load {done['load']}", flush=True)
            rows.append(row)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def mean(arm: str, key: str) -> float:
        return statistics.fmean(r[arm][key] for r in rows)

    out = {
        "data": how, "seeds": args.seeds, "threads": args.threads, "prepare_s": round(prepare_s, 1), "runs": rows,
        "memory_test_acc": round(mean("memory", "test_acc"), 4), "streamed_test_acc": round(mean("streamed", "test_acc"), 4),
        "difference_points": round(100 * (mean("streamed", "test_acc") - mean("memory", "test_acc")), 2),
        "train_time_ratio": round(mean("streamed", "train_s") / mean("memory", "train_s"), 3),
        "process_time_ratio": round(mean("streamed", "wall_s") / mean("memory", "wall_s"), 3),
    }
    print(f"\nin memory {100 * out['memory_test_acc']:.2f}%, streamed {100 * out['streamed_test_acc']:.2f}% "
          f"({out['difference_points']:+.2f} points); time streamed / in memory: zoo.train {out['train_time_ratio']:.2f}x, "
          f"process {out['process_time_ratio']:.2f}x (targets: within 0.5 points, at most 1.2x)")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
