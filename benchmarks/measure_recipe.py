"""The results table of the shipped recipes: measure a recipe into benchmarks/results.yaml, and write the README's table from it.

benchmarks/results.yaml holds one entry per recipes/*.yaml: what it reached on the test split over the
seeds measured, how long it took, on what machine and versions, and its model's parameters and FLOPs
per image (zoo.tools.model_stats); or why it was not measured. The README's table is generated from
it, and tests/test_results_table.py keeps the two in step.

    # train a recipe once per seed (each a fresh `zoo train` process, W&B off) and write its entry
    python benchmarks/measure_recipe.py run mlp-digits --seeds 0 1 2 3 4
    python benchmarks/measure_recipe.py run cifar10-cpu data.name=imagefolder data.root=PATH --seeds 0
    # an entry from a CIFAR-10 speed benchmark's JSON (its zoo side: recipe, seeds and times measured there)
    python benchmarks/cifar10_speed.py --device cpu --no-warmup --data PATH --json > speed.json
    python benchmarks/measure_recipe.py from-speed speed.json
    # an entry saying why a recipe is not measured (with its model statistics; no data needed)
    python benchmarks/measure_recipe.py skip resnet18-cifar10 --reason "..." --input-shape 3x32x32 --classes 10
    # the README table from the file; --check exits 1 when the README or the file's coverage is out of step
    python benchmarks/measure_recipe.py readme [--check]

Times are whole processes (interpreter start, imports, data, training, testing), the wait a user of
`zoo train` has, and `train_s`, zoo.train's own clock (data, fitting and testing, no start-up). The
machine's load (1-minute load average) is recorded with every run: on a shared machine times vary with it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.yaml"
README = ROOT / "README.md"
BEGIN = "<!-- results table: generated from benchmarks/results.yaml by `python benchmarks/measure_recipe.py readme`; edit that file, not this table -->"
END = "<!-- end of results table -->"
HEADER = """\
# What the shipped recipes reach: one entry per recipes/*.yaml (sweep definitions in recipes/sweeps/ are
# searches over recipes, not recipes: not listed). Written by benchmarks/measure_recipe.py, which says how
# each figure is measured; `summary` is written by hand and kept when an entry is measured again. The
# README's table is generated from this file: python benchmarks/measure_recipe.py readme
"""


def shipped_recipes() -> list[str]:
    return sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))


def read_results(path: Path = RESULTS) -> dict[str, Any]:
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def write_results(results: dict[str, Any], path: Path = RESULTS) -> None:
    ordered = {name: results[name] for name in sorted(results)}
    text = HEADER + yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, width=110, default_flow_style=None)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def recipe_summary(name: str) -> str:
    """A new entry's summary: the first line of the recipe's header comment."""
    for line in (ROOT / "recipes" / f"{name}.yaml").read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").rstrip()
    return ""


def spread(values: list[float], digits: int = 4) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one value), min, max and the values themselves."""
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": round(mean, digits), "std": round(std, digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "per_seed": [round(v, digits) for v in values]}


def portable(overrides: list[str]) -> list[str]:
    """The overrides as recorded: a data path outside the repository is this machine's, not the reader's."""
    out = []
    for text in overrides:
        key, _, value = text.partition("=")
        if key == "data.root" and value:
            if not Path(value).expanduser().resolve().is_relative_to(ROOT):  # relative to where zoo train runs
                text = f"{key}=<path to the data>"
        out.append(text)
    return out


def machine(threads: int | None) -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        names = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    memory = None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        total_kb = int(meminfo.read_text().split("MemTotal:")[1].split()[0])
        memory = f"{total_kb / 2**20:.0f} GiB"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": usable,
        "memory": memory,
        "torch_threads": threads or torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def versions() -> dict[str, Any]:
    import lightning
    import torch

    import zoo

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    return {"zoo": zoo.__version__, "commit": commit or None, "torch": str(torch.__version__),
            "lightning": str(lightning.__version__), "python": platform.python_version()}


def model_stats(recipe: str, overrides: list[str], shape: tuple[int, ...] | None, classes: int | None) -> dict[str, Any]:
    from zoo.core.recipe import load
    from zoo.tools.model_stats import recipe_stats

    stats = recipe_stats(load(recipe, overrides), shape, classes).to_dict()
    memory = stats["memory"]
    return {
        "parameters": stats["parameters"],
        "trainable_parameters": stats["trainable_parameters"],
        "members": stats["members"],
        "flops_per_image": stats["flops_per_image"],
        "test_time_views": stats["views"],
        "input_shape": stats["input_shape"],
        "training_step_memory": {
            "batch_size": memory["batch_size"], "precision": memory["precision"],
            "total_bytes": memory["total"], "activation_bytes": memory["activations"],
        },
    }


def train_once(recipe: str, overrides: list[str], seed: int, runs: Path, threads: int | None) -> dict[str, Any]:
    """One seed in a fresh `zoo train` process: its JSON summary, wall time and the load around it."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "zoo", "train", recipe, *overrides, f"seed={seed}", "logger.wandb.mode=disabled",
           "--json", "--run-dir", str(runs / f"seed{seed}")]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)  # here, as the user would run zoo train
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"measure_recipe: seed {seed} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return {"summary": summary, "wall_s": wall, "load": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from zoo.core.recipe import find

    name = find(args.recipe).stem
    if name not in shipped_recipes():
        sys.exit(f"measure_recipe: {args.recipe} is not a shipped recipe (recipes/*.yaml)")
    results = read_results(args.results)
    entry = dict(results.get(name) or {})
    stats = model_stats(args.recipe, args.overrides, None, None)
    runs_dir = Path(tempfile.mkdtemp(prefix="measure-")) if args.keep_runs is None else Path(args.keep_runs)
    try:
        runs = [train_once(args.recipe, args.overrides, s, runs_dir, args.threads) for s in args.seeds]
    finally:
        if args.keep_runs is None:
            shutil.rmtree(runs_dir, ignore_errors=True)
    first = runs[0]["summary"]
    measured: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python benchmarks/measure_recipe.py run", name, *portable(args.overrides), "--seeds",
                             *map(str, args.seeds)] + ([f"--threads {args.threads}"] if args.threads else [])),
        "overrides": portable(args.overrides),
        "seeds": list(args.seeds),
        "test_acc": spread([r["summary"]["test_acc"] for r in runs]),
        "val_acc": spread([r["summary"]["val_acc"] for r in runs]),
    }
    if first.get("members"):
        means = [sum(m["test_acc"] for m in r["summary"]["members"]) / len(r["summary"]["members"]) for r in runs]
        measured["mean_member_test_acc"] = spread(means)
        if "snapshot" in first["members"][0]:  # a snapshot ensemble against the single model its run ends with
            measured["last_snapshot_test_acc"] = spread([r["summary"]["members"][-1]["test_acc"] for r in runs])
    measured["wall_s"] = spread([r["wall_s"] for r in runs], 1)
    measured["train_s"] = spread([r["summary"]["seconds"] for r in runs], 1)
    measured["load_1min"] = [r["load"] for r in runs]  # before and after each seed's run
    measured["hardware"] = machine(args.threads)
    measured["versions"] = versions()
    if args.note:
        measured["note"] = args.note
    entry = {"summary": entry.get("summary") or recipe_summary(name), "measured": measured, "stats": stats}
    results[name] = entry
    write_results(results, args.results)
    return {"recipe": name, **entry}


def from_speed(args: argparse.Namespace) -> dict[str, Any]:
    """An entry from benchmarks/cifar10_speed.py's JSON: the zoo side's runs, with airbench's beside them.

    Times there are zoo.train's whole call (data, fitting, every evaluation, checkpoints) as ``wall_s``, and
    the benchmark's training time (steps and the final test pass) as ``train_s``; an interpreter's start-up is
    not in them. The CPU's name and memory are read here, so run this on the machine that ran the benchmark.
    """
    from zoo.core.recipe import find

    lines = [line for line in args.json_file.read_text().splitlines() if line.strip().startswith("{")]
    if not lines:
        sys.exit(f"measure_recipe: {args.json_file}: no JSON object (the output of cifar10_speed.py --json)")
    speed = json.loads(lines[-1])
    side = speed.get("zoo") or {}
    if speed.get("benchmark") != "cifar10_speed" or "runs" not in side:
        sys.exit(f"measure_recipe: {args.json_file}: not a cifar10_speed.py result with a zoo side")
    if speed.get("tiny"):
        sys.exit(f"measure_recipe: {args.json_file}: a --tiny run checks plumbing; it measures nothing")
    name = find(side["recipe"]).stem
    if name not in shipped_recipes():
        sys.exit(f"measure_recipe: {side['recipe']} is not a shipped recipe (recipes/*.yaml)")
    runs = side["runs"]
    results = read_results(args.results)
    hardware = machine(None)
    hardware.update(cores=speed["cpu_cores"], gpu=speed["gpu"])
    if hardware["gpu"] is None:
        hardware["torch_threads"] = speed["cpu_cores"]
    measured: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "command": f"python benchmarks/cifar10_speed.py --device {speed['device']} --runs {speed['runs']}"
        + ("" if speed["warmup"] else " --no-warmup") + " --data <path to the data> --json",
        "overrides": portable(side["overrides"]),
        "seeds": [r["seed"] for r in runs],
        "test_acc": spread([r["test_acc"] for r in runs]),
        "val_acc": spread([r["val_acc"] for r in runs]),
        "wall_s": spread([r["wall_seconds"] for r in runs], 1),
        "train_s": spread([r["train_seconds"] for r in runs], 1),
        "load_1min": [r["load_1min"] for r in runs if "load_1min" in r],
        "hardware": hardware,
        "versions": {**speed["versions"], "commit": versions()["commit"]},
        "compared_with": {
            "airbench": {k: speed["airbench"].get(k) for k in ("variant", "test_acc", "train_seconds")},
            "time_ratio": speed["time_ratio"],
        },
    }
    if args.note:
        measured["note"] = args.note
    entry = {
        "summary": (results.get(name) or {}).get("summary") or recipe_summary(name),
        "measured": measured,
        # the benchmark trains on CIFAR-10 (3x32x32, 10 classes); where its data lay need not exist any more
        "stats": model_stats(side["recipe"], [o for o in side["overrides"] if o.split("=")[0] not in
                                              ("data.name", "data.root", "data.download")], (3, 32, 32), 10),
    }
    results[name] = entry
    write_results(results, args.results)
    return {"recipe": name, **entry}


def skip(args: argparse.Namespace) -> dict[str, Any]:
    from zoo.core.recipe import find

    name = find(args.recipe).stem
    results = read_results(args.results)
    shape = tuple(int(d) for d in args.input_shape.split("x")) if args.input_shape else None
    entry = {
        "summary": (results.get(name) or {}).get("summary") or recipe_summary(name),
        "not_measured": args.reason,
        "stats": model_stats(args.recipe, [], shape, args.classes),
    }
    results[name] = entry
    write_results(results, args.results)
    return {"recipe": name, **entry}


# --- the README table ---------------------------------------------------------------------------------

def _count(n: float) -> str:
    for limit, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if n >= limit:
            return f"{n / limit:.3g}{suffix}"
    return f"{n:.0f}"


def _seeds(seeds: list[int]) -> str:
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}–{seeds[-1]}"
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


def _accuracy(m: dict[str, Any]) -> str:
    acc = m["test_acc"]
    if len(m["seeds"]) == 1:
        text = f"{100 * acc['mean']:.1f}% ({_seeds(m['seeds'])})"
    elif acc["min"] == acc["max"]:
        text = f"{100 * acc['mean']:.1f}% (each of {_seeds(m['seeds'])})"
    else:
        text = (f"{100 * acc['mean']:.1f}% ± {100 * acc['std']:.1f} ({100 * acc['min']:.1f}–{100 * acc['max']:.1f}, "
                f"{_seeds(m['seeds'])})")
    if "mean_member_test_acc" in m:
        text += f"; members {100 * m['mean_member_test_acc']['mean']:.1f}%"
    if "last_snapshot_test_acc" in m:
        text += f", last snapshot {100 * m['last_snapshot_test_acc']['mean']:.1f}%"
    return text


def _time(m: dict[str, Any]) -> str:
    wall = m["wall_s"]
    if len(m["seeds"]) == 1:
        return f"{wall['mean']:.0f} s"
    return f"{wall['mean']:.0f} s ({wall['min']:.0f}–{wall['max']:.0f})"


def _hardware(m: dict[str, Any]) -> str:
    hw = m["hardware"]
    where = hw["gpu"] or f"{hw['cores']}-core CPU"
    if not hw["gpu"] and hw["torch_threads"] != hw["cores"]:
        where += f", {hw['torch_threads']} thread{'s' if hw['torch_threads'] > 1 else ''}"
    loads = [x for pair in m["load_1min"] for x in pair]
    if not loads:
        return f"{where}, load not recorded" + (f" ({m['note']})" if m.get("note") else "")
    return f"{where}, load {min(loads):.1f}–{max(loads):.1f}"


def readme_table(results: dict[str, Any], default: str | None = None) -> str:
    """The README's table of the shipped recipes, from the results file."""
    rows = ["| recipe | model | test accuracy | time | parameters | FLOPs / image | measured on |",
            "|---|---|---|---|---|---|---|"]
    for name in sorted(results, key=lambda n: (n != default, "not_measured" in results[n], n)):
        entry = results[name]
        stats = entry["stats"]
        label = f"`{name}`" + (" (default)" if name == default else "")
        flops = _count(stats["flops_per_image"])
        if stats.get("test_time_views", 1) > 1:
            flops += f" (x{stats['test_time_views']} views)"
        params = _count(stats["parameters"])
        if "not_measured" in entry:
            rows.append(f"| {label} | {entry['summary']} | not measured: {entry['not_measured']} | — | {params} "
                        f"| {flops} | — |")
            continue
        m = entry["measured"]
        rows.append(f"| {label} | {entry['summary']} | {_accuracy(m)} | {_time(m)} | {params} | {flops} "
                    f"| {_hardware(m)} |")
    return "\n".join(rows)


def problems(results: dict[str, Any]) -> list[str]:
    """What makes the results file disagree with the shipped recipes."""
    shipped = set(shipped_recipes())
    out = [f"{n}: shipped, but not in {RESULTS.name}" for n in sorted(shipped - set(results))]
    out += [f"{n}: in {RESULTS.name}, but no recipes/{n}.yaml" for n in sorted(set(results) - shipped)]
    for name, entry in results.items():
        if ("measured" in entry) == ("not_measured" in entry):
            out.append(f"{name}: needs either `measured` or `not_measured` (a reason)")
        if "stats" not in entry:
            out.append(f"{name}: no `stats` (parameters and FLOPs)")
    return out


def with_table(readme: str, table: str) -> str:
    if BEGIN not in readme or END not in readme:
        sys.exit(f"measure_recipe: README.md has no results table markers ({BEGIN} ... {END})")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def readme(args: argparse.Namespace) -> int:
    from zoo.core.recipe import DEFAULT_RECIPE

    results = read_results(args.results)
    found = problems(results)
    text = args.readme.read_text()
    wanted = with_table(text, readme_table(results, Path(DEFAULT_RECIPE).stem))
    if args.check:
        if wanted != text:
            found.append(f"{args.readme}: its results table is out of date; regenerate it with "
                         "python benchmarks/measure_recipe.py readme")
        for line in found:
            print(f"measure_recipe: {line}", file=sys.stderr)
        return 1 if found else 0
    for line in found:
        print(f"measure_recipe: warning: {line}", file=sys.stderr)
    args.readme.write_text(wanted)
    print(f"wrote the results table into {args.readme}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results file (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train a recipe for the given seeds and write its entry")
    run.add_argument("recipe")
    run.add_argument("overrides", nargs="*", metavar="key=value")
    run.add_argument("--seeds", type=int, nargs="+", default=[0])
    run.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the runs (default: torch's own choice)")
    run.add_argument("--note", help="a remark kept with the entry (e.g. what else ran on the machine)")
    run.add_argument("--keep-runs", metavar="DIR", help="keep the run folders here (default: deleted)")
    run.add_argument("--json", action="store_true", help="print the entry as JSON (last line)")
    sk = sub.add_parser("skip", help="write an entry saying why a recipe is not measured")
    sk.add_argument("recipe")
    sk.add_argument("--reason", required=True)
    sk.add_argument("--input-shape", metavar="CxHxW", help="the input shape, instead of reading the data")
    sk.add_argument("--classes", type=int, help="the number of classes, instead of reading the data")
    sk.add_argument("--json", action="store_true")
    fs = sub.add_parser("from-speed", help="write a recipe's entry from cifar10_speed.py --json output")
    fs.add_argument("json_file", type=Path, help="the benchmark's output (its last JSON line is read)")
    fs.add_argument("--note", help="a remark kept with the entry (e.g. what else ran on the machine)")
    fs.add_argument("--json", action="store_true")
    rd = sub.add_parser("readme", help="write the README's results table from the results file")
    rd.add_argument("--readme", type=Path, default=README)
    rd.add_argument("--check", action="store_true", help="exit 1 if README or file coverage is out of step")
    args = parser.parse_args()
    if args.command == "readme":
        return readme(args)
    entry = {"run": measure, "from-speed": from_speed, "skip": skip}[args.command](args)
    print(f"wrote {entry['recipe']} into {args.results}", file=sys.stderr)
    if args.json:
        print(json.dumps(entry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
