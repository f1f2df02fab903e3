"""The house rules of zoo's layout: no import cycles, and imports only run downwards between layers.

Every ``import`` statement in zoo/ and plugins/ counts, those inside functions too (a late import is
still a dependency); only imports under ``if TYPE_CHECKING:`` are left out, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What each layer may import (besides itself). Lower layers never import higher ones.
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "monitoring": {"core", "data"},
    "training": {"core", "data", "monitoring"},
    "tools": {"core", "data", "monitoring", "training"},
    "reporting": {"core", "data", "monitoring", "training"},
    # taking trained models out of zoo (zoo export, zoo.load)
    "export": {"core", "data", "training"},
    "cli": {"api", "core", "data", "monitoring", "training", "tools", "reporting", "testing", "export"},
    # `import zoo`: the registries, zoo.train (which runs training) and zoo.load
    "api": {"core", "training", "export"},
    # components see the component-facing API only: never training, tools, reporting or the CLI
    "plugins": {"api", "core", "data", "monitoring"},
    # the conformance kit for plugin authors: it builds and trains components, and checkpoints them as zoo does
    "testing": {"api", "core", "data", "monitoring", "training"},
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "plugins":
        parts = ["zoo", *parts]  # plugins/ installs as zoo.plugins
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if module == "zoo":
        return "api"
    if parts[1] == "__main__":
        return "cli"
    return parts[1]


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The zoo modules ``path`` imports (``from pkg import mod`` names the module, not the package)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    files = [p for d in ("zoo", "plugins") for p in (ROOT / d).rglob("*.py")]
    modules = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, modules) for p in files}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_cycle_finder_finds_a_cycle_and_nothing_else():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_late_imports_and_skips_type_checking_ones():
    graph = import_graph()
    assert "zoo.training.run" in graph["zoo"]  # zoo.train imports it inside the function
    assert "zoo.training.fit" not in graph["zoo"]  # only under TYPE_CHECKING
    assert "zoo.core.discovery" in graph["zoo.core.catalog"]  # `from zoo.core import discovery`


def test_no_import_cycles_inside_zoo():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("kind", sorted(ALLOWED))
def test_imports_run_downwards_only(kind):
    wrong = [
        f"{src} imports {dst}"
        for src, targets in sorted(import_graph().items())
        if layer(src) == kind
        for dst in sorted(targets)
        if layer(dst) != kind and layer(dst) not in ALLOWED[kind]
    ]
    assert wrong == []


def test_every_module_belongs_to_a_known_layer():
    assert {layer(m) for m in import_graph()} <= set(ALLOWED)


def test_each_subpackage_says_what_lives_there_and_what_it_may_import():
    for package in sorted((ROOT / "zoo").iterdir()):
        if package.is_dir() and (package / "__init__.py").exists():
            doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
            assert doc and "import" in doc.lower(), f"{package.name}/__init__.py needs a docstring naming its imports"
