"""benchmarks/framework_overhead.py runs and reports what it promises (its speed is not tested here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = {"mlp_digits": ("mlp", "adamw", ["crop"]), "resnet20_synthetic": ("resnet", "nesterov", ["flip", "crop"])}


def test_framework_overhead_quick_json():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "framework_overhead.py"), "--quick", "--json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # --json: one JSON object and nothing else on stdout
    result = json.loads(lines[0])
    assert set(result["workloads"]) == set(WORKLOADS)
    for name, w in result["workloads"].items():
        for key in ("zoo_samples_per_s", "hand_samples_per_s", "zoo_median", "hand_median",
                    "zoo_cpu_samples_per_s", "hand_cpu_samples_per_s", "ratio", "ratio_median",
                    "ratio_paired", "ratio_cpu"):
            assert isinstance(w[key], (int, float)) and w[key] > 0, (name, key)
        # the ratio is of the rounded figures printed beside it, so it agrees with them to its own rounding
        assert abs(w["ratio"] - w["zoo_samples_per_s"] / w["hand_samples_per_s"]) < 0.001, name
        assert abs(w["ratio_median"] - w["zoo_median"] / w["hand_median"]) < 0.01, name
        # a best epoch is never slower than the median one
        assert w["zoo_samples_per_s"] >= w["zoo_median"] and w["hand_samples_per_s"] >= w["hand_median"]
        assert w["steps_per_epoch"] == -(-w["train_samples"] // w["batch_size"])
        assert w["timed_epochs_per_run"] == w["epochs_per_run"] - 1 >= 1 and w["runs"] >= 1
        assert w["zoo_val_and_checkpoint_s_per_epoch"] >= 0
        assert (w["model"], w["optimizer"], w["augment"]) == WORKLOADS[name]
    assert result["min_ratio"] == min(w["ratio"] for w in result["workloads"].values())
    assert result["target_met"] == (result["min_ratio"] >= result["target_ratio"])
    assert result["quick"] is True and result["torch_threads"] == 1 and result["device"].startswith(("cpu", "cuda"))
    assert result["wandb"] == "disabled" and result["progress_bar"] is False
