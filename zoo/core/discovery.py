"""Finding plugins: installed ones through the ``zoo.plugins`` entry-point group, local ones named in a recipe.

zoo's own components are a plugin like any other: ``pyproject.toml`` declares them in the same
entry-point group a third-party package uses, so they take the same path in.

An installed plugin that fails to import (or calls ``sys.exit``) does not stop zoo: it is recorded,
what it had registered is dropped, and a one-line PluginWarning says so; a recipe that asks for a
name nobody registered is told about the failure. ``ZOO_DISABLE_PLUGINS=a,b`` (package or
entry-point names; ``zoo --disable-plugins a,b`` sets it) skips plugins before they are imported.
A plugin a recipe or the command line names is asked for explicitly, so its failure is an error.
Whatever a plugin's import changes of torch's process-wide settings (zoo.core.torch_state) or of the
process's working folder, environment, warnings filters and logging (zoo.core.process_state) is put
back, with a warning naming the plugin.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
import warnings
from dataclasses import dataclass
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, packages_distributions, version
from pathlib import Path

from zoo.core import registry as registry_module
from zoo.core import process_state, torch_state
from zoo.core.errors import PluginError, PluginWarning, ZooError
from zoo.core.io import MAX_TEXT_BYTES, read_bytes
from zoo.core.registry import REGISTRIES, Origin, current_source, normalize_package

GROUP = "zoo.plugins"
DISABLE_ENV = "ZOO_DISABLE_PLUGINS"


@dataclass
class PluginRecord:
    """One plugin zoo found: what it is, and whether it loaded."""

    origin: Origin
    entry_point: str | None  # "name = module" for an installed plugin
    status: str = "loaded"  # loaded | failed | disabled
    error: str | None = None

    @property
    def label(self) -> str:
        return self.origin.plugin

    def components(self) -> list[tuple[str, str]]:
        """(registry, name) of every component this plugin registered."""
        return [(reg.name, e.name) for reg in REGISTRIES.values() for e in reg.entries_from(self.label)]


_state: dict = {"loaded": False, "records": []}


def records() -> list[PluginRecord]:
    """Every installed and local plugin seen so far, loaded, failed or disabled (plugins are loaded first)."""
    load_plugins()
    return list(_state["records"])


def disabled_names() -> set[str]:
    """What ZOO_DISABLE_PLUGINS names, normalized: package names or entry-point names."""
    raw = os.environ.get(DISABLE_ENV, "")
    return {normalize_package(n.strip()) for n in raw.split(",") if n.strip()}


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
        # importlib_metadata (the backport, which some libraries import) adds its finder to sys.meta_path, and
        # the entry points it finds load through its own EntryPoint.load: machinery too
        if path != here and not path.is_relative_to(machinery) and "importlib_metadata" not in path.parts:
            return f" (at {frame.filename}:{frame.lineno})"
    return ""


def _import_failure(label: str, exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"plugin {label} called sys.exit({exc.code!r}) while being imported{_where_raised(exc)}"
    return f"plugin {label} failed to import: {type(exc).__name__}: {exc}{_where_raised(exc)}"


def _run_import(origin: Origin, load) -> None:
    """Import a plugin with ``origin`` credited for what it registers; a failure raises PluginError.

    SystemExit counts as a failure too: a plugin that calls sys.exit must not end zoo (with status 0).
    """
    token = current_source.set(origin)
    held = registry_module.held_warnings.set([])
    before, before_process = torch_state.snapshot(), process_state.snapshot()
    try:
        load()
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except ZooError as exc:
        raise PluginError(f"plugin {origin.plugin} failed to import: {exc}") from exc
    except BaseException as exc:  # noqa: BLE001 - SystemExit included, on purpose
        raise PluginError(_import_failure(origin.plugin, exc)) from exc
    finally:
        current_source.reset(token)
        _put_back_torch(origin, before)
        _put_back_process(origin, before_process)
        messages = registry_module.held_warnings.get()
        registry_module.held_warnings.reset(held)
        for message in messages:
            warnings.warn(message, PluginWarning, stacklevel=3)


def _put_back_torch(origin: Origin, before: dict) -> None:
    """Undo what importing the plugin changed of torch's process-wide settings, and say so naming it."""
    changed, stuck = torch_state.restore(before)
    if not changed:
        return
    kept = f"; torch would not let {', '.join(stuck)} go back" if stuck else ""
    warnings.warn(
        f"plugin {origin.plugin} changed torch's {', '.join(changed)} when imported, which would change "
        f"every run; zoo put {'them' if len(changed) > 1 else 'it'} back{kept} (set such things inside a "
        "component, or in a recipe: trainer.precision, trainer.deterministic)",
        PluginWarning,
        stacklevel=4,
    )


def _put_back_process(origin: Origin, before: dict) -> None:
    """Undo what importing the plugin changed of the process's working folder, environment, warnings and
    logging, and say so naming it."""
    changed = process_state.restore(before)
    if changed:
        warnings.warn(
            f"plugin {origin.plugin} changed the process's {'; '.join(changed)} when imported, which would "
            "change every run; zoo put it back",
            PluginWarning,
            stacklevel=4,
        )


def _entry_point_origin(ep: EntryPoint) -> Origin:
    dist = getattr(ep, "dist", None)
    where = f"entry point '{ep.name}' = {ep.value}"
    if dist is None:
        return Origin(plugin=f"({where})", module=ep.module)
    return Origin(plugin=f"{dist.name} ({where})", package=dist.name, version=dist.version, module=ep.module)


def _fix_hint(origin: Origin) -> str:
    package = origin.package
    if package is None or package == "zoo":
        return ""  # zoo's own plugins: the message names the missing piece; uninstalling zoo is no advice
    return (
        f"; fix or reinstall {package}, `pip uninstall {package}`, or set {DISABLE_ENV}={package} so zoo "
        "stops loading it"
    )


def _names(record: PluginRecord) -> set[str]:
    """What may name a plugin in ZOO_DISABLE_PLUGINS: its package, its entry point, or package:entry point."""
    entry = record.entry_point.split(" = ")[0] if record.entry_point else None
    names = {normalize_package(entry)} if entry else set()
    if record.origin.package:
        names.add(normalize_package(record.origin.package))
        if entry:
            names.add(normalize_package(f"{record.origin.package}:{entry}"))
    return names


def load_plugins() -> None:
    """Import every plugin registered under the ``zoo.plugins`` entry-point group, once.

    A plugin that fails is recorded and warned about, and what it registered before failing is
    dropped; the others load as usual.
    """
    if _state["loaded"]:
        return
    _state["loaded"] = True  # before importing, so a plugin that looks something up does not recurse
    _state["records"] = [r for r in _state["records"] if r.entry_point is None]  # rediscovering (tests)
    disabled = disabled_names()
    # Sorted so that plugins load, and clashes read, the same way on every machine.
    for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.value, e.name)):
        origin = _entry_point_origin(ep)
        record = PluginRecord(origin, f"{ep.name} = {ep.value}")
        _state["records"].append(record)
        if _names(record) & disabled:
            record.status = "disabled"
            continue
        try:
            _run_import(origin, ep.load)
        except PluginError as exc:
            record.status, record.error = "failed", str(exc)
            for reg in REGISTRIES.values():
                reg.drop(origin.plugin)
            warnings.warn(f"{exc}{_fix_hint(origin)}", PluginWarning, stacklevel=2)
            continue
        # a plugin module someone imported before discovery ran registered under its bare name
        for reg in REGISTRIES.values():
            reg.attribute(ep.module, origin)


def disable(names: list[str]) -> None:
    """Skip these plugins (package or entry-point names) from now on, in this process and its children.

    They are added to $ZOO_DISABLE_PLUGINS, which child processes (DDP ranks, ensemble members) inherit;
    if plugins were already loaded, what the named ones registered is dropped.
    """
    current = [n for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()]
    os.environ[DISABLE_ENV] = ",".join(dict.fromkeys([*current, *names]))
    wanted = {normalize_package(n) for n in names}
    for record in _state["records"]:
        if record.status == "loaded" and _names(record) & wanted:
            for reg in REGISTRIES.values():
                reg.drop(record.label)
            record.status = "disabled"


def reset() -> None:
    """Forget which plugins were loaded, so the next lookup discovers them again (for tests)."""
    _state["loaded"] = False
    _state["records"] = []


def _module_origin(name: str, kind: str) -> Origin:
    top = name.split(".")[0]
    dists = packages_distributions().get(top, [])
    if dists:
        try:
            return Origin(plugin=f"{name} ({kind})", package=dists[0], version=version(dists[0]), module=name)
        except PackageNotFoundError:
            pass
    return Origin(plugin=f"{name} ({kind})", module=name)


def file_digest(path: Path) -> str:
    return hashlib.sha256(read_bytes(path, MAX_TEXT_BYTES, "plugin file")).hexdigest()[:16]


def _is_file(name: str) -> bool:
    return name.endswith(".py") or "/" in name


def _file_module(path: Path) -> str:
    """The module name a plugin file is imported under (one per resolved path)."""
    return f"zoo_local_plugin_{path.stem}_{abs(hash(str(path))):x}"


def imported(name: str, base_dir: Path | None = None) -> bool:
    """Whether the plugin ``name`` (a module, or a ``.py`` file relative to ``base_dir``) is imported
    already, so that loading it again runs nothing."""
    if not _is_file(name):
        return name in sys.modules
    path = (Path(name) if base_dir is None else base_dir / name).resolve()
    return _file_module(path) in sys.modules


def load_local(names: list[str], base_dir: Path | None = None, kind: str = "recipe plugin") -> None:
    """Import plugins a recipe (or ``--plugin``) names: module names, or ``.py`` files relative to ``base_dir``."""
    load_plugins()
    for name in names:
        if _is_file(name):
            path = Path(name) if base_dir is None else (base_dir / name)
            path = path.resolve()
            if path.exists() and not path.is_file():
                # importing a named pipe would wait for a writer forever
                raise PluginError(f"plugin file {name} is not a regular file (a pipe, a device or a folder?) ({path})")
            if not path.is_file():
                raise PluginError(f"plugin file {name} not found (looked at {path})")
            module_name = _file_module(path)
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

            # a file has no version: the digest of its contents stands in for one
            origin = Origin(plugin=f"{path} ({kind})", file=str(path), version=file_digest(path), module=module_name)
        else:
            if name in sys.modules:
                continue

            def load(name=name):
                importlib.import_module(name)

            origin = _module_origin(name, kind)
        record = PluginRecord(origin, None)
        _state["records"].append(record)
        try:
            _run_import(origin, load)
        except PluginError as exc:
            record.status, record.error = "failed", str(exc)
            for reg in REGISTRIES.values():
                reg.drop(origin.plugin)
            raise


def loaded_by_name() -> list[str]:
    """The plugin files and modules this process imported by name (a recipe's plugins, --plugin), for the
    processes it starts (ensemble members) to import the same."""
    return [
        r.origin.file or r.origin.module
        for r in _state["records"]
        if r.entry_point is None and r.status == "loaded" and (r.origin.file or r.origin.module)
    ]


def installed_version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def why_missing(package: str | None) -> str:
    """What became of an installed package's plugins: '' if they loaded, else 'failed ...'/'disabled ...'."""
    if package is None:
        return ""
    wanted = normalize_package(package)
    for record in records():
        if record.origin.package and normalize_package(record.origin.package) == wanted:
            if record.status == "failed":
                return f"failed to load ({record.error})"
            if record.status == "disabled":
                return f"is disabled ({DISABLE_ENV})"
    return ""


def _unknown_hint(registry: str, name: str, package: str | None) -> str:
    """A note for an unknown name: the plugins that failed or were disabled, any of which may have it."""
    notes = []
    for record in _state["records"]:
        if record.status == "loaded":
            continue
        if package and not (record.origin.package and normalize_package(record.origin.package) == normalize_package(package)):
            continue
        if record.status == "failed":
            notes.append(f"{record.error}")
        else:
            notes.append(f"plugin {record.label} is disabled ({DISABLE_ENV})")
    if not notes:
        return ""
    return f"; it may come from a plugin that did not load: {'; '.join(notes)}"


if _unknown_hint not in registry_module.unknown_hints:
    registry_module.unknown_hints.append(_unknown_hint)
