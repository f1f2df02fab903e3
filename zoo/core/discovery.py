"""Finding plugins: installed ones through the ``zoo.plugins`` entry-point group, local ones named in a recipe.

zoo's own components are a plugin like any other: ``pyproject.toml`` declares them in the same
entry-point group a third-party package uses, so they take the same path in.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from zoo.core.errors import PluginError, ZooError
from zoo.core.registry import REGISTRIES, current_source

GROUP = "zoo.plugins"
_state = {"loaded": False}


def _where_raised(exc: BaseException) -> str:
    """' (at file:line)': the plugin's own line that led to ``exc``, or '' when there is none.

    That is the outermost frame outside this module and importlib: the plugin's statement that failed
    (an ``import`` of something missing, say), however deep inside other code the error was raised.
    A SyntaxError names its file and line itself.
    """
    if isinstance(exc, SyntaxError):
        return ""
    here = Path(__file__).resolve()
    machinery = Path(importlib.__file__).resolve().parent
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith("<"):
            continue
        path = Path(frame.filename).resolve()
        if path != here and not path.is_relative_to(machinery):
            return f" (at {frame.filename}:{frame.lineno})"
    return ""


def _run_import(label: str, load, hint: str = "") -> None:
    token = current_source.set(label)
    try:
        load()
    except ZooError:
        raise  # already says what is wrong (a name clash, say)
    except Exception as exc:
        message = f"plugin {label} failed to import: {type(exc).__name__}: {exc}{_where_raised(exc)}"
        raise PluginError(message + (f"; {hint}" if hint else "")) from exc
    finally:
        current_source.reset(token)


def _package(ep: EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else None


def _entry_point_label(ep: EntryPoint) -> str:
    package = _package(ep)
    where = f"entry point '{ep.name}' = {ep.value}"
    return f"{package} ({where})" if package else f"({where})"


def _entry_point_hint(ep: EntryPoint) -> str:
    package = _package(ep)
    if package is None or package == "zoo":
        return ""  # zoo's own plugins: the message names the missing piece; uninstalling zoo is no advice
    return f"fix or reinstall {package}, or `pip uninstall {package}` so zoo stops loading it"


def load_plugins() -> None:
    """Import every plugin registered under the ``zoo.plugins`` entry-point group, once."""
    if _state["loaded"]:
        return
    _state["loaded"] = True  # before importing, so a plugin that looks something up does not recurse
    # Sorted so that a clash between two plugins is reported the same way on every machine.
    try:
        for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.value, e.name)):
            label = _entry_point_label(ep)
            _run_import(label, ep.load, _entry_point_hint(ep))
            # a plugin module someone imported before discovery ran registered under its bare name
            for registry in REGISTRIES.values():
                registry.attribute(ep.module, label)
    except BaseException:
        _state["loaded"] = False  # the next lookup fails the same way instead of seeing half the plugins
        raise


def load_local(names: list[str], base_dir: Path | None = None) -> None:
    """Import plugins a recipe names: importable module names, or ``.py`` files relative to ``base_dir``."""
    load_plugins()
    for name in names:
        if name.endswith(".py") or "/" in name:
            path = Path(name) if base_dir is None else (base_dir / name)
            path = path.resolve()
            if not path.is_file():
                raise PluginError(f"plugin file {name} not found (looked at {path})")
            module_name = f"zoo_local_plugin_{path.stem}_{abs(hash(str(path))):x}"
            if module_name in sys.modules:
                continue

            def load(path=path, module_name=module_name):
                spec = importlib.util.spec_from_file_location(module_name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[module_name]
                    raise

            _run_import(f"{path} (recipe plugin)", load)
        else:
            _run_import(f"{name} (recipe plugin)", lambda name=name: importlib.import_module(name))
