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


def add_plugin_option(parser, what: str = "first") -> None:
    """``--plugin``, repeatable: a plugin the user names, and so trusts (see :func:`load_plugins_passed`)."""
    parser.add_argument(
        "--plugin", action="append", default=[], metavar="MODULE_OR_FILE",
        help=f"import this plugin {what}; a plugin a run folder's recipe or a checkpoint names is imported only "
        "when named here (reading a run folder never runs its code)",
    )


def load_plugins_passed(ns) -> None:
    """Import the ``--plugin`` modules and files, before any recipe is read: its components (or a run folder's)
    may come from them."""
    from zoo.core import discovery

    discovery.load_local(ns.plugin, kind="--plugin")
