"""Subcommands that live in their own modules. Each module has ``add_parser(subparsers)``.

They are imported when the parser is built, so they keep torch and Lightning imports inside functions.
"""

MODULES: list[str] = [
    "zoo.commands.sanity",
    "zoo.commands.init_explorer",
    "zoo.commands.lr_find",
    "zoo.commands.sweep",
    "zoo.commands.report",
]
