"""A W&B sweep ranks its runs by a metric the runs really log to W&B (read back from an offline run)."""

import os
from pathlib import Path

import pytest
import torch
import yaml

from zoo.monitoring.wandb_offline import offline_run_dirs, read_run_file, run_file, wait_until_written
from zoo.tools.sweep import load_sweep, wandb_definition
from zoo.tools.sweep_spec import ENSEMBLE_METRICS, RUN_METRICS

ROOT = Path(__file__).resolve().parent.parent
TINY = ["trainer.max_epochs=1", "model.width=16", "trainer.limit_train_batches=5",
        "trainer.limit_val_batches=2", "augment=[]", "logger.wandb.mode=offline"]


@pytest.fixture(autouse=True)
def _quiet_wandb(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def _definition_metric(tmp_path: Path, metric: str) -> str:
    sweep = tmp_path / f"{metric}.yaml"
    sweep.write_text(yaml.safe_dump({
        "base": os.path.relpath(ROOT / "recipes" / "mlp-digits.yaml", tmp_path), "metric": metric,
        "parameters": {"optimizer.lr": {"log_uniform": [1e-4, 1e-1]}},
    }))
    return wandb_definition(load_sweep(sweep))["metric"]["name"]


def _logged_names(run_dir: Path) -> set[str]:
    """What the W&B run of this run folder (not its members') holds in its summary: what W&B's sweep
    controller reads."""
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    [folder] = [d for d in offline_run_dirs(run_dir) if d.name.endswith(f"-{run_id}")]
    wait_until_written(run_file(folder))
    return set(read_run_file(run_file(folder)).summary)


def test_a_runs_metric_is_named_as_the_run_logs_it(tmp_path):
    import zoo

    zoo.train(None, TINY, run_dir=tmp_path / "run", progress=False)
    logged = _logged_names(tmp_path / "run")
    for metric in RUN_METRICS:
        assert _definition_metric(tmp_path, metric) in logged, (metric, sorted(logged))


def test_an_ensembles_metric_is_named_as_its_own_run_logs_it(tmp_path):
    import zoo

    zoo.train(None, [*TINY, "ensemble={members: 2}"], run_dir=tmp_path / "duo", progress=False)
    logged = _logged_names(tmp_path / "duo")
    for metric in ENSEMBLE_METRICS:
        assert _definition_metric(tmp_path, metric) in logged, (metric, sorted(logged))


def test_a_metric_no_run_logs_is_refused_in_one_line_and_nothing_written(tmp_path, capsys):
    from zoo.cli.main import main

    sweep = tmp_path / "sweep.yaml"
    _definition_metric(tmp_path, "val_acc")
    written = (tmp_path / "val_acc.yaml").read_text()
    sweep.write_text(written.replace("metric: val_acc", "metric: val_accuracy"))
    out = tmp_path / "wandb.yaml"
    assert main(["sweep", str(sweep), "--wandb", "--wandb-out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"zoo: error: {sweep}: metric: 'val_accuracy' is not a metric a trial reports"), err
    assert "did you mean: val_acc" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
