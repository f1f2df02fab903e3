"""Errors that mean the user asked for something wrong (exit code 2, no traceback)."""

from __future__ import annotations

import difflib
import inspect
import reprlib
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class ZooError(Exception):
    """A mistake in what the user asked for: a recipe, a component, a flag.

    The CLI prints the message alone and exits with code 2; ``--debug`` shows the traceback.
    """


class RegistryError(ZooError):
    """An unknown component, a bad parameter, or two plugins claiming one name."""


class RecipeError(ZooError):
    """A recipe that cannot be read, merged or validated."""


class PluginError(ZooError):
    """A plugin that could not be imported, or a component whose plugin is missing."""


class UnknownComponent(RegistryError):
    """A name no loaded plugin registered; ``registry`` and ``name`` say which, for a better message upstream."""

    def __init__(self, message: str, registry: str = "", name: str = "") -> None:
        super().__init__(message)
        self.registry, self.name = registry, name


class ComponentError(RegistryError):
    """A component that broke its registry's contract: a factory with the wrong signature, or one that
    raised or returned the wrong thing when built. The message names the component, its package and
    the recipe key."""


class PluginWarning(UserWarning):
    """Something about a plugin the user should know, that stops nothing: a plugin that failed to load
    (commands that do not need it go on), a component without a docstring, a version that changed."""


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """A ' (did you mean: a, b?)' suffix, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.5)
    return f" (did you mean: {', '.join(close)}?)" if close else ""


# Values echoed in messages are cut short: a recipe may hold a huge list or string (a YAML alias bomb
# expanded, say), and a message is one line a person reads.
_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlong = 3, 80, 80, 40
_BRIEF.maxdict = _BRIEF.maxlist = _BRIEF.maxtuple = _BRIEF.maxset = 6


def brief(value: Any) -> str:
    """``repr(value)``, shortened with ``...`` where it would run long (for error messages)."""
    return _BRIEF.repr(value)


def clip(text: str, limit: int = 2000) -> str:
    """A message of at most ``limit`` characters: whatever it quotes, a message stays readable."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"
_STDLIB = Path(inspect.getfile(inspect)).resolve().parent


def raised_at(exc: BaseException) -> str:
    """' (at file:line)': where in a plugin's own code ``exc`` came from, or '' when nowhere.

    That is the innermost frame outside zoo's core, the standard library and the libraries a component
    calls into (torch, ...): a factory that hands nn.Linear a bad size is named at its own line.
    """
    libraries = [Path(__file__).resolve().parent, _STDLIB]
    for name in ("torch", "lightning", "pydantic", "numpy", "torchvision", "timm", "torchmetrics"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__file__", None):
            libraries.append(Path(module.__file__).resolve().parent)
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith("<"):
            continue
        path = Path(frame.filename).resolve()
        if not any(path.is_relative_to(lib) for lib in libraries):
            found = f" (at {frame.filename}:{frame.lineno})"
    return found
