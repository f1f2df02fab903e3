"""The recipe reference in docs/ is generated from the code and must match it."""

import re
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
    for key in ("`regularization.label_smoothing`", "`ensemble.snapshot`", "`trainer.max_epochs`", "### activations",
                "`trainer.callbacks`", "`logger.tensorboard.enabled`", "`logger.mlflow.tracking_uri`", "`init_from`",
                "`finetune.freeze`"):
        assert key in text


def test_the_reference_lists_every_key_a_sweep_file_takes():
    from zoo.tools.sweep import reference_section
    from zoo.tools.sweep_spec import ALLOWED

    section = "\n".join(reference_section())
    for key in ALLOWED - {"method"}:  # method: the older name of sampler, mentioned beside it
        assert re.search(rf"(^|[\s(]){key}:", section, re.M), key
    assert "(method is its older name)" in section
