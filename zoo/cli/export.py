"""``zoo export RUN --format F --out DIR``: a finished run as one model file with its preprocessing."""

from __future__ import annotations

import argparse
import sys

from zoo.cli.args import add_plugin_argument
from zoo.core.io import json_text
from zoo.export import FILES



def cmd_export(ns: argparse.Namespace) -> int:
    from zoo.export.run import ExportCheckFailed, export_run

    try:
        result = export_run(ns.run, ns.format, ns.out, tta=ns.tta, overwrite=ns.overwrite, plugins=ns.plugin)
    except ExportCheckFailed as failed:
        print(failed.parity.text(), file=sys.stderr)
        if ns.json:
            summary = {"out": None, "format": ns.format, "tta": ns.tta, **vars(failed.parity)}
            summary["passed"] = False
            print(json_text(summary))
        print(f"zoo: error: {failed}", file=sys.stderr)
        return 1
    print(f"wrote {result.out} ({result.format}{', with test-time augmentation' if result.tta else ''}): "
          f"{result.parameters:,} parameters, {result.flops_per_image:,} FLOPs per image")
    print(result.parity.text())
    if ns.json:
        print(json_text(result.summary()))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a finished run as ONNX, TorchScript, an exported program or safetensors, checked",
        description="Writes the run's model (an ensemble as one graph) with its preprocessing inside: the "
        "run's inputs in (uint8 images, or the data set's floats), class probabilities out, in float32. The "
        "export is read back and compared with zoo's evaluation on up to 1,000 test images; a difference "
        "above 1e-4 in a probability, or a top-1 class that disagrees, is an error (exit 1) and nothing is "
        "written.",
    )
    p.add_argument("run", metavar="RUN_DIR", help="the folder of a finished run")
    p.add_argument("--format", required=True, choices=list(FILES))
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write (must not exist)")
    p.add_argument("--tta", action="store_true", help="put the run's test-time views (flips, shifts) inside")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export folder --out")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    add_plugin_argument(p)
    p.set_defaults(func=cmd_export)
