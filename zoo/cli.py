"""``zoo`` on the command line. Heavy imports wait inside each command so ``zoo --help`` answers at once."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from zoo.errors import ZooError

EXIT_USAGE = 2


def _split_recipe(args: list[str]) -> tuple[str | None, list[str]]:
    """The first argument without '=' is the recipe; the rest are key=value overrides."""
    recipe, overrides = None, []
    for arg in args:
        if recipe is None and "=" not in arg and not overrides:
            recipe = arg
        else:
            overrides.append(arg)
    return recipe, overrides


def cmd_train(ns: argparse.Namespace) -> int:
    from zoo.training import train

    recipe, overrides = _split_recipe(ns.args)
    result = train(recipe, overrides, run_dir=ns.run_dir, overwrite=ns.overwrite)
    print(f"\nrun:       {result.run_dir}")
    print(f"val acc:   {result.val_acc:.4f}")
    print(f"test acc:  {result.test_acc:.4f}")
    print(f"time:      {result.seconds:.1f} s")
    if ns.json:
        print(result.to_json())
    return 0


def cmd_show(ns: argparse.Namespace) -> int:
    from zoo.recipe import load

    recipe, overrides = _split_recipe(ns.args)
    resolved = load(recipe, overrides)
    if ns.json:
        print(json.dumps(resolved.to_dict()))
    else:
        print(f"# {resolved.source}, resolved")
        print(resolved.to_yaml(), end="")
    return 0


def cmd_list(ns: argparse.Namespace) -> int:
    from zoo.registry import REGISTRIES

    if ns.registry is not None and ns.registry not in REGISTRIES:
        from zoo.errors import did_you_mean

        raise ZooError(
            f"unknown registry '{ns.registry}'{did_you_mean(ns.registry, REGISTRIES)}; "
            f"registries: {', '.join(REGISTRIES)}"
        )
    chosen = [REGISTRIES[ns.registry]] if ns.registry else list(REGISTRIES.values())
    rows = [
        {
            "registry": reg.name,
            "name": e.name,
            "signature": e.signature_text(),
            "summary": e.summary,
            "source": e.source,
        }
        for reg in chosen
        for e in reg
    ]
    if ns.json:
        print(json.dumps(rows))
        return 0
    for reg in chosen:
        print(f"{reg.name}: {reg.doc}")
        for row in (r for r in rows if r["registry"] == reg.name):
            print(f"  {row['signature']}")
            print(f"      {row['summary']}  [{row['source'].split(' ')[0]}]")
        print()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo",
        description="Train MLPs and ResNets from YAML recipes assembled from plugin components.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = sub.add_parser("train", help="train a recipe (default: recipes/mlp-digits.yaml)")
    train.add_argument("args", nargs="*", metavar="RECIPE [key=value ...]", help="recipe file or name, then overrides")
    train.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    train.add_argument("--run-dir", help="write the run here instead of a new folder under runs/")
    train.add_argument("--overwrite", action="store_true", help="replace an existing --run-dir")
    train.set_defaults(func=cmd_train)

    show = sub.add_parser("show", help="print the fully resolved recipe")
    show.add_argument("args", nargs="*", metavar="RECIPE [key=value ...]")
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    show.set_defaults(func=cmd_show)

    lst = sub.add_parser("list", help="list registered components")
    lst.add_argument("registry", nargs="?", help="only this registry (activations, models, ...)")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        return ns.func(ns)
    except ZooError as exc:
        if ns.debug:
            raise
        print(f"zoo: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
