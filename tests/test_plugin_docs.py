"""docs/plugins.md stays true: its examples run and pass the conformance kit, it covers every registry
and the context each one hands its factories, its gain table matches the code, and the README points to it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import zoo
from zoo.core.registry import REGISTRIES

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / "docs" / "plugins.md").read_text()
# ```python blocks run; ```py blocks are shown only (they need an installed package)
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC, flags=re.S)


def test_the_examples_register_components_that_pass_the_kit(tmp_path):
    assert len(EXAMPLES) >= 10
    module = tmp_path / "plugins_md_examples.py"
    module.write_text("\n\n".join(EXAMPLES))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "zoo", "check-plugin", str(module), "--json"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    registered = {r["component"] for r in results}
    assert registered == {
        "activations:squareplus", "normalizers:rms", "initializers:scaled_he", "augmentations:invert",
        "optimizers:heavy_ball", "schedules:half_life", "models:tiny_cnn", "monitors:epoch_counter",
        "datasets:stripes",
    }
    assert {r["status"] for r in results} <= {"pass", "n/a"}


@pytest.mark.parametrize("registry", sorted(REGISTRIES))
def test_every_registry_has_a_section_naming_its_context(registry):
    section = re.search(rf"^### {registry}\n(.*?)(?=^##)", DOC, flags=re.S | re.M)
    assert section, f"docs/plugins.md has no '### {registry}' section"
    text = section.group(1)
    assert "**Receives**" in text and "**Returns**" in text and "**Checkpointed**" in text
    for name in REGISTRIES[registry].context:
        assert f"`{name}`" in text, f"the {registry} section does not say factories receive {name}"


def test_the_gain_table_matches_what_the_activations_declare():
    rows = {}
    for line in DOC.splitlines():
        match = re.match(r"\| (\w+)[^|]*\| (?:[^|=]*= )?([0-9.]+)", line)
        if match:
            rows[match.group(1)] = float(match.group(2))
    for name in ("relu", "elu", "gelu", "silu", "identity", "tanh", "sigmoid"):
        declared = zoo.activations.build(name).gain
        assert rows[name] == pytest.approx(declared, abs=5e-4), name


def test_the_readme_points_plugin_authors_to_the_contracts_and_the_kit():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Writing a plugin"):]
    section = section[: section.index("\n## ", 1)]
    for needle in ("docs/plugins.md", "zoo.testing", "zoo check-plugin", "zoo new-plugin", "zoo plugins"):
        assert needle in section, needle
