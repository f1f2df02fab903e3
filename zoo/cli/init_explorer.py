"""``zoo init-explorer``: the classic experiment of activation statistics through a deep net at initialization."""

from __future__ import annotations

import argparse

from zoo.core.io import json_text

from zoo.cli.args import MAX_BATCH, MAX_DEPTH, MAX_WIDTH, add_plugin_argument, seed_number, whole_number


def cmd_init_explorer(ns: argparse.Namespace) -> int:
    from zoo.core.io import figure_format
    from zoo.tools.init_explorer import describe, explore, format_table, parse_spec, plot

    if ns.out:
        figure_format(ns.out)  # said before the work, not after it
    result = explore(
        parse_spec(ns.activation, "activation"),
        parse_spec(ns.init, "init"),
        init_activation=None if ns.init_activation is None else parse_spec(ns.init_activation, "init-activation"),
        depth=ns.depth,
        width=ns.width,
        batch=ns.batch,
        seed=ns.seed,
    )
    print(describe(result))
    print(format_table(result))
    if ns.out:
        print(f"wrote {plot(result, ns.out)}")
    if ns.json:
        print(json_text(result.to_dict()))
    return 0


EPILOG = """\
Components are given as in a recipe: a registered name, or a YAML mapping with its parameters
(quote it for the shell). The four classic outcomes:
  zoo init-explorer --activation tanh --init normal                       # std 0.01: activations collapse to 0
  zoo init-explorer --activation tanh --init "{name: normal, std: 1.0}"   # saturated at -1/+1
  zoo init-explorer --activation tanh --init xavier_normal                # std stays steady
  zoo init-explorer --activation relu --init kaiming_normal               # std stays steady
  zoo init-explorer --activation relu --init xavier_normal --init-activation identity
                                                                          # variance halves each layer
zoo's xavier and kaiming scale by the gain of the activation they are told about; --init-activation
identity gives the textbook gain-1 versions.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "init-explorer",
        help="show how activations and gradients behave through a deep net under an initializer",
        description="Push unit-Gaussian inputs through DEPTH linear layers of WIDTH units, each followed by\n"
        "the activation, weights from the initializer (biases as it sets them, 0 by default); print the\n"
        "per-layer mean/std of activations and gradients, and write a picture of them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--activation", default="tanh", metavar="SPEC",
                   help="registered activation: a name or a mapping, "
                   "e.g. '{name: leaky_relu, negative_slope: 0.1}' (default: tanh)")
    p.add_argument("--init", default="xavier_normal", metavar="SPEC",
                   help="registered initializer: a name or a mapping, "
                   "e.g. '{name: normal, std: 1.0}' (default: xavier_normal)")
    p.add_argument("--init-activation", metavar="SPEC",
                   help="activation the initializer computes its gain for "
                   "(default: --activation; identity: gain 1)")
    p.add_argument("--depth", type=whole_number(1, MAX_DEPTH), default=10, help="hidden layers (default: 10)")
    p.add_argument("--width", type=whole_number(1, MAX_WIDTH), default=500, help="units per layer (default: 500)")
    p.add_argument("--batch", type=whole_number(2, MAX_BATCH), default=1000, help="input samples (default: 1000)")
    p.add_argument("--seed", type=seed_number, default=0, help="seed of the inputs and the weights (default: 0)")
    p.add_argument("--out", default="init.png", help="PNG to write (default: init.png; empty: none)")
    p.add_argument("--json", action="store_true", help="print the per-layer numbers as JSON on the last line")
    add_plugin_argument(p)
    p.set_defaults(func=cmd_init_explorer)
