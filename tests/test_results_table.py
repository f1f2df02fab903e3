"""benchmarks/results.yaml covers every shipped recipe, the README's table is generated from it, and the
script that measures a recipe writes a whole entry."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "benchmarks" / "measure_recipe.py")


def script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def test_readme_table_is_generated_from_the_results_file():
    out = script("readme", "--check")
    assert out.returncode == 0, out.stderr
    results = yaml.safe_load((ROOT / "benchmarks" / "results.yaml").read_text())
    assert set(results) == {p.stem for p in (ROOT / "recipes").glob("*.yaml")}
    readme = (ROOT / "README.md").read_text()
    for name, entry in results.items():
        assert f"`{name}`" in readme
        assert entry["stats"]["parameters"] > 0 and entry["stats"]["flops_per_image"] > 0
        if "measured" in entry:
            assert f"{100 * entry['measured']['test_acc']['mean']:.1f}%" in readme


def test_check_fails_when_the_readme_table_is_edited_by_hand(tmp_path):
    readme = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text()
    results = yaml.safe_load((ROOT / "benchmarks" / "results.yaml").read_text())
    measured = next(e for e in results.values() if "measured" in e)
    figure = f"{100 * measured['measured']['test_acc']['mean']:.1f}%"
    readme.write_text(text.replace(figure, "99.9%", 1))
    out = script("readme", "--check", "--readme", str(readme))
    assert out.returncode == 1 and "out of date" in out.stderr
    assert script("readme", "--readme", str(readme)).returncode == 0  # regenerated ...
    assert readme.read_text() == text  # ... it is the README again


def test_measuring_a_recipe_writes_its_entry_and_table_row(tmp_path):
    results = tmp_path / "results.yaml"
    shutil.copy(ROOT / "benchmarks" / "results.yaml", results)
    out = script("--results", str(results), "run", "mlp-digits", "trainer.max_epochs=1", "model.width=32",
                 "--seeds", "0", "1", "--note", "a test")
    assert out.returncode == 0, out.stderr
    entry = yaml.safe_load(results.read_text())["mlp-digits"]
    m = entry["measured"]
    assert m["seeds"] == [0, 1] and m["overrides"] == ["trainer.max_epochs=1", "model.width=32"]
    accs = m["test_acc"]["per_seed"]
    assert len(accs) == 2 and m["test_acc"]["mean"] == round(sum(accs) / 2, 4)
    assert m["test_acc"]["min"] == min(accs) and m["test_acc"]["max"] == max(accs)
    assert len(m["wall_s"]["per_seed"]) == 2 and all(w > t > 0 for w, t in zip(m["wall_s"]["per_seed"],
                                                                                 m["train_s"]["per_seed"]))
    assert set(m["hardware"]) == {"cpu", "cores", "memory", "torch_threads", "gpu"}
    assert set(m["versions"]) >= {"zoo", "torch", "lightning", "commit"} and m["note"] == "a test"
    assert entry["stats"]["parameters"] == 64 * 32 + 32 * 32 + 32 * 10 + 10 + 2 * 2 * 32  # width 32, measured as run
    assert entry["summary"].startswith("MLP 2x512")  # the hand-written summary is kept
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    out = script("--results", str(results), "readme", "--readme", str(readme))
    assert out.returncode == 0, out.stderr
    row = next(line for line in readme.read_text().splitlines() if line.startswith("| `mlp-digits`"))
    assert f"{100 * m['test_acc']['mean']:.1f}% ± {100 * m['test_acc']['std']:.1f}" in row and "seeds 0, 1" in row


def test_a_data_path_outside_the_repository_is_not_recorded():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from measure_recipe import portable
    finally:
        sys.path.pop(0)
    inside = f"data.root={ROOT / 'data' / 'cifar10-jpg'}"
    assert portable(["data.root=/elsewhere/cifar", inside, "seed=1"]) == ["data.root=<path to the data>", inside, "seed=1"]
