"""``zoo sanity``: the babysitting checks to run before training a recipe."""

from __future__ import annotations

import argparse

from zoo.core.io import json_text

from zoo.cli.args import MAX_STEPS, add_plugin_argument, positive_number, whole_number


def cmd_sanity(ns: argparse.Namespace) -> int:
    from zoo.cli.args import split_recipe
    from zoo.tools.sanity import format_table, run

    recipe, overrides = split_recipe(ns.args)
    results = run(recipe, overrides, steps=ns.steps, lr=ns.lr, examples=ns.examples)
    print(format_table(results))
    failed = [r.name for r in results if not r.passed]
    summary = f"\n{len(results) - len(failed)}/{len(results)} checks passed"
    print(summary + (f"; failed: {', '.join(failed)}" if failed else ""))
    if ns.json:
        print(json_text({"passed": not failed, "checks": [r.to_dict() for r in results]}))
    return 1 if failed else 0

def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "sanity",
        help="check a recipe before training it: initial loss, regularization, overfitting 20 examples, gradients",
        description="Run the standard pre-training checks on a recipe's model: the initial loss with "
        "regularization off is about ln(C); raising L2 raises it; plain SGD memorizes a few training "
        "examples (100% accuracy); every parameter gets a finite, non-zero gradient. "
        "Exit status 0 when all pass, 1 when any fails.",
    )
    p.add_argument("args", nargs="*", metavar="RECIPE [key=value ...]", help="recipe file or name, then overrides")
    p.add_argument("--steps", type=whole_number(1, MAX_STEPS), default=300, help="step budget of the overfit check (default: 300)")
    p.add_argument("--lr", type=positive_number, default=0.1, help="SGD learning rate of the overfit check (default: 0.1)")
    p.add_argument("--examples", type=whole_number(1, MAX_STEPS), default=20, help="training examples to memorize (default: 20)")
    p.add_argument("--json", action="store_true", help="print a JSON report as the last line")
    add_plugin_argument(p)
    p.set_defaults(func=cmd_sanity)
