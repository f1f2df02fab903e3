"""Every shipped recipe resolves, and opens with the command that runs it and what it reached."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.core.recipe import load

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_resolves_and_says_how_to_run_it(path):
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert header and path.read_text().startswith("#"), "a recipe starts with a comment saying what it is"
    assert any(f"zoo train {path.stem}" in line for line in header), "the header gives the command"
    resolved = load(path)
    assert resolved.model["name"] and resolved.data["name"]


def test_the_recipes_the_issues_name_are_shipped():
    names = {p.stem for p in RECIPES}
    assert {"mlp-digits", "resnet-digits", "mlp-digits-ensemble", "mlp-digits-snapshot",
            "resnet20-cifar10", "resnet18-cifar10", "cifar10-fast"} <= names
