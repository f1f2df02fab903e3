"""Errors that mean the user asked for something wrong (exit code 2, no traceback)."""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable
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
    """A plugin that could not be imported."""


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
