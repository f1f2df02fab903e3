"""Errors that mean the user asked for something wrong (exit code 2, no traceback)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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
