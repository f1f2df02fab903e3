"""Named, self-describing component registries that plugins fill.

A registry maps names to factories (functions or classes). Each entry describes itself from
the code: its name, the first line of its docstring, and its typed signature with defaults.
Parameters named in the registry's ``context`` are supplied by the caller that builds the
component (a normalizer gets ``num_features`` from the model that asks for it); every other
parameter is the user's to set in a recipe.

A *spec* is what a recipe writes: a bare name (``gelu``) or a mapping with a ``name`` key and
parameters (``{name: leaky_relu, negative_slope: 0.1}``). Parameters are validated with
pydantic against the factory's signature, so a typo or a wrong type fails before anything runs.
"""

from __future__ import annotations

import contextvars
import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Annotated, Any, Literal, Union

import pydantic

from zoo.core.errors import RegistryError, ZooError, brief, did_you_mean

Spec = Union[str, Mapping[str, Any]]

REGISTRIES: dict[str, Registry] = {}

# The plugin being imported right now; set by zoo.core.discovery so that entries know where they came from.
current_source: contextvars.ContextVar[str | None] = contextvars.ContextVar("zoo_plugin_source", default=None)

# Run before every lookup, so a registry is complete when first read. zoo.core.catalog installs plugin
# discovery here: the registry itself knows nothing of plugins, which import it.
before_lookup: list[Callable[[], None]] = []


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
    """One registered component: what it is called, what it does, what it takes, who registered it."""

    registry: str
    name: str
    obj: Callable[..., Any]
    source: str
    context: tuple[str, ...] = ()
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.obj) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @cached_property
    def _signature(self) -> inspect.Signature:
        return inspect.signature(self.obj, eval_str=True)

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
                annotation = Any if p.annotation is inspect.Parameter.empty else p.annotation
                default = ... if p.default is inspect.Parameter.empty else p.default
                fields[p.name] = (annotation, default)
            config = pydantic.ConfigDict(
                extra="allow" if self.accepts_extra else "forbid", arbitrary_types_allowed=True
            )
            self._cache["model"] = pydantic.create_model(
                f"{self.registry}.{self.name}", __config__=config, **fields
            )
        return self._cache["model"]


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
    """A named family of interchangeable components (activations, models, ...)."""

    def __init__(self, name: str, *, context: tuple[str, ...] = (), doc: str = "") -> None:
        self.name = name
        self.context = context
        self.doc = doc
        self._entries: dict[str, Entry] = {}
        REGISTRIES[name] = self

    def __repr__(self) -> str:
        return f"Registry({self.name!r}, {len(self._entries)} entries)"

    # --- registering -------------------------------------------------------------------------
    def register(self, obj: Callable[..., Any] | str | None = None, *, name: str | None = None):
        """Register a factory, as ``@reg.register``, ``@reg.register("name")`` or ``reg.register(f, name=...)``.

        The name defaults to the object's ``__name__``. Registering a name that another plugin
        already holds raises a RegistryError naming both.
        """
        if isinstance(obj, str):
            name, obj = obj, None
        if obj is None:
            return lambda target: self.register(target, name=name)
        key = name or obj.__name__
        source = current_source.get() or getattr(obj, "__module__", "?")
        old = self._entries.get(key)
        if old is not None and not _same_definition(old.obj, obj):
            raise RegistryError(
                f"{self.name} '{key}' is registered twice: by {old.source} and by {source}; "
                "rename one of them or uninstall one plugin"
            )
        self._entries[key] = Entry(self.name, key, obj, source, self.context)
        return obj

    def attribute(self, module: str, source: str) -> None:
        """Credit ``source`` with entries that ``module`` registered when it was imported directly, not as a plugin."""
        for key, entry in self._entries.items():
            if entry.source == module and getattr(entry.obj, "__module__", None) == module:
                self._entries[key] = replace(entry, source=source)

    # --- looking up --------------------------------------------------------------------------
    def _loaded(self) -> dict[str, Entry]:
        for hook in before_lookup:
            hook()
        return self._entries

    def get(self, name: str, where: str | None = None) -> Entry:
        entries = self._loaded()
        if name not in entries:
            prefix = f"{where}: " if where else ""
            raise RegistryError(
                f"{prefix}unknown {self.name} '{name}'{did_you_mean(name, entries)}; "
                f"known {self.name}: {', '.join(sorted(entries)) or '(none)'}"
            )
        return entries[name]

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return name in self._loaded()

    def __iter__(self) -> Iterator[Entry]:
        entries = self._loaded()
        return iter([entries[k] for k in sorted(entries)])

    def __len__(self) -> int:
        return len(self._loaded())

    def names(self) -> list[str]:
        return sorted(self._loaded())

    # --- validating and building -------------------------------------------------------------
    def _check(self, spec: Spec, where: str) -> tuple[Entry, pydantic.BaseModel]:
        name, params = split_spec(spec, where)
        entry = self.get(name, where)
        for key in params:
            if key in self.context:
                raise RegistryError(f"{where}.{key}: set by the caller of {self.name} '{name}', not by the recipe")
        try:
            values = entry.param_model().model_validate(params)
        except pydantic.ValidationError as exc:
            raise RegistryError(_explain(exc, entry, where)) from None
        return entry, values

    def validate(self, spec: Spec, where: str | None = None) -> dict[str, Any]:
        """The spec as a mapping with every default filled in, nested specs included."""
        where = where or self.name
        entry, values = self._check(spec, where)
        out: dict[str, Any] = {"name": entry.name, **values.model_dump(mode="json")}
        for p in entry.params:
            nested = _nested_registry(p.annotation)
            if nested and out.get(p.name) is not None:
                out[p.name] = REGISTRIES[nested].validate(out[p.name], f"{where}.{p.name}")
        return out

    def build(self, spec: Spec, where: str | None = None, **context: Any) -> Any:
        """Validate ``spec`` and call the factory with its parameters plus the caller's context."""
        where = where or self.name
        entry, values = self._check(spec, where)
        kwargs = {k: getattr(values, k) for k in type(values).model_fields}
        kwargs.update(values.model_extra or {})
        try:
            return entry.obj(**context, **kwargs)
        except ZooError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a factory raises, the recipe key says where
            raise RegistryError(f"{where}: building {self.name} '{entry.name}' failed: {type(exc).__name__}: {exc}") from exc


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
