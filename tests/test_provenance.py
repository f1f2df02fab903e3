"""Provenance: the resolved recipe and every checkpoint record which package (and version) supplied each
component; eval, predict and --resume name the missing package when a plugin is gone.

One short run trains a model from `zoo-extras` 0.1.0, a package installed for the occasion (a
dist-info on sys.path, as pip leaves one); the package is then uninstalled, upgraded or disabled.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from zoo.cli.main import main
from zoo.core import discovery
from zoo.core.registry import REGISTRIES

EXTRAS = """
from torch import nn

from zoo import models


@models.register("small_cnn")
def small_cnn(input_shape, num_classes, *, width: int = 16) -> nn.Module:
    '''Not a CNN at all: flatten, ``width`` hidden units, a linear head.'''
    size = 1
    for s in input_shape:
        size *= s
    return nn.Sequential(nn.Flatten(), nn.Linear(size, width), nn.ReLU(), nn.Linear(width, num_classes))
"""
MODULE = "zoo_extras_models"


def package(root: Path, version: str) -> Path:
    site = root / f"site-{version}"
    site.mkdir()
    (site / f"{MODULE}.py").write_text(textwrap.dedent(EXTRAS))
    info = site / f"zoo_extras-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: zoo-extras\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[zoo.plugins]\nmodels = {MODULE}\n")
    return site


def install(site: Path | None) -> None:
    """Make ``site`` the only zoo-extras on the path (None: none at all), and rediscover the plugins."""
    for record in discovery.records():
        if record.origin.package == "zoo-extras" or record.origin.file:
            for registry in REGISTRIES.values():
                registry.drop(record.label)
            sys.modules.pop(record.origin.module or "", None)
    sys.path[:] = [p for p in sys.path if "site-0." not in p]
    if site is not None:
        sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    discovery.reset()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished run of model=small_cnn from zoo-extras 0.1.0, one epoch on digits."""
    root = tmp_path_factory.mktemp("provenance")
    sites = {v: package(root, v) for v in ("0.1.0", "0.2.0")}
    install(sites["0.1.0"])
    run = root / "run"
    try:
        status = main(["train", "mlp-digits", "model=small_cnn", "trainer.max_epochs=1", "--run-dir", str(run)])
        assert status == 0
    finally:
        install(None)
    yield run, sites
    install(None)


def test_the_run_records_package_and_version_in_its_recipe_and_checkpoint(trained):
    run, _ = trained
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    assert recipe["provenance"]["model"] == {
        "name": "small_cnn", "registry": "models", "package": "zoo-extras", "version": "0.1.0"
    }
    assert recipe["provenance"]["data"]["package"] == "zoo"
    checkpoint = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["recipe"]["provenance"] == recipe["provenance"]


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_a_checkpoint_whose_plugin_is_not_installed_names_package_and_version(trained, command, capsys):
    run, _ = trained
    install(None)
    assert main([command, str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"zoo: error: {run / 'checkpoints' / 'best.ckpt'}: model 'small_cnn' came from zoo-extras 0.1.0, "
        "which is not installed (pip install zoo-extras)"
    )


def test_resuming_a_run_whose_plugin_is_not_installed_names_it_too(trained, capsys, tmp_path):
    import shutil

    run, _ = trained
    stopped = tmp_path / "stopped"
    shutil.copytree(run, stopped)
    (stopped / "metrics.json").unlink()  # as if it had been killed before the end
    install(None)
    assert main(["train", "--resume", str(stopped)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"zoo: error: {stopped / 'recipe.yaml'}: model 'small_cnn' came from zoo-extras 0.1.0")
    assert err.endswith("which is not installed (pip install zoo-extras)")


def test_another_version_installed_works_with_a_warning(trained, capsys):
    run, sites = trained
    install(sites["0.2.0"])
    try:
        assert main(["eval", str(run)]) == 0
    finally:
        install(None)
    assert capsys.readouterr().err.strip() == (
        f"zoo: warning: {run / 'checkpoints' / 'best.ckpt'}: model 'small_cnn' was recorded as coming from "
        "zoo-extras 0.1.0; it now comes from zoo-extras 0.2.0"
    )


def test_installed_but_disabled_says_so(trained, capsys, monkeypatch):
    run, sites = trained
    monkeypatch.setenv("ZOO_DISABLE_PLUGINS", "zoo-extras")
    install(sites["0.1.0"])
    try:
        assert main(["eval", str(run)]) == 2
    finally:
        install(None)
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "model 'small_cnn' came from zoo-extras 0.1.0; zoo-extras 0.1.0 is installed but is disabled (ZOO_DISABLE_PLUGINS)"
    )


def test_a_plugin_file_given_with_plugin_is_imported_and_recorded(tmp_path, capsys, monkeypatch):
    """`--plugin FILE` imports it, for train and for eval, even when no recipe lists it."""
    monkeypatch.chdir(tmp_path)
    plugin = tmp_path / "wide.py"
    plugin.write_text(textwrap.dedent(EXTRAS).replace('"small_cnn"', '"file_mlp"'))
    args = ["train", "mlp-digits", "model=file_mlp", "trainer.max_epochs=1", "--run-dir", "run"]
    assert main([*args, "--plugin", str(plugin)]) == 0
    recorded = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["provenance"]["model"]
    assert recorded["file"] == str(plugin) and len(recorded["sha256"]) == 16
    install(None)  # forget it again
    assert main(["eval", "run"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"model 'file_mlp' came from the plugin file {plugin}, which is not loaded; pass --plugin {plugin} "
        "(or list it under plugins:)"
    )
    assert main(["eval", "run", "--plugin", str(plugin)]) == 0
    assert "test acc:" in capsys.readouterr().out
    install(None)
