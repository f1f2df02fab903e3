"""benchmarks/cifar10_speed.py and benchmarks/batch_scaling.py in their tiny modes: what they report, not how fast."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg" / "cifar10-jpg.tar.gz"
UNPACKED = ROOT / "data" / "cifar10-jpg"

needs_cifar_jpegs = pytest.mark.skipif(
    not (ARCHIVE.is_file() or (UNPACKED / "train").is_dir()),
    reason=f"no CIFAR-10 JPEG copy at {ARCHIVE} or {UNPACKED}",
)



def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_zoo_side(result: dict) -> None:
    zoo = result["zoo"]
    # each device has its own recipe: the CPU trains cifar10-cpu (speedrun_cnn, bfloat16)
    if result["device"] == "cpu":
        assert zoo["recipe"] == "cifar10-cpu" and "model.widths=[8,16,16]" in zoo["overrides"]
    else:
        assert zoo["recipe"] == "cifar10-fast" and "model.width=8" in zoo["overrides"]
    assert "data.name=imagefolder" in zoo["overrides"]
    assert not any(o.startswith("trainer.precision") for o in zoo["overrides"])  # the recipe's own
    assert (
        0 <= zoo["test_acc"] <= 1
        and zoo["train_seconds"] > 0
        and zoo["wall_seconds"] >= zoo["train_seconds"] * 0.9
    )
    (run,) = zoo["runs"]
    assert run["epochs"] == 2 and run["steps"] == 2 * 6  # 180 train images, batch 32
    assert abs(run["train_seconds"] - run["train_loop_seconds"] - run["test_seconds"]) < 1e-3
    assert len(run["load_1min"]) == 2 and min(run["load_1min"]) >= 0  # the machine's load before and after
    # the tiny folder: 20 + 10 images per class; the zoo carves 10% of train off for validation
    assert result["data"]["train_images"] == 180 and result["data"]["val_images"] == 20
    assert result["data"]["test_images"] == 100


@needs_cifar_jpegs
def test_cifar10_speed_tiny_zoo_only(run_benchmark, tmp_path):
    result = run_benchmark("cifar10_speed.py", "--tiny", "--only", "zoo", "--json")
    assert result["tiny"] is True and result["runs"] == 1 and result["warmup"] is False
    assert result["device"] in ("cpu", "cuda") and "torch" in result["versions"]
    check_zoo_side(result)
    assert result["airbench"] == {"skipped": "--only zoo"}
    assert result["time_ratio"] is None and result["target"]["met"] is None
    check_results_entry_from(result, tmp_path)


def check_results_entry_from(result: dict, tmp_path: Path) -> None:
    """measure_recipe.py from-speed turns the benchmark's JSON into the recipe's results.yaml entry."""
    results = tmp_path / "results.yaml"
    shutil.copy(BENCH / "results.yaml", results)
    speed = tmp_path / "speed.json"
    speed.write_text(json.dumps(result))

    def from_speed():
        return subprocess.run([sys.executable, str(BENCH / "measure_recipe.py"), "--results", str(results),
                               "from-speed", str(speed)], capture_output=True, text=True, timeout=300)

    refused = from_speed()  # a --tiny run measures nothing
    assert refused.returncode != 0 and "--tiny" in refused.stderr
    speed.write_text(json.dumps({**result, "tiny": False}))
    done = from_speed()
    assert done.returncode == 0, done.stderr
    m = yaml.safe_load(results.read_text())[result["zoo"]["recipe"]]["measured"]
    (run,) = result["zoo"]["runs"]
    assert m["seeds"] == [run["seed"]] and m["test_acc"]["per_seed"] == [round(run["test_acc"], 4)]
    assert m["train_s"]["mean"] == round(run["train_seconds"], 1)
    assert m["wall_s"]["mean"] == round(run["wall_seconds"], 1) and m["load_1min"] == [run["load_1min"]]
    assert "data.root=<path to the data>" in m["overrides"]  # the benchmark machine's path is not recorded
    assert m["compared_with"]["time_ratio"] == result["time_ratio"]


@needs_cifar_jpegs
def test_cifar10_speed_tiny_both_sides(run_benchmark):
    pytest.importorskip("airbench", reason="airbench is not installed (pip install airbench==0.1.8)")
    result = run_benchmark("cifar10_speed.py", "--tiny", "--json")
    check_zoo_side(result)
    ab = result["airbench"]
    assert ab["variant"] == "airbench94" and ab["published"]["seconds"] == 3.83
    assert 0 <= ab["test_acc"] <= 1 and ab["train_seconds"] > 0
    (run,) = ab["runs"]
    # airbench scored its own test loader (read from the file the benchmark wrote) as the script did:
    # the same 100 test images reached it
    assert abs(run["printed_tta_acc"] - run["test_acc"]) < 1e-3
    assert run["batch_size"] == 32 and run["epochs"] == 2
    if result["device"] == "cpu":
        assert "cpu_stand_ins" in ab
    # ratios come from unrounded means; the reported seconds are rounded to the millisecond
    zoo = result["zoo"]
    assert result["time_ratio"] == pytest.approx(zoo["train_seconds"] / ab["train_seconds"], rel=0.01)
    assert result["wall_ratio"] == pytest.approx(zoo["wall_seconds"] / ab["wall_seconds"], rel=0.01)
    assert result["accuracy_gap"] == pytest.approx(zoo["test_acc"] - ab["test_acc"], abs=2e-4)
    assert result["target"]["met"] is None  # tiny runs say nothing about the target


def test_cifar10_speed_without_airbench_exits_2():
    # the script must not install airbench; with it missing it says how, in one line, and exits 2
    code = (
        "import importlib.util, runpy, sys\n"
        "find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'airbench' else find(name, *a)\n"
        "sys.argv = ['cifar10_speed.py', '--tiny', '--json']\n"
        f"runpy.run_path({str(BENCH / 'cifar10_speed.py')!r}, run_name='__main__')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install airbench==0.1.8" in lines[0]


def test_airbench_table_parsing():
    bench = load_script("cifar10_speed")
    columns = ["run   ", "epoch", "train_loss", "train_acc", "val_acc", "tta_val_acc", "total_time_seconds"]
    # a second run prints no header; its last row is the one with the timer
    text = (
        "|       1  |      0  |      2.2909  |     0.1250  |   0.1100  |               |              0.6118  |\n"
        "|          |   eval  |      2.2707  |     0.1562  |   0.1100  |       0.1250  |              1.8032  |\n"
    )
    assert bench.parse_airbench_table(text, columns) == {"tta_val_acc": 0.125, "seconds": 1.8032}
    with pytest.raises(RuntimeError, match="no final 'eval' row"):
        bench.parse_airbench_table(text.splitlines()[0], columns)


def test_batch_scaling_quick_json(run_benchmark):
    result = run_benchmark("batch_scaling.py", "--quick", "--json")
    assert result["quick"] is True and result["recipe"] == "resnet-digits"
    assert result["devices"] == 1 and result["device_counts"] == [1] and result["device_rows"] == []
    rows = result["rows"]
    assert [r["batch_size"] for r in rows] == [16, 32, 64]
    assert rows[0]["ratio"] == 1.0
    for row in rows:
        assert row["devices"] == 1 and row["global_batch"] == row["batch_size"]
        assert row["steps"] == result["steps"] == 4
        # digits has 1,257 training images: every batch is full
        assert row["samples"] == row["steps"] * row["batch_size"]
        assert row["samples_per_s"] == pytest.approx(row["samples"] / row["seconds"], rel=0.01)
        assert row["ratio"] == pytest.approx(row["samples_per_s"] / rows[0]["samples_per_s"], rel=0.01)
