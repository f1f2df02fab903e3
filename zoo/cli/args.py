"""Reading the command line's positional arguments the way every recipe command does."""

from __future__ import annotations


def split_recipe(args: list[str]) -> tuple[str | None, list[str]]:
    """The first argument without '=' is the recipe; the rest are key=value overrides."""
    recipe, overrides = None, []
    for arg in args:
        if recipe is None and "=" not in arg and not overrides:
            recipe = arg
        else:
            overrides.append(arg)
    return recipe, overrides
