"""Reading a run folder never runs code it names: a plugin listed in a run's recipe.yaml or in its
checkpoints is imported only when the user passes it with --plugin, whatever the command.

The run folder is a real one, trained here, with a plugin planted afterwards the way someone handing
over a folder could: its recipe.yaml and checkpoints list a file that writes a marker when imported.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

import zoo
from zoo.cli.main import main

TINY = ["trainer.max_epochs=1", "model.width=16", "augment=[]", "trainer.limit_train_batches=3"]


def _plant(run: Path, plugin: Path) -> None:
    text = (run / "recipe.yaml").read_text()
    assert "\nplugins: []\n" in text
    (run / "recipe.yaml").write_text(text.replace("\nplugins: []\n", f"\nplugins: [{plugin}]\n"))
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        state = torch.load(ckpt, weights_only=True)
        state["hyper_parameters"]["recipe"]["plugins"] = [str(plugin)]
        torch.save(state, ckpt)


def _hand_over_a_sweep(folder: Path, plugin: Path, sweep: str) -> None:
    """A stopped sweep's folder whose record names a sweep file, whose recipe lists the plugin."""
    from zoo.core.io import write_json
    from zoo.tools.sweep import load_sweep
    from zoo.tools.sweep_folder import RECORD, described
    from zoo.training.run_folder import MARKER

    elsewhere = folder.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "recipe.yaml").write_text(f"base: {zoo.__path__[0]}/../recipes/mlp-digits.yaml\nplugins: [{plugin}]\n")
    (elsewhere / "sweep.yaml").write_text(f"base: recipe.yaml\n{sweep}")
    folder.mkdir()
    (folder / MARKER).write_text("{}")
    spec = load_sweep(elsewhere / "sweep.yaml")
    write_json(folder / RECORD, {"sweep_file": str(elsewhere / "sweep.yaml"), "sweep": described(spec), "trials": {}})


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(root, finished run, stopped run, plugin file, marker): both runs name the plugin; nothing ran it yet."""
    root = tmp_path_factory.mktemp("planted")
    torch.set_num_threads(1)
    zoo.train(None, TINY, run_dir=root / "run", progress=False)
    marker = root / "MARKER"
    plugin = root / "planted.py"
    plugin.write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n")
    _plant(root / "run", plugin)
    shutil.copytree(root / "run", root / "stopped")
    (root / "stopped" / "metrics.json").unlink()  # as a run killed after its checkpoint leaves it
    sweep = "trials: 1\nepochs_per_stage: 1\nparameters:\n  optimizer.lr: {values: [0.01]}\n"
    (root / "sweep.yaml").write_text(f"base: run/recipe.yaml\n{sweep}")
    _hand_over_a_sweep(root / "handed", plugin, sweep)
    assert not marker.exists()
    return root, plugin, marker


COMMANDS = {
    "report": ["report", "run", "--out", "report.html"],
    "report --wandb": ["report", "run", "--wandb", "--out", "report.json"],
    "eval": ["eval", "run"],
    "predict": ["predict", "run", "--out", "predictions.csv"],
    "train --resume": ["train", "--resume", "stopped"],
    "train its recipe": ["train", "run/recipe.yaml", "--run-dir", "again"],
    "show": ["show", "run/recipe.yaml"],
    "show --stats": ["show", "run/recipe.yaml", "--stats"],
    "augment": ["augment", "run/recipe.yaml", "--out", "grid.png"],
    "sanity": ["sanity", "run/recipe.yaml"],
    "lr-find": ["lr-find", "run/recipe.yaml", "--steps", "3"],
    "sweep": ["sweep", "sweep.yaml", "--sweep-dir", "sweep"],
    "sweep --resume": ["sweep", "--resume", "handed"],
}


@pytest.fixture(autouse=True)
def _forget_the_plant(planted):
    """Each test starts with the plugin never imported: no marker, no module."""
    yield
    planted[2].unlink(missing_ok=True)
    for name in [m for m in sys.modules if m.startswith("zoo_local_plugin_planted_")]:
        del sys.modules[name]


@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_imports_a_plugin_a_run_folder_names(planted, command, monkeypatch, capsys):
    root, plugin, marker = planted
    monkeypatch.chdir(root)
    code = main(COMMANDS[command])
    err = capsys.readouterr().err
    assert not marker.exists(), f"zoo {command} ran the planted plugin"
    if command == "report":  # the report is written; its confusion matrix says why it is missing
        assert code == 0
        assert f"pass --plugin {plugin}" in (root / "report.html").read_text()
    elif command != "report --wandb":  # that one stops earlier: the run has no W&B run
        assert code == 2, err
        assert f"pass --plugin {plugin}" in err and "Traceback" not in err
    assert not (root / "again").exists() and not (root / "sweep").exists()
    assert sorted(p.name for p in (root / "handed").iterdir()) == [".zoo-run", "sweep.json"]


def test_the_planted_plugin_runs_when_the_user_passes_it(planted, monkeypatch):
    """The control: the same file, passed with --plugin, is imported (and so the tests above would see it)."""
    root, plugin, marker = planted
    monkeypatch.chdir(root)
    assert main(["show", "run/recipe.yaml", "--plugin", str(plugin)]) == 0
    assert marker.read_text() == "imported"
