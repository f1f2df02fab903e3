"""Transfer on CIFAR-10: does pretraining on five classes help a 500-image task on the other five?

Pretrains recipes/transfer/cifar10-first5.yaml (airplane, automobile, bird, cat, deer; all their training
images), then per seed trains the same 500 images of dog, frog, horse, ship and truck (100 a class, and
20 a class to validate on) twice with one budget: from scratch (cifar10-last5-scratch.yaml) and starting
from the pretrained weights (cifar10-last5-finetune.yaml, init_from). Both are tested on the whole test
folder of those five classes (5,000 images). Prints a table per seed (scratch, fine-tuned, difference in
points) and the means; ``--json`` adds the figures as one JSON line.

    python benchmarks/transfer.py --data /tmp/cifar10-jpg --seeds 0 1 2 --threads 1 --json
    python benchmarks/transfer.py --data /tmp/cifar10-jpg --pretrained runs/first5 --seeds 0 1 2

Every run is a fresh ``zoo train`` process (measure_recipe.train_once: W&B off, its wall time and the
load around it). With ``--keep-runs DIR`` the run folders stay there (DIR/pretrain, DIR/scratch, DIR/finetune,
each holding seed<N>/); a later call with the same DIR reads the runs that finished (their metrics.json)
instead of training them again (the output says which), so an interrupted benchmark goes on where it
stopped. Without the CIFAR-10
copy given (``--data``), the shared archive is unpacked into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from _cifar_jpeg import full_folder
from measure_recipe import portable, spread, train_once

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "transfer"
PRETRAIN = RECIPES / "cifar10-first5.yaml"
ARMS = {"scratch": RECIPES / "cifar10-last5-scratch.yaml", "finetune": RECIPES / "cifar10-last5-finetune.yaml"}


def init_from_available() -> bool:
    """Whether this zoo has the ``init_from`` recipe key the fine-tune needs."""
    from zoo.core.recipe import Recipe

    return "init_from" in Recipe.model_fields


def run_or_reuse(recipe: Path, overrides: list[str], seed: int, runs: Path, threads: int | None) -> dict[str, Any]:
    """A run's result: read from its folder in ``runs`` when an earlier call finished it, else trained now.

    A reused run's time is zoo.train's own clock (its metrics.json), without the process start-up.
    """
    folder = runs / f"seed{seed}"
    if (folder / "metrics.json").is_file():
        summary = json.loads((folder / "metrics.json").read_text())
        return {"summary": summary, "wall_s": summary["seconds"], "load": None, "reused": True}
    shutil.rmtree(folder, ignore_errors=True)  # a run an earlier call left unfinished
    runs.mkdir(parents=True, exist_ok=True)
    return {**train_once(str(recipe), overrides, seed, runs, threads), "reused": False}


def command(recipe: Path, overrides: list[str], seed: int) -> str:
    return " ".join(["zoo train", str(recipe.relative_to(ROOT)), *portable(overrides), f"seed={seed}"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="the CIFAR-10 JPEG copy (train/ and test/); default: unpack the shared archive")
    parser.add_argument("--pretrained", metavar="RUN_DIR", help="a finished cifar10-first5 run to start from")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the runs (default: torch's own choice)")
    parser.add_argument("--keep-runs", metavar="DIR", help="keep the run folders here, and reuse finished ones")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (last line)")
    args = parser.parse_args()

    scratch_dir = Path(tempfile.mkdtemp(prefix="transfer-"))
    runs = scratch_dir / "runs" if args.keep_runs is None else Path(args.keep_runs).resolve()
    try:
        data, how = full_folder(args.data, scratch_dir)
        data_override = [f"data.root={data}"]
        out: dict[str, Any] = {"data": how, "seeds": args.seeds, "threads": args.threads}
        if args.pretrained is not None:
            pretrained = Path(args.pretrained).resolve()
            if not (pretrained / "metrics.json").is_file():
                sys.exit(f"--pretrained {pretrained}: not a finished run folder (no metrics.json)")
            out["pretrain"] = {"run_dir": str(pretrained), "given": True,
                               "test_acc": json.loads((pretrained / "metrics.json").read_text()).get("test_acc")}
        else:
            done = run_or_reuse(PRETRAIN, data_override, args.pretrain_seed, runs / "pretrain", args.threads)
            pretrained = Path(done["summary"]["run_dir"])
            out["pretrain"] = {"run_dir": str(pretrained), "given": False, "test_acc": done["summary"]["test_acc"],
                               "wall_s": round(done["wall_s"], 1), "load": done["load"], "reused": done["reused"]}
        print(f"pretrained: {pretrained} (test accuracy on classes 0-4: {out['pretrain']['test_acc']})", flush=True)

        finetune_override = [*data_override, f"init_from={pretrained}"]
        can_finetune = init_from_available()
        rows = []
        for seed in args.seeds:
            row: dict[str, Any] = {"seed": seed}
            for arm, recipe in ARMS.items():
                overrides = finetune_override if arm == "finetune" else data_override
                row[f"{arm}_command"] = command(recipe, overrides, seed)
                if arm == "finetune" and not can_finetune:
                    row[arm] = None
                    continue
                done = run_or_reuse(recipe, overrides, seed, runs / arm, args.threads)
                row[arm] = {"test_acc": done["summary"]["test_acc"], "val_acc": done["summary"]["val_acc"],
                            "wall_s": round(done["wall_s"], 1), "load": done["load"], "reused": done["reused"]}
                print(f"seed {seed} {arm}: test {done['summary']['test_acc']:.4f} in {done['wall_s']:.0f} s"
                      + (" (reused)" if done["reused"] else ""), flush=True)
            rows.append(row)
        out["runs"] = rows
        out.update(summarize(rows))
        print_table(out, can_finetune)
    finally:
        if args.keep_runs is None:
            shutil.rmtree(scratch_dir, ignore_errors=True)
    if args.json:
        print(json.dumps(out))
    return 0


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    scratch = [r["scratch"]["test_acc"] for r in rows]
    summary: dict[str, Any] = {"scratch_test_acc": spread(scratch)}
    if all(r["finetune"] is not None for r in rows):
        finetuned = [r["finetune"]["test_acc"] for r in rows]
        summary["finetune_test_acc"] = spread(finetuned)
        summary["gain_points"] = spread([100 * (f - s) for f, s in zip(finetuned, scratch)], digits=2)
    return summary


def print_table(out: dict[str, Any], can_finetune: bool) -> None:
    print("\nseed  scratch test acc  fine-tuned test acc  difference (points)")
    for r in out["runs"]:
        scratch = r["scratch"]["test_acc"]
        if r["finetune"] is None:
            print(f"{r['seed']:>4}  {100 * scratch:15.2f}%  {'not run':>19}")
            continue
        tuned = r["finetune"]["test_acc"]
        print(f"{r['seed']:>4}  {100 * scratch:15.2f}%  {100 * tuned:18.2f}%  {100 * (tuned - scratch):+19.2f}")
    mean = out["scratch_test_acc"]["mean"]
    if "finetune_test_acc" in out:
        tuned = out["finetune_test_acc"]["mean"]
        print(f"mean  {100 * mean:15.2f}%  {100 * tuned:18.2f}%  {out['gain_points']['mean']:+19.2f}")
    else:
        print(f"mean  {100 * mean:15.2f}%")
    if not can_finetune:
        print("\nthis zoo has no init_from: the fine-tunes were not run; with it they are:")
        for r in out["runs"]:
            print(f"  {r['finetune_command']}")


if __name__ == "__main__":
    raise SystemExit(main())
