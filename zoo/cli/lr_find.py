"""``zoo lr-find``: the learning-rate range test on a recipe."""

from __future__ import annotations

import argparse

from zoo.core.io import json_text

from zoo.cli.args import MAX_STEPS, add_plugin_argument, positive_number, whole_number


def cmd_lr_find(ns: argparse.Namespace) -> int:
    from zoo.cli.args import split_recipe
    from zoo.core.errors import ZooError
    from zoo.core.io import figure_format
    from zoo.core.recipe import find
    from zoo.tools.lr_find import lr_find, lr_recipe_path, plot, write_recipe
    recipe, overrides = split_recipe(ns.args)
    if ns.write and lr_recipe_path(find(recipe)).exists() and not ns.overwrite:  # said before the sweep runs
        raise ZooError(f"{lr_recipe_path(find(recipe))} exists already; pass --overwrite to replace it")
    figure_format(ns.out)  # said before the sweep runs
    result = lr_find(recipe, overrides, min_lr=ns.min, max_lr=ns.max, steps=ns.steps)
    png = plot(result, ns.out)
    end = "stopped early: smoothed loss passed 4x its best" if result.stopped_early else "ran to --max"
    print(f"swept {result.optimizer} lr {result.lrs[0] / result.scale:.2g} .. {result.lrs[-1] / result.scale:.2g} "
          f"in {result.steps_run} steps ({end})")
    print(f"suggested optimizer.lr: {result.suggestion:.3g}  (steepest descent of the smoothed loss)")
    print(f"lr at the minimum / 10: {result.min_lr_div10:.3g}")
    print(f"plot: {png}")
    written = None
    if ns.write:
        written = write_recipe(find(recipe), result.suggestion, overrides, overwrite=ns.overwrite)
        print(f"wrote {written} (train it with: zoo train {written})")
    if ns.json:
        print(json_text({"suggestion": result.suggestion, "min_lr_div10": result.min_lr_div10,
                          "steps_run": result.steps_run, "stopped_early": result.stopped_early,
                          "optimizer": result.optimizer, "plot": str(png),
                          "written": str(written) if written else None}))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "lr-find",
        help="learning-rate range test: sweep the lr exponentially over a few steps and suggest one",
        description="Train the recipe's model with its own optimizer for --steps steps while the learning "
        "rate grows exponentially from --min to --max (plain loop, no Trainer; augmentation off, penalties "
        "and dropout on). The loss is smoothed (EMA with bias correction) and the sweep stops once the "
        "smoothed loss exceeds 4x its best. Suggests the lr at the steepest negative slope of the smoothed "
        "loss (also prints the lr at the minimum / 10) and plots loss vs lr (log x). --write writes "
        "<name>.lr.yaml next to the recipe (base: the recipe, the overrides, optimizer.lr: the suggestion); "
        "the recipe itself is not edited. Under DDP settings it still runs on one process.",
    )
    p.add_argument("args", nargs="*", metavar="RECIPE [key=value ...]", help="recipe file or name, then overrides")
    p.add_argument("--min", type=positive_number, default=1e-6, help="first learning rate (default: 1e-6)")
    p.add_argument("--max", type=positive_number, default=1.0, help="last learning rate (default: 1)")
    p.add_argument("--steps", type=whole_number(3, MAX_STEPS), default=100, help="training steps of the sweep (default: 100)")
    p.add_argument("--out", default="lr.png", help="PNG plot to write (default: lr.png)")
    p.add_argument("--write", action="store_true", help="write <name>.lr.yaml with the suggested optimizer.lr")
    p.add_argument("--overwrite", action="store_true", help="let --write replace an existing <name>.lr.yaml")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    add_plugin_argument(p)
    p.set_defaults(func=cmd_lr_find)
