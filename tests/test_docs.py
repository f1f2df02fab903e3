"""The recipe reference in docs/ is generated from the code and must match it."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_recipe_reference_is_up_to_date():
    out = subprocess.run(
        [sys.executable, "-m", "zoo", "docs", "--check", "docs/recipes.md"], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    text = (REPO / "docs" / "recipes.md").read_text()
    for key in ("`regularization.label_smoothing`", "`ensemble.snapshot`", "`trainer.max_epochs`", "### activations"):
        assert key in text
