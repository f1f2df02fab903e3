"""``zoo report --wandb``: a W&B Report over exactly the runs given, built offline from real (short) runs.

Only the network calls the wandb-workspaces library makes are stubbed (the project look-up and the save),
when publishing; building and writing the spec needs none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import zoo
from zoo.monitoring.wandb_offline import read_offline_run

pytest.importorskip("wandb_workspaces")

SHORT = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.log_every_n_steps=2",
    "logger.wandb.mode=offline",
]
RUNS = {
    "mlp": ["mlp-digits", *SHORT],
    "resnet": ["resnet-digits", *SHORT, "model.depth=8", "schedule.warmup_epochs=1", "tta.crops=0"],
    "ensemble": ["mlp-digits-ensemble", *SHORT, "ensemble.members=2"],
}


def _no_credentials(env: dict[str, str], home: Path) -> dict[str, str]:
    env = {k: v for k, v in env.items() if k not in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_SERVICE")}
    return {**env, "HOME": str(home), "NETRC": str(home / "no-netrc"), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """mlp-digits, resnet-digits and the mlp-digits ensemble, shortened, logged to W&B offline."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    for key, value in _no_credentials(dict(os.environ), root).items():
        mp.setenv(key, value)
    mp.delenv("WANDB_MODE", raising=False)
    try:
        for name, (recipe, *overrides) in RUNS.items():
            zoo.train(recipe, overrides, run_dir=root / name, progress=False)
    finally:
        mp.undo()
    return root


def wandb_ids(run_dir: Path) -> set[str]:
    """The ids of the W&B runs whose files are in a run folder's wandb/ (members' included)."""
    return {p.name.rsplit("-", 1)[-1] for p in (run_dir / "wandb").glob("offline-run-*")}


def test_offline_report_spec_selects_exactly_these_runs_and_holds_the_plots(three_runs, tmp_path):
    from zoo.reporting.wandb_report import read_spec, report_grids

    root = three_runs
    folders = [root / name for name in RUNS]
    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "zoo", "report", *map(str, folders), "--wandb", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
        env=_no_credentials(dict(os.environ), tmp_path),
    )
    assert done.returncode == 0, done.stderr
    # the upload commands, one per run folder (the ensemble's members included in its own), and the publish
    for folder in folders:
        assert f"wandb sync {folder / 'wandb'}" in done.stdout
    assert f"zoo report --publish {out}" in done.stdout
    spec = read_spec(out)
    every = set().union(*map(wandb_ids, folders))
    assert len(every) == 5  # mlp, resnet, the ensemble and its two members
    learning, media, ensemble = report_grids(spec)
    # every grid selects exactly these runs by their W&B ids
    assert [sorted(ids) for ids in learning["runsets"].values()] == [sorted(every)]
    assert [sorted(ids) for ids in media["runsets"].values()] == [sorted(every)]
    assert [sorted(ids) for ids in ensemble["runsets"].values()] == [sorted(wandb_ids(root / "ensemble"))]
    # line plots: loss, accuracy and the learning rate against the optimizer step; then a run comparer
    lines = {
        p.config.chart_title: p.config for p in learning["panels"] if p.view_type == "Run History Line Plot"
    }
    assert lines["loss"].metrics == ["train/loss_epoch", "val/loss"]
    assert lines["accuracy"].metrics == ["train/acc", "val/acc"]
    assert lines["learning rate"].metrics == ["train/lr/pg1", "train/lr/pg2"]  # two groups: decayed or not
    assert {c.x_axis for c in lines.values()} == {"trainer/global_step"}
    assert [p.view_type for p in learning["panels"]].count("Run Comparer") == 1
    assert sorted(k for p in media["panels"] for k in p.config.media_keys) == [
        "augmentations",
        "test/confusion_matrix",
    ]
    # the ensemble's grid: members and ensemble side by side
    bars = [p.config.metrics for p in ensemble["panels"] if p.view_type == "Bar Chart"]
    assert bars == [["test/acc"], ["val/acc"]]
    # what the panels plot is what the runs logged
    logged = set()
    for folder in folders:
        for i in range(len(list((folder / "wandb").glob("offline-run-*")))):
            run = read_offline_run(folder, index=i)
            logged |= run.history_keys() | set(run.summary)
    plotted = {m for c in lines.values() for m in c.metrics} | {m for b in bars for m in b}
    assert plotted <= logged, plotted - logged
    assert {"augmentations/_type", "test/confusion_matrix/_type"} <= logged
    # the summary text: the recipes, what differs, and the figures
    text = next(b.content for b in spec.spec.blocks if getattr(b, "type", "") == "markdown-block")
    for name in RUNS:
        metrics = json.loads((root / name / "metrics.json").read_text())
        assert f"{metrics['test_acc']:.4f}" in text
    assert "`mlp-digits.yaml`" in text and "`resnet-digits.yaml`" in text
    assert "| `model.name` | mlp | resnet | mlp |" in text and "combined by `mean`" in text


class FakeApi:
    default_entity = "someone"

    class client:  # noqa: N801 - the attribute wandb's Api has
        app_url = "https://wandb.example"

    def projects(self, entity):
        return []

    def create_project(self, name, entity):
        self.created = (name, entity)


def test_publish_saves_the_spec_through_the_library(three_runs, tmp_path, monkeypatch, capsys):
    """Publishing goes through wandb-workspaces' own save; only its two server calls are stubbed."""
    from wandb_workspaces.reports.v2 import gql, interface

    from zoo.cli.main import main

    monkeypatch.chdir(three_runs)
    spec = tmp_path / "report.json"
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert main(["report", *RUNS, "--wandb", "--out", str(spec)]) == 0
    assert main(["report", "--publish", str(spec)]) == 2  # no API key: a clear refusal
    assert "needs an API key" in capsys.readouterr().err

    calls = []

    def execute_graphql(api, query, variables=None):
        calls.append((query, variables))
        if query is gql.projectInternalId:
            return {"project": {"internalId": f"id-of-{variables['projectName']}"}}
        if query is gql.upsert_view:
            return {
                "upsertView": {
                    "view": {
                        "id": "REPORT1",
                        "displayName": variables["displayName"],
                        "spec": variables["spec"],
                    }
                }
            }
        raise AssertionError(f"unexpected server call {query}")

    monkeypatch.setattr(interface, "_get_api", lambda: FakeApi())
    monkeypatch.setattr(interface, "execute_graphql", execute_graphql)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert main(["report", "--publish", str(spec)]) == 0
    url = capsys.readouterr().out.strip().splitlines()[-1]
    assert url.startswith("https://wandb.example/someone/zoo/reports/") and url.endswith("--REPORT1")
    saved = next(v for q, v in calls if q is gql.upsert_view)
    assert saved["entityName"] == "someone" and saved["projectName"] == "zoo"
    sent = json.loads(saved["spec"])
    runsets = [rs for b in sent["blocks"] if b["type"] == "panel-grid" for rs in b["metadata"]["runSets"]]
    assert len(runsets) == 3
    assert all(rs["project"] == {"name": "zoo", "entityName": "someone", "id": "id-of-zoo"} for rs in runsets)
    every = set().union(*(wandb_ids(three_runs / name) for name in RUNS))
    assert set(runsets[0]["filters"]["filters"][0]["value"]) == every
