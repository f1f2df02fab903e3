"""The text users read speaks of the project only: what was measured on which machine, never who worked
when, and never the tracker's issue numbers (which mean nothing outside it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
USER_TEXT = sorted(
    [ROOT / "README.md", ROOT / "benchmarks" / "RESULTS.md", ROOT / "benchmarks" / "results.yaml"]
    + list((ROOT / "docs").glob("*.md"))
    + list((ROOT / "recipes").rglob("*.yaml"))
)
# "issue 16", "the performance issue", "#12"; "in the sessions so far", "this stop"; a Python session is fine.
FORBIDDEN = [
    (re.compile(r"\bissues?\b", re.I), "names a tracker issue"),
    (re.compile(r"(?<!Python )\bsessions?\b", re.I), "says who worked when"),
    (re.compile(r"(?<![\w`])#\d+\b"), "cites an issue number"),
    (re.compile(r"\bthis (stop|task)\b", re.I), "says who worked when"),
]


@pytest.mark.parametrize("path", USER_TEXT, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_text_names_no_issue_or_session(path: Path) -> None:
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for pattern, why in FORBIDDEN:
            if pattern.search(line):
                found.append(f"{path.name}:{number}: {why}: {line.strip()[:120]}")
    assert not found, "\n".join(found)


def test_the_scan_catches_what_it_is_for() -> None:
    samples = ["no GPU in the sessions so far", "tracked by the performance issue", "as in issue 16", "see #12"]
    for sample in samples:
        assert any(pattern.search(sample) for pattern, _ in FORBIDDEN), sample
    assert not any(p.search("a plugin already loaded in a Python session") for p, _ in FORBIDDEN)
