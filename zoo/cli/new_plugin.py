"""``zoo new-plugin NAME``: write a plugin package whose example components pass zoo's conformance kit."""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
from pathlib import Path

from zoo.core.errors import ZooError

DEFAULT_KINDS = "activation,normalizer,initializer,augmentation,optimizer,schedule,model,monitor,dataset"


def _names(name: str) -> tuple[str, str]:
    """(import name, component prefix) for a distribution name: zoo-extras -> (zoo_extras, extras)."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*([-_.][A-Za-z0-9]+)*", name):
        raise ZooError(f"new-plugin: {name!r} is not a package name (letters, digits, '-', '_', '.')")
    module = re.sub(r"[-_.]+", "_", name).lower()
    taken = _importable_as(module)
    if taken:
        raise ZooError(
            f"new-plugin: {name!r} would be imported as '{module}', which is already {taken}: the two would "
            "shadow each other; choose another name"
        )
    prefix = module.removeprefix("zoo_") or module
    return module, prefix


def _importable_as(module: str) -> str | None:
    """What ``module`` already names where Python looks for imports (zoo, the standard library, an
    installed package, a folder on the path), or None when the name is free."""
    import importlib.util
    import sys

    if module == "zoo":
        return "zoo itself"
    if module in sys.stdlib_module_names or module in sys.builtin_module_names:
        return "a module of Python's standard library"
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    return f"an importable module ({spec.origin or ', '.join(spec.submodule_search_locations or [])})"


def _recipe(kinds: list[str], prefix: str) -> str:
    """A recipe that trains with the package's components where it has them, zoo's own elsewhere."""
    has = set(kinds)
    model = f"{prefix}_small_cnn" if "model" in has else "mlp"
    lines = [f"  name: {model}"]
    if "activation" in has:
        lines.append(f"  activation: {prefix}_squareplus")
    if "normalizer" in has:
        lines.append(f"  norm: {prefix}_rms")
    if "initializer" in has:
        lines.append(f"  init: {prefix}_truncated_he")
    out = ["model:", *lines]
    out.append(f"data: {{name: {prefix}_blobs}}" if "dataset" in has else "data: {name: digits}")
    out.append(f"optimizer: {{name: {prefix}_signsgd, lr: 0.003}}" if "optimizer" in has else "optimizer: adamw")
    out.append(f"schedule: {{name: {prefix}_inverse_sqrt}}" if "schedule" in has else "schedule: cosine")
    if "augmentation" in has:
        out.append(f"augment: [{prefix}_invert]")
    if "monitor" in has:
        out.append(f"monitors: [{{name: {prefix}_grad_norm, every_n_steps: 5}}]")
    out.append("trainer: {max_epochs: 5}")
    return "\n".join(out) + "\n"


def write_package(name: str, kinds: list[str], folder: Path) -> list[Path]:
    """Write the package for ``name`` into ``folder`` (which must not exist or be empty); the files written."""
    import zoo
    from zoo.cli import scaffold

    module, prefix = _names(name)
    unknown = [k for k in kinds if k not in scaffold.KINDS]
    if unknown or not kinds:
        raise ZooError(f"new-plugin: --kinds takes {', '.join(scaffold.KINDS)}; got {', '.join(unknown) or 'none'}")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ZooError(f"new-plugin: {folder} already exists and is not empty; choose another --out or name")
    files: dict[str, str] = {}
    entry_points, rows = [], ["| kind | component | module |", "|---|---|---|"]
    for kind in kinds:
        file, registry, component, template = scaffold.KINDS[kind]
        files[f"src/{module}/{file}.py"] = scaffold.Template(template).substitute(name=name, prefix=prefix)
        entry_points.append(f'{prefix}_{file} = "{module}.{file}"')
        rows.append(f"| {registry} | `{prefix}_{component}` | `{module}.{file}` |")
    components = ", ".join(f"{prefix}_{scaffold.KINDS[k][2]}" for k in kinds)
    files[f"src/{module}/__init__.py"] = f'"""{name}: zoo components ({components}); registered through entry points."""\n'
    files["pyproject.toml"] = scaffold.PYPROJECT.substitute(
        name=name, components=components, zoo_version=zoo.__version__, entry_points="\n".join(entry_points)
    )
    files["tests/test_components.py"] = scaffold.TEST.substitute(name=name)
    files["recipes/example.yaml"] = f"# zoo train recipes/example.yaml -- {name}'s components in a run\n" + _recipe(
        kinds, prefix
    )
    files["README.md"] = scaffold.README.substitute(
        name=name, prefix=prefix, version="0.1.0", table="\n".join(rows)
    )
    _write_whole(folder, files)
    return [folder / rel for rel in files]


def _write_whole(folder: Path, files: dict[str, str]) -> None:
    """Write ``files`` (relative path: text) as ``folder``, whole or not at all: into a temporary folder
    beside it, renamed into place at the end. A failure leaves nothing, the folders made for it included."""
    made = next((p for p in reversed([folder, *folder.parents]) if not p.exists()), None)
    tmp = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.tmp")
    try:
        for rel, text in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        os.replace(tmp, folder)  # onto nothing or an empty folder
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if made is not None and made != folder:
            shutil.rmtree(made, ignore_errors=True)
        raise ZooError(f"new-plugin: {folder}: cannot write there: {exc.strerror or exc}") from None


def cmd_new_plugin(ns: argparse.Namespace) -> int:
    kinds = [k.strip() for k in ns.kinds.split(",") if k.strip()]
    folder = Path(ns.out) if ns.out else Path(ns.name)
    written = write_package(ns.name, kinds, folder)
    print(f"wrote {len(written)} files to {folder}/:")
    for path in written:
        print(f"  {path.relative_to(folder)}")
    print(f"\nnext:\n  cd {folder}\n  pip install -e .\n  pytest\n  zoo check-plugin {ns.name}\n"
          "  zoo train recipes/example.yaml")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "new-plugin",
        help="write a new plugin package: entry points, one example component per kind, tests using zoo.testing",
        description="Write a plugin package NAME: a pyproject.toml declaring the zoo.plugins entry points, "
        "one working example component per kind (each passes zoo's conformance kit), a README, an example "
        "recipe, and tests that run zoo.testing over the package. `pip install -e .` in it, then `pytest`.",
    )
    p.add_argument("name", metavar="NAME", help="the package's name, e.g. zoo-extras (import name zoo_extras)")
    p.add_argument(
        "--kinds", default=DEFAULT_KINDS, help=f"which example components to write (default: {DEFAULT_KINDS})"
    )
    p.add_argument("--out", help="the folder to write (default: ./NAME)")
    p.set_defaults(func=cmd_new_plugin)
