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


def add_plugin_argument(
    parser,
    help_text: str = "import this plugin (a module or .py file) before anything else; a plugin a run folder's "
    "recipe or a checkpoint names is imported only when named here (reading a run folder never runs its code)",
) -> None:
    """``--plugin MODULE_OR_FILE`` (repeatable), the same on every command that resolves components;
    zoo.cli.main imports what it names before the command runs."""
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE_OR_FILE", help=help_text)
