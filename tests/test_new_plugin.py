"""``zoo new-plugin``: the package it writes installs with pip and passes its own tests right away.

The install is real (``pip install -e .``, entry points and all) into a throw-away venv that sees
this environment's packages through a .pth file, so it needs no network and takes seconds:
``--no-deps`` (zoo, torch and the rest are already importable) and ``--no-build-isolation``
(setuptools comes from this environment too).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from zoo.cli.main import main
from zoo.cli.scaffold import KINDS
from zoo.core.registry import REGISTRIES

NAME = "zoo-scaffolded"


def venv_seeing_this_environment(folder: Path) -> Path:
    """A venv without pip of its own whose site-packages adds every site directory of this interpreter."""
    venv.EnvBuilder(with_pip=False).create(folder)
    site = next((folder / "lib").glob("python3*/site-packages"))
    ours = [p for p in sys.path if p.endswith("site-packages")]
    (site / "_this_environment.pth").write_text("import site; " + "; ".join(f"site.addsitedir({p!r})" for p in ours) + "\n")
    return folder / "bin" / "python"


def run(args: list, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ZOO_RUN_DIR", "ZOO_DISABLE_PLUGINS")}
    env.update(WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_package_installs_and_passes_its_own_tests(tmp_path):
    package = tmp_path / NAME
    made = run([sys.executable, "-m", "zoo", "new-plugin", NAME, "--out", package], tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv_seeing_this_environment(tmp_path / "venv")
    installed = run(
        [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-e", package],
        tmp_path,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    tests = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], package)
    assert tests.returncode == 0, tests.stdout[-4000:]
    summary = tests.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    failed = re.search(r"(\d+) (failed|error)", summary)
    assert failed is None, summary
    # every component passes the checks that apply to it (5 to 8 of the 8), plus the training test
    assert passed >= 5 * len(KINDS) + 1, summary

    listed = run([python, "-m", "zoo", "plugins", "--json"], package)
    assert listed.returncode == 0, listed.stderr
    rows = [r for r in json.loads(listed.stdout) if r["package"] == NAME]
    assert {r["status"] for r in rows} == {"loaded"} and {r["version"] for r in rows} == {"0.1.0"}
    registries = {registry for r in rows for registry in r["components"]}
    assert registries == {registry for _, registry, _, _ in KINDS.values()}


def test_it_refuses_a_bad_name_an_unknown_kind_and_a_folder_in_use(tmp_path, capsys):
    assert main(["new-plugin", "9lives", "--out", str(tmp_path / "a")]) == 2
    assert "'9lives' is not a package name" in capsys.readouterr().err
    assert main(["new-plugin", "zoo-x", "--kinds", "activation,wormhole", "--out", str(tmp_path / "b")]) == 2
    assert "got wormhole" in capsys.readouterr().err
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "mine.txt").write_text("keep")
    assert main(["new-plugin", "zoo-x", "--out", str(tmp_path / "c")]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["mine.txt"]


def test_a_package_is_written_whole_or_not_at_all(tmp_path, capsys, monkeypatch):
    write_text = Path.write_text

    def full_at_readme(self, *args, **kwargs):
        if self.name == "README.md":
            raise OSError(28, "No space left on device")
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_at_readme)
    assert main(["new-plugin", "zoo-x", "--out", str(tmp_path / "deep" / "pkg")]) == 2
    err = capsys.readouterr().err
    assert err == f"zoo: error: new-plugin: {tmp_path / 'deep' / 'pkg'}: cannot write there: No space left on device\n"
    assert list(tmp_path.iterdir()) == []  # neither half a package nor the folders made for it
    (tmp_path / "empty").mkdir()
    assert main(["new-plugin", "zoo-x", "--out", str(tmp_path / "empty")]) == 2
    assert list(tmp_path.iterdir()) == [tmp_path / "empty"] and list((tmp_path / "empty").iterdir()) == []
    monkeypatch.undo()
    assert main(["new-plugin", "zoo-x", "--out", str(tmp_path / "empty")]) == 0  # an empty folder is filled
    assert (tmp_path / "empty" / "README.md").is_file()


@pytest.mark.parametrize("kinds", [["activation"], ["model", "dataset"]])
def test_a_subset_of_kinds_writes_only_those_and_a_recipe_that_resolves(tmp_path, kinds, capsys):
    from zoo.core import discovery
    from zoo.core.recipe import load

    package = tmp_path / "pkg"
    assert main(["new-plugin", "zoo-subset", "--kinds", ",".join(kinds), "--out", str(package)]) == 0
    modules = sorted(p.stem for p in (package / "src" / "zoo_subset").glob("*.py") if p.stem != "__init__")
    assert modules == sorted(KINDS[k][0] for k in kinds)
    # the example recipe resolves once the modules are imported (here as plugin files, without installing)
    files = [str(package / "src" / "zoo_subset" / f"{m}.py") for m in modules]
    try:
        discovery.load_local(files)
        recipe = load(package / "recipes" / "example.yaml")
    finally:  # leave the registries as the other tests expect them
        for record in discovery.records():
            if record.origin.file and record.origin.file in files:
                for registry in REGISTRIES.values():
                    registry.drop(record.label)
    names = {origin["name"] for origin in recipe.provenance.values()}
    assert {f"subset_{KINDS[k][2]}" for k in kinds} <= names
