"""The benchmark scripts run and report what they promise (their speed is not tested here)."""

from __future__ import annotations


def test_augment_throughput_quick_json(run_benchmark):
    # --model-step: the GPU's report (augmentation time against a training step), exercised on the CPU
    result = run_benchmark(
        "augment_throughput.py", "--quick", "--json", "--device", "cpu", "--model-step", timeout=300
    )
    for key in ("zoo_images_per_s", "torchvision_images_per_s", "ratio", "zoo_ms_per_batch", "model_step_ms"):
        assert isinstance(result[key], (int, float)) and result[key] > 0
    runs = result["runs"]
    for key in ("ratio", "zoo_images_per_s", "torchvision_images_per_s"):
        assert runs[key]["min"] <= runs[key]["median"] <= runs[key]["max"]
        assert runs[key]["median"] == result[key]
    assert result["repeats"] == 2 and len(result["load_avg_at_start"]) == 3
    # the median ratio is the median of the runs' ratios, which lies within the sides' own ranges
    assert runs["zoo_images_per_s"]["min"] / runs["torchvision_images_per_s"]["max"] - 0.01 <= result["ratio"]
    assert result["ratio"] <= runs["zoo_images_per_s"]["max"] / runs["torchvision_images_per_s"]["min"] + 0.01
    assert abs(result["augment_share_of_step"] - result["zoo_ms_per_batch"] / result["model_step_ms"]) < 1e-3
    assert result["device"] == "cpu" and result["zoo_gpu_ms_per_batch"] is None
    assert result["batch_size"] == 64 and result["images"] == 384
    assert result["torchvision_workers"] == 2


def test_digits_vs_sklearn_quick_json(run_benchmark):
    result = run_benchmark("digits_vs_sklearn.py", "--quick", "--json")
    assert 0 < result["zoo_test_acc"] <= 1 and 0 < result["sklearn_test_acc"] <= 1
    # the ratio is of the unrounded times, so it agrees with the rounded ones to within their rounding
    assert abs(result["time_ratio"] - result["zoo_seconds"] / result["sklearn_seconds"]) < 0.05
    assert result["quick"] is True


def test_fault_injection_quick_json(run_benchmark):
    # the kill -9 case; the DDP and lock cases have their fast forms in test_ddp.py and test_run_folder.py
    out = run_benchmark("fault_injection.py", "--quick", "--json", "--case", "kill9")
    assert out["clean"] and list(out["cases"]) == ["kill9"]
    result = out["cases"]["kill9"]
    # one kill, unless the run (faster than the reference on a quiet machine) finished before it landed
    assert result["runs"] == 1 and result["kills"] <= 1
    assert result["resumed"] + result["started_over"] + result["killed_after_finishing"] == result["kills"]
    assert result["identical"] == 1 and result["per_run"][0]["metrics"] == result["reference_metrics"]


def test_fault_injection_quick_wandb_json(run_benchmark):
    out = run_benchmark("fault_injection.py", "--quick", "--wandb", "--json", "--case", "kill9")
    assert out["clean"] and list(out["cases"]) == ["kill9"]
    result = out["cases"]["kill9"]
    assert result["identical"] == 1 and result["wandb_clean"] == 1
    held = result["per_run"][0]["wandb"]
    # the W&B history over the run's sittings: every value of its metrics.csv, once, and the same
    assert held["values"] > 0 and held["twice"] == held["missing"] == held["different"] == 0
    assert held["finished"] and 1 <= held["sittings"] <= 1 + result["kills"]


def test_fault_injection_moments_quick_json(run_benchmark):
    # one trial: kill -9 in the middle of the last metrics.csv write, the final test's, which adds columns
    # (metrics.csv was rewritten in place, and such a kill left it empty), then resumed
    out = run_benchmark("fault_injection.py", "--quick", "--json", "--case", "moments", "--moment", "metrics:-1",
                        timeout=600)
    assert out["clean"] and list(out["cases"]) == ["moments"]
    result = out["cases"]["moments"]
    assert result["trials"] == result["clean_trials"] == 1
    trial = result["per_run"][0]
    assert (trial["phase"], trial["signal"], trial["exit_code"]) == ("metrics", "SIGKILL", -9)
    assert trial["moment"] == trial["of"] == result["reference_events"]["k20"]["metrics"]
    assert trial["resumed"] == 1 and trial["identical"] and trial["best_same"] and trial["csv_whole"]
    assert result["phases"]["metrics"] == result["signals"]["SIGKILL"] == 1
    assert set(result["phases"]) == {"metrics", "train", "validation", "checkpoint", "test"}
