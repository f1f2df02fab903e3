"""Reading the command line the way every command does: positional arguments, plugins, numbers."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from zoo.core.errors import ZooError, brief


def split_recipe(args: list[str]) -> tuple[str | None, list[str]]:
    """The first argument without '=' is the recipe; the rest are key=value overrides."""
    recipe, overrides = None, []
    for arg in args:
        if recipe is None and "=" not in arg and not overrides:
            recipe = arg
        else:
            overrides.append(arg)
    return recipe, overrides


def add_plugin_argument(
    parser,
    help_text: str = "import this plugin (a module or .py file) before anything else; a plugin a run folder's "
    "recipe or a checkpoint names is imported only when named here (reading a run folder never runs its code)",
) -> None:
    """``--plugin MODULE_OR_FILE`` (repeatable), the same on every command that resolves components;
    zoo.cli.main imports what it names before the command runs."""
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE", help=help_text)


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser telling a mistake the way zoo tells the rest: a ZooError, which zoo.cli.main
    prints as one line with exit status 2 (argparse would print the whole usage and exit itself)."""

    def error(self, message: str):
        raise ZooError(f"{message} (see {self.prog} --help)")


# Upper bounds of the command line's counts, far above any use and far below hours of work or terabytes
MAX_STEPS = 100_000  # sanity and lr-find steps, sanity examples
MAX_DEPTH, MAX_WIDTH, MAX_BATCH = 1_000, 65_536, 1_000_000  # init-explorer's net and input
MAX_GRID = 256  # images in zoo augment's picture
MAX_CLASSES = 1_000_000  # zoo show --stats --classes


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high``. The upper bound keeps a slip of the keyboard
    (an extra digit or three) from running for hours or asking for terabytes."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {brief(text)}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    return parse


# what a recipe's seed may be, so that a seed on the command line means the same
seed_number = whole_number(0, 2**32 - 1)


def positive_number(text: str) -> float:
    """An argparse type: a finite number above 0 (a learning rate)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {brief(text)}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value
