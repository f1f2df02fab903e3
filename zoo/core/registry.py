"""Named, self-describing component registries that plugins fill.

A registry maps names to factories (functions or classes). Each entry describes itself from
the code: its name, the first line of its docstring, and its typed signature with defaults.
Parameters named in the registry's ``context`` are supplied by the caller that builds the
component (a normalizer gets ``num_features`` from the model that asks for it); every other
parameter is the user's to set in a recipe.

A *spec* is what a recipe writes: a bare name (``gelu``) or a mapping with a ``name`` key and
parameters (``{name: leaky_relu, negative_slope: 0.1}``). Parameters are validated with
pydantic against the factory's signature, so a typo or a wrong type fails before anything runs.

Every entry knows its :class:`Origin`: the plugin that registered it and the package and version behind
that plugin. A name held by several plugins is a warning when the second registers it; a bare name then
means what a run recorded it to be (its ``provenance``), else zoo's own component, and is an error only
when neither settles it (two third-party packages); ``package:name`` picks one. A factory whose
signature breaks its registry's contract (zoo.core.contracts) is kept, listed with its problem, and
refused when a recipe asks for it; what a factory returns is checked when it is built.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import re
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import pydantic

from zoo.core.errors import (
    ComponentError,
    PluginWarning,
    RegistryError,
    UnknownComponent,
    ZooError,
    brief,
    did_you_mean,
    raised_at,
)
from zoo.core.strict_types import strict_scalars

Spec = Union[str, Mapping[str, Any]]

REGISTRIES: dict[str, Registry] = {}


@dataclass(frozen=True)
class Origin:
    """Where a component came from: the plugin that registered it, and the package and version behind it.

    ``plugin`` is how zoo names the plugin in messages ("zoo-extras (entry point 'cnn' = zoo_extras.cnn)",
    "/home/me/acts.py (recipe plugin)"); ``package`` the installed distribution, ``file`` a plugin file,
    whose ``version`` is a digest of its contents.
    """

    plugin: str
    package: str | None = None
    version: str | None = None
    file: str | None = None
    module: str | None = None

    @property
    def qualifier(self) -> str:
        """What goes before the colon of a qualified name: the package (``zoo-extras:small_cnn``), a plugin
        file's name (``my_acts.py:squareplus``: never the same as a package's), or the module."""
        if self.package:
            return self.package
        if self.file:
            return Path(self.file).name
        return self.plugin.split(" ")[0]

    def describe(self) -> str:
        """'zoo-extras 0.1.0', 'plugin file /x/acts.py', or the plugin's label."""
        if self.package:
            return f"{self.package} {self.version}" if self.version else self.package
        if self.file:
            return f"plugin file {self.file}"
        return self.plugin

    def record(self) -> dict[str, Any]:
        """What the resolved recipe and checkpoints keep of it (zoo.core.recipe's ``provenance``)."""
        out: dict[str, Any] = {}
        if self.package:
            out.update(package=self.package, version=self.version)
        elif self.file:
            out.update(file=self.file, sha256=self.version)
        else:
            out["module"] = self.module or self.plugin
        return out


def normalize_package(name: str) -> str:
    """A distribution name as packaging compares them (PEP 503): Zoo_Extras, zoo.extras -> zoo-extras."""
    return re.sub(r"[-_.]+", "-", name).lower()


# The plugin being imported right now; set by zoo.core.discovery so that entries know where they came from.
current_source: contextvars.ContextVar[Origin | str | None] = contextvars.ContextVar("zoo_plugin_source", default=None)

# Run before every lookup, so a registry is complete when first read. zoo.core.catalog installs plugin
# discovery here: the registry itself knows nothing of plugins, which import it.
before_lookup: list[Callable[[], None]] = []

# The provenance a recipe recorded ({recipe key: {"name", "package" | "file" | "module", ...}}), set while
# that recipe is resolved: a bare name several plugins hold means the recorded one.
recorded_provenance: contextvars.ContextVar[Mapping[str, Mapping[str, Any]]] = contextvars.ContextVar(
    "zoo_recorded_provenance", default={}
)


# While a plugin is imported, zoo's warnings about what it registers are held here and given after the
# import (zoo.core.discovery): by then the warnings filters the plugin may have set are put back, so a
# plugin cannot silence the warning that it took a name zoo ships.
held_warnings: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("zoo_held_warnings", default=None)


def _warn(message: str) -> None:
    held = held_warnings.get()
    if held is None:
        warnings.warn(message, PluginWarning, stacklevel=3)
    else:
        held.append(message)


@contextlib.contextmanager
def using_provenance(recorded: Mapping[str, Mapping[str, Any]] | None):
    """Resolve bare names the way ``recorded`` (a recipe's ``provenance``) says, inside the block."""
    token = recorded_provenance.set(dict(recorded or {}))
    try:
        yield
    finally:
        recorded_provenance.reset(token)


ZOO_PACKAGE = "zoo"


def _is_zoo(origin: Origin) -> bool:
    return origin.package is not None and normalize_package(origin.package) == ZOO_PACKAGE


def _recorded_as(origin: Origin, record: Mapping[str, Any]) -> bool:
    """True when ``origin`` is the plugin a provenance ``record`` names."""
    if record.get("package"):
        wanted = normalize_package(record["package"])
        return origin.package is not None and normalize_package(origin.package) == wanted
    if record.get("file"):
        return origin.file == record["file"]
    return origin.package is None and origin.file is None and origin.module == record.get("module")


# Asked when a name is unknown, for a note to add (a plugin that failed to load or was disabled):
# (registry name, component name, package or None) -> text or "". zoo.core.discovery installs one.
unknown_hints: list[Callable[[str, str, str | None], str]] = []


def _origin(source: Origin | str | None, obj: Any) -> Origin:
    if isinstance(source, Origin):
        return source
    module = getattr(obj, "__module__", None)
    return Origin(plugin=source or module or "?", module=module)


@dataclass(frozen=True)
class Component:
    """Marks a parameter as a nested spec of another registry, e.g. ``Annotated[Spec, Component("activations")]``.

    Nested specs are validated (and their defaults filled in) together with the outer one.
    """

    registry: str


# A seed as NumPy and Python's generators take it (torch takes more; NumPy refuses what lies outside)
Seed = Annotated[int, pydantic.Field(ge=0, le=2**32 - 1)]

ActivationSpec = Annotated[Spec, Component("activations")]
NormSpec = Annotated[Spec, Component("normalizers")]
InitSpec = Annotated[Spec, Component("initializers")]


def _nested_registry(annotation: Any) -> str | None:
    """The registry a parameter's annotation points at, looking through Optional/Union."""
    if typing.get_origin(annotation) is Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, Component):
                return meta.registry
    for arg in typing.get_args(annotation):
        found = _nested_registry(arg)
        if found:
            return found
    return None


@dataclass(frozen=True)
class Entry:
    """One registered component: what it is called, what it does, what it takes, who registered it.

    ``problems``: how its factory breaks the registry's contract (found at registration); such an entry
    is listed but refused when used. ``examples``: parameter sets the conformance kit (zoo.testing)
    builds it with, for a factory whose defaults alone do not build (a required parameter).
    """

    registry: str
    name: str
    obj: Callable[..., Any]
    origin: Origin
    context: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    examples: tuple[Mapping[str, Any], ...] = ({},)
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def source(self) -> str:
        """The plugin that registered it, as messages and ``zoo list`` name it."""
        return self.origin.plugin

    @property
    def qualified_name(self) -> str:
        return f"{self.origin.qualifier}:{self.name}"

    @property
    def title(self) -> str:
        """"activation 'squareplus' (zoo-extras 0.1.0)": the component and where it came from, for messages."""
        return f"{singular(self.registry)} '{self.name}' ({self.origin.describe()})"

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.obj) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @cached_property
    def _signature(self) -> inspect.Signature:
        try:
            return inspect.signature(self.obj, eval_str=True)
        except Exception:  # noqa: BLE001 - an unresolvable annotation: a problem found at registration
            return inspect.Signature()

    @property
    def params(self) -> list[inspect.Parameter]:
        """The parameters a recipe may set (not the caller-supplied context)."""
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return [p for p in self._signature.parameters.values() if p.kind in kinds and p.name not in self.context]

    @property
    def accepts_extra(self) -> bool:
        return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in self._signature.parameters.values())

    def signature_text(self) -> str:
        parts = []
        for p in self.params:
            text = p.name
            if p.annotation is not inspect.Parameter.empty:
                text += f": {_type_name(p.annotation)}"
            if p.default is not inspect.Parameter.empty:
                text += f" = {p.default!r}"
            parts.append(text)
        if self.accepts_extra:
            parts.append("**kwargs")
        return f"{self.name}({', '.join(parts)})"

    def param_model(self) -> type[pydantic.BaseModel]:
        if "model" not in self._cache:
            fields: dict[str, Any] = {}
            for p in self.params:
                annotation = Any if p.annotation is inspect.Parameter.empty else strict_scalars(p.annotation)
                default = ... if p.default is inspect.Parameter.empty else p.default
                fields[p.name] = (annotation, default)
            config = pydantic.ConfigDict(
                extra="allow" if self.accepts_extra else "forbid", arbitrary_types_allowed=True
            )
            self._cache["model"] = pydantic.create_model(
                f"{self.registry}.{self.name}", __config__=config, **fields
            )
        return self._cache["model"]


def singular(registry: str) -> str:
    """'activations' -> 'activation', for messages about one component."""
    return registry[:-1] if registry.endswith("s") else registry


_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _type_name(annotation: Any) -> str:
    """A short readable type: ``float > 0``, ``'none' | 'tanh'``, ``activation spec``."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        ref = _nested_registry(annotation)
        if ref:
            return f"{ref.removesuffix('s')} spec"
        bounds = []
        for meta in annotation.__metadata__:
            for constraint in getattr(meta, "metadata", [meta]):
                for attr, symbol in _BOUNDS.items():
                    if getattr(constraint, attr, None) is not None:
                        bounds.append(f"{symbol} {getattr(constraint, attr)}")
        base = _type_name(typing.get_args(annotation)[0])
        return " ".join([base, *bounds]) if len(bounds) < 2 else f"{base} ({', '.join(bounds)})"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type) and origin is None:
        return "None" if annotation is type(None) else annotation.__name__
    if origin in (list, tuple, set, dict):
        args = ", ".join("..." if a is Ellipsis else _type_name(a) for a in typing.get_args(annotation))
        return f"{origin.__name__}[{args}]" if args else origin.__name__
    return str(annotation).replace("typing.", "")


def split_spec(spec: Any, where: str) -> tuple[str, dict[str, Any]]:
    """A spec's name and its parameters, whichever of the two forms it has."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop("name", None)
        if not isinstance(name, str):
            raise RegistryError(f"{where}: a component mapping needs a 'name' key, got {brief(dict(spec))}")
        return name, params
    raise RegistryError(
        f"{where}: expected a component name or a mapping with 'name', got {type(spec).__name__} {brief(spec)}"
    )


class Registry:
    """A named family of interchangeable components (activations, models, ...).

    ``contract``: checks what a factory returns when it is built (zoo.core.contracts), giving a
    description of what is wrong or None.
    """

    def __init__(
        self,
        name: str,
        *,
        context: tuple[str, ...] = (),
        doc: str = "",
        contract: Callable[[Any], str | None] | None = None,
    ) -> None:
        self.name = name
        self.context = context
        self.doc = doc
        self.contract = contract
        # each name, with every entry registered under it: more than one is a clash between plugins
        self._entries: dict[str, list[Entry]] = {}
        REGISTRIES[name] = self

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {len(self._entries)} entries)"

    # --- registering -------------------------------------------------------------------------
    def register(
        self,
        obj: Callable[..., Any] | str | None = None,
        *,
        name: str | None = None,
        examples: Sequence[Mapping[str, Any]] | None = None,
    ):
        """Register a factory, as ``@reg.register``, ``@reg.register("name")`` or ``reg.register(f, name=...)``.

        The name defaults to the object's ``__name__``. ``examples``: parameter sets the conformance kit
        builds the component with (default: its defaults alone). A name that another package already
        holds is kept for both, and usable only qualified (``package:name``); the same plugin
        registering one name for two different factories is an error.
        """
        if isinstance(obj, str):
            name, obj = obj, None
        if obj is None:
            return lambda target: self.register(target, name=name, examples=examples)
        key = name or getattr(obj, "__name__", None)
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][\w.\-]*", key):
            raise RegistryError(
                f"{self.name}: cannot register {obj!r} under the name {key!r}: a name is letters, digits, "
                "'_', '-' and '.', starting with a letter or '_' (':' is kept for package:name)"
            )
        from zoo.core.contracts import signature_problems

        origin = _origin(current_source.get(), obj)
        entry = Entry(
            self.name, key, obj, origin, self.context,
            problems=tuple(signature_problems(self, obj)),
            examples=tuple(dict(e) for e in examples) if examples else ({},),
        )
        if not (inspect.getdoc(obj) or "").strip():
            _warn(f"{entry.title} has no docstring: `zoo list` and the docs show its first line")
        held = self._entries.setdefault(key, [])
        for i, old in enumerate(held):
            if _same_definition(old.obj, obj):
                held[i] = entry  # the same definition again (a re-import)
                return obj
            if old.origin.qualifier == origin.qualifier:
                raise RegistryError(
                    f"{self.name} '{key}' is registered twice by {origin.plugin}, for two different factories"
                )
        held.append(entry)
        if len(held) > 1:
            _warn(_clash_note(self.name, held))
        return obj

    def attribute(self, module: str, origin: Origin) -> None:
        """Credit ``origin`` with entries that ``module`` registered when it was imported directly, not as a plugin."""
        for held in self._entries.values():
            for i, entry in enumerate(held):
                if entry.origin.plugin == module and getattr(entry.obj, "__module__", None) == module:
                    held[i] = replace(entry, origin=origin)

    def entries_from(self, plugin: str) -> list[Entry]:
        """The entries the plugin labelled ``plugin`` registered."""
        return [e for held in self._entries.values() for e in held if e.origin.plugin == plugin]

    def drop(self, plugin: str) -> None:
        """Forget what the plugin labelled ``plugin`` registered (it failed halfway through its import)."""
        for key in list(self._entries):
            self._entries[key] = [e for e in self._entries[key] if e.origin.plugin != plugin]
            if not self._entries[key]:
                del self._entries[key]

    # --- looking up --------------------------------------------------------------------------
    def _loaded(self) -> dict[str, list[Entry]]:
        for hook in before_lookup:
            hook()
        return self._entries

    def _hints(self, name: str, package: str | None) -> str:
        return "".join(hint(self.name, name, package) for hint in unknown_hints)

    def get(self, name: str, where: str | None = None) -> Entry:
        """The entry called ``name`` (or ``package:name``); a RegistryError that says why there is none."""
        entries = self._loaded()
        prefix = f"{where}: " if where else ""
        package, _, bare = name.rpartition(":")
        held = entries.get(bare, [])
        if package:
            wanted = normalize_package(package)
            chosen = [e for e in held if normalize_package(e.origin.qualifier) == wanted]
            # a plugin file also answers to its name without .py, where no package or module has that name
            chosen = chosen or [
                e for e in held if e.origin.file and normalize_package(Path(e.origin.file).stem) == wanted
            ]
            if chosen:
                return chosen[0]
            others = f"; '{bare}' comes from {', '.join(e.origin.qualifier for e in held)}" if held else ""
            raise UnknownComponent(
                f"{prefix}unknown {self.name} '{name}': no plugin {package} registered it{others}"
                f"{self._hints(bare, package)}",
                self.name, bare,
            )
        chosen = _bare_choice(held, recorded_provenance.get().get(where or "")) if len(held) > 1 else None
        if chosen is not None:
            return chosen
        if len(held) > 1:
            choices = " or ".join(e.qualified_name for e in held)
            raise RegistryError(
                f"{prefix}{self.name} '{name}' is registered by {len(held)} plugins "
                f"({'; '.join(e.source for e in held)}); write {choices} to pick one, "
                f"or disable one plugin (ZOO_DISABLE_PLUGINS=...)"
            )
        if not held:
            raise UnknownComponent(
                f"{prefix}unknown {self.name} '{name}'{did_you_mean(name, entries)}; "
                f"known {self.name}: {', '.join(self.names()) or '(none)'}{self._hints(name, None)}",
                self.name, name,
            )
        return held[0]

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        try:
            return isinstance(name, str) and self.get(name) is not None
        except RegistryError:
            return False

    def __iter__(self) -> Iterator[Entry]:
        """Every entry, by name; the entries of a name two plugins hold come one after the other."""
        entries = self._loaded()
        return iter([e for key in sorted(entries) for e in entries[key]])

    def __len__(self) -> int:
        return sum(len(held) for held in self._loaded().values())

    def names(self) -> list[str]:
        """The names a recipe can use: plain names, and ``package:name`` where a plain name does not reach."""
        entries = self._loaded()
        return sorted(self.display_name(e) for held in entries.values() for e in held)

    def display_name(self, entry: Entry) -> str:
        """The name to show for ``entry``: bare when a recipe writing it gets this entry, else qualified."""
        held = self._entries.get(entry.name, ())
        if len(held) <= 1 or _bare_choice(held, None) is entry:
            return entry.name
        return entry.qualified_name

    # --- validating and building -------------------------------------------------------------
    def _check(self, spec: Spec, where: str) -> tuple[Entry, pydantic.BaseModel]:
        name, params = split_spec(spec, where)
        entry = self.get(name, where)
        if entry.problems:
            raise ComponentError(f"{where}: {entry.title} cannot be used: {'; '.join(entry.problems)}")
        for key in params:
            if key in self.context:
                raise RegistryError(f"{where}.{key}: set by the caller of {self.name} '{name}', not by the recipe")
        try:
            values = entry.param_model().model_validate(params)
        except pydantic.ValidationError as exc:
            raise RegistryError(_explain(exc, entry, where)) from None
        return entry, values

    def validate(
        self,
        spec: Spec,
        where: str | None = None,
        provenance: dict[str, Any] | None = None,
        skippable: Callable[[str], bool] | None = None,
    ) -> dict[str, Any]:
        """The spec as a mapping with every default filled in, nested specs included.

        ``provenance``: when given, filled with where each component (this one and nested ones) came
        from, by recipe key: ``{"model": {"name": "mlp", "package": "zoo", "version": "0.1.0"}, ...}``.
        A bare name that several plugins hold, resolved by the recorded provenance (``using_provenance``)
        to another plugin's entry than the bare name alone reaches, is written qualified, so building it
        later gets the same component. ``skippable(key)``: True for keys a command does not need (an
        evaluation needs no optimizer); a component there whose plugin is gone is kept as written.
        """
        where = where or self.name
        try:
            entry, values = self._check(spec, where)
        except UnknownComponent:
            if skippable is None or not skippable(where):
                raise
            return {"name": spec} if isinstance(spec, str) else dict(spec)
        name, _ = split_spec(spec, where)
        held = self._entries.get(entry.name, ())
        if ":" not in name and len(held) > 1 and _bare_choice(held, None) is not entry:
            name = entry.qualified_name
        out: dict[str, Any] = {"name": name, **values.model_dump(mode="json")}
        if provenance is not None:
            provenance[where] = {"name": entry.name, "registry": self.name, **entry.origin.record()}
        for p in entry.params:
            nested = _nested_registry(p.annotation)
            if nested and out.get(p.name) is not None:
                inner = f"{where}.{p.name}"
                out[p.name] = REGISTRIES[nested].validate(out[p.name], inner, provenance, skippable)
        return out

    def build(self, spec: Spec, where: str | None = None, **context: Any) -> Any:
        """Validate ``spec``, call the factory with its parameters plus the caller's context, check the result.

        A factory that raises (other than a ZooError, which already speaks to the user) or returns what
        its registry's contract refuses is reported as a ComponentError naming the component, its
        package and ``where``.
        """
        where = where or self.name
        try:
            entry, values = self._check(spec, where)
        except ZooError as exc:
            exc.zoo_where = where
            raise
        kwargs = {k: getattr(values, k) for k in type(values).model_fields}
        kwargs.update(values.model_extra or {})
        try:
            with _process_kept(entry, where):
                result = entry.obj(**context, **kwargs)
        except ZooError as exc:
            if getattr(exc, "zoo_where", None):  # a component it builds in turn, which named its own key
                raise
            raise _located(type(exc), where, f"{where}: {entry.title}: {exc}") from exc
        except Exception as exc:
            message = f"{where}: {entry.title} failed to build: {type(exc).__name__}: {exc}{raised_at(exc)}"
            raise _located(ComponentError, where, message) from exc
        problem = self.contract(result) if self.contract is not None else None
        if problem:
            raise _located(ComponentError, where, f"{where}: {entry.title} {problem}")
        return result




@contextlib.contextmanager
def _process_kept(entry: Entry, where: str) -> Iterator[None]:
    """Build ``entry`` with torch's process-wide settings and the process's working folder, warnings
    filters and logging put back afterwards, with a warning naming it: a component that changes them
    would change every later run of the process (see zoo.core.process_state for what a build may change)."""
    from zoo.core import process_state, torch_state

    torch_before, process_before = torch_state.snapshot(randomness=False), process_state.snapshot(build=True)
    try:
        yield
    finally:
        changed, stuck = torch_state.restore(torch_before)
        changed = [f"torch's {change}" for change in changed] + process_state.restore(process_before)
        if changed:
            kept = f"; torch would not let {', '.join(stuck)} go back" if stuck else ""
            warnings.warn(
                f"{where}: {entry.title} changed {'; '.join(changed)} when built, which would change every "
                f"later run of the process; zoo put it back{kept}",
                PluginWarning,
                stacklevel=4,
            )


def _located(kind: type[ZooError], where: str, message: str) -> ZooError:
    """A ``kind`` of error (a plugin's own ZooError subclass where it takes a message) saying ``message``,
    marked as naming its recipe key, so that the components around it pass it on unchanged."""
    try:
        located = kind(message)
    except TypeError:  # a subclass whose constructor wants more than a message
        located = RegistryError(message)
    located.zoo_where = where
    return located


def _bare_choice(held: Sequence[Entry], record: Mapping[str, Any] | None) -> Entry | None:
    """The entry a bare name means among several: the one ``record`` (recorded provenance) names, else
    zoo's own (a plugin never takes over zoo's names), else None: ambiguous."""
    if record and record.get("name") == held[0].name:
        recorded = [e for e in held if _recorded_as(e.origin, record)]
        if len(recorded) == 1:
            return recorded[0]
    own = [e for e in held if _is_zoo(e.origin)]
    return own[0] if len(own) == 1 else None


def _clash_note(registry: str, held: Sequence[Entry]) -> str:
    """The load-time warning for a name several plugins registered: what a bare name now means."""
    name = held[0].name
    own = _bare_choice(held, None)
    if own is not None:
        others = " and ".join(e.origin.plugin for e in held if e is not own)
        return (
            f"{others} registers {registry} '{name}', a name zoo ships: recipes that write '{name}' keep "
            f"zoo's; write {' or '.join(e.qualified_name for e in held if e is not own)} for the plugin's"
        )
    return (
        f"{registry} '{name}' is registered by {len(held)} plugins "
        f"({'; '.join(e.origin.plugin for e in held)}); a recipe writing '{name}' must pick one: "
        f"{' or '.join(e.qualified_name for e in held)}"
    )


def _same_definition(a: Any, b: Any) -> bool:
    """True when ``b`` is ``a`` re-imported (the same module and qualified name)."""
    if a is b:
        return True
    return (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == (
        getattr(b, "__module__", None),
        getattr(b, "__qualname__", None),
    )


def _explain(exc: pydantic.ValidationError, entry: Entry, where: str) -> str:
    accepted = entry.signature_text().split("(", 1)[1][:-1] or "(none)"
    what = f"{entry.registry} '{entry.name}'"
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            close = did_you_mean(key, [p.name for p in entry.params])
            lines.append(f"{where}: unknown parameter '{key}' for {what}{close}; accepted: {accepted}")
        elif err["type"] == "missing":
            lines.append(f"{where}: {what} needs parameter '{key}'; accepted: {accepted}")
        else:
            lines.append(f"{where}.{key}: {err['msg'].removeprefix('Value error, ')}, got {brief(err['input'])} ({what})")
    return "\n".join(lines)
