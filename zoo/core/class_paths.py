"""Objects a recipe names by class path, in LightningCLI's form: ``{class_path: pkg.mod.Class, init_args: {...}}``.

A recipe may come from a run folder someone handed over, and zoo never runs code a run folder names unless
the user passed it (see zoo.core.discovery): importing a module runs its code. So a class path may import
only modules of the packages in :data:`TRUSTED_PACKAGES`, which zoo runs anyway, or name a module that is
imported already (a plugin the recipe lists under ``plugins:``, or one passed with ``--plugin``); anything
else is refused, saying to list its module as a plugin.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any

from zoo.core.errors import RecipeError, brief, did_you_mean

TRUSTED_PACKAGES = ("lightning", "pytorch_lightning", "torch")
ENTRY_KEYS = ("class_path", "init_args")


def _trusted(module: str) -> bool:
    return module.split(".")[0] in TRUSTED_PACKAGES or module in sys.modules


def resolve(class_path: str, where: str, short_names_from: str) -> type:
    """The class ``class_path`` names; a bare name is looked up in the module ``short_names_from``."""
    module_name, _, name = class_path.rpartition(".")
    if not module_name:
        module_name = short_names_from
    if not name or not module_name:
        raise RecipeError(f"{where}: class_path {brief(class_path)} is not a dotted class path")
    if not _trusted(module_name):
        raise RecipeError(
            f"{where}: class_path {class_path}: zoo imports for a recipe only modules of "
            f"{', '.join(TRUSTED_PACKAGES)} or plugins it loaded; to use {module_name}, list it under plugins: "
            f"(or pass --plugin {module_name})"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RecipeError(f"{where}: class_path {class_path}: no module {module_name} ({exc})") from None
    found = getattr(module, name, None)
    if not isinstance(found, type):
        public = [n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_")]
        raise RecipeError(f"{where}: class_path {class_path}: {module_name} has no class {name}{did_you_mean(name, public)}")
    return found


def construct(entry: Any, where: str, kind: type, short_names_from: str) -> Any:
    """An instance of ``kind`` built from a recipe entry; a RecipeError naming
    ``where`` when the class is unknown, not a ``kind``, or refuses its init_args."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("class_path"), str):
        raise RecipeError(f"{where}: expected {{class_path: ..., init_args: {{...}}}}, got {brief(entry)}")
    unknown = [k for k in entry if k not in ENTRY_KEYS]
    if unknown:
        raise RecipeError(f"{where}: unknown key {unknown[0]!r}{did_you_mean(str(unknown[0]), ENTRY_KEYS)}")
    init_args = entry.get("init_args") or {}
    if not isinstance(init_args, Mapping):
        raise RecipeError(f"{where}.init_args: expected a mapping of arguments, got {brief(init_args)}")
    cls = resolve(entry["class_path"], where, short_names_from)
    if not issubclass(cls, kind):
        raise RecipeError(f"{where}: {cls.__module__}.{cls.__qualname__} is not a {kind.__module__}.{kind.__qualname__}")
    try:
        return cls(**init_args)
    except Exception as exc:  # noqa: BLE001 - an unknown argument, a value the class refuses: the recipe's mistake
        raise RecipeError(f"{where}: {cls.__name__}({_arguments(init_args)}): {type(exc).__name__}: {exc}") from None


def _arguments(init_args: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={brief(v)}" for k, v in init_args.items())
