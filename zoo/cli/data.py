"""``zoo data``: commands on data sets; ``zoo data prepare`` writes an image folder as LitData chunks."""

from __future__ import annotations

import argparse
import sys

from zoo.cli.args import seed_number, whole_number
from zoo.data.image_folder_scan import PARTS

MAX_WORKERS = 1_024


def fraction(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def cmd_prepare(ns: argparse.Namespace) -> int:
    from tqdm import tqdm

    from zoo.data.prepare import prepare

    bars = []  # made at the first report, once the folder is read: its clock starts with the writing

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc="images", unit="img", file=sys.stderr, dynamic_ncols=True))
        bars[0].update(done - bars[0].n)

    try:
        result = prepare(
            ns.source, ns.dest, overwrite=ns.overwrite, workers=ns.workers, skip_bad=ns.skip_bad,
            classes=ns.classes, limit_per_class=ns.limit_per_class, limit_parts=tuple(ns.limit_parts),
            val_fraction=ns.val_fraction, test_fraction=ns.test_fraction, split_seed=ns.split_seed,
            progress=progress,
        )
    finally:
        for bar in bars:
            bar.close()
    counts = ", ".join(f"{part} {n:,}" for part, n in result.splits.items())
    size = result.bytes_written
    written = f"{size / 1e6:,.1f} MB" if size >= 1e6 else f"{size:,} bytes"
    print(f"wrote {result.dest}: {counts} images of {len(result.classes)} classes, {written} "
          f"in {result.seconds:.1f} s")
    if ns.skip_bad:
        print(f"left out {result.skipped} files that are not readable images")
    return 0


def add_parser(subparsers) -> None:
    group = subparsers.add_parser(
        "data", help="prepare data sets (zoo data prepare: an image folder as streamed chunks)"
    )
    commands = group.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    p = commands.add_parser(
        "prepare",
        help="write an image folder as LitData chunks, for data sets larger than memory",
        description="Writes the image folder SOURCE (SOURCE/train/<class>/<image>, with val/ and test/ where "
        "present, or SOURCE/<class>/<image>) to the new folder DEST: the train, val and test splits the "
        "imagefolder data set makes of it with the same settings, each a litdata.optimize folder of items "
        "{image: the file's bytes, unchanged; label; path}, and DEST/zoo-data.json. Train on it with "
        "data.name=streaming data.root=DEST. SOURCE and DEST are local folders; DEST can then be uploaded to "
        "object storage (s3://, gs://, ...) and read from its URL, as LitData allows.",
    )
    p.add_argument("source", metavar="SOURCE", help="the image folder")
    p.add_argument("dest", metavar="DEST", help="the folder to write (must not exist)")
    p.add_argument("--overwrite", action="store_true", help="replace a DEST this command wrote before")
    p.add_argument("--workers", type=whole_number(1, MAX_WORKERS), metavar="N",
                   help="processes reading files (default: the usable CPU cores)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out files that are not readable images, and count them "
                   "(default: stop at the first)")
    p.add_argument("--classes", nargs="+", metavar="CLASS",
                   help="only these class folders, labelled 0, 1, ... in this order")
    p.add_argument("--limit-per-class", type=whole_number(1, 10**9), metavar="N",
                   help="a seeded N images of each class in each folder")
    p.add_argument("--limit-parts", nargs="+", choices=list(PARTS), default=list(PARTS), metavar="PART",
                   help="the folders --limit-per-class applies to (default: all)")
    p.add_argument("--val-fraction", type=fraction, default=0.1, metavar="F",
                   help="share of each class carved from train for val, where there is no val folder "
                   "(default: 0.1)")
    p.add_argument("--test-fraction", type=fraction, default=0.2, metavar="F",
                   help="share of each class carved from train for test, where there is no test folder "
                   "(default: 0.2)")
    p.add_argument("--split-seed", type=seed_number, default=0, metavar="S",
                   help="seed of the carved splits and the --limit-per-class draw (default: 0)")
    p.set_defaults(func=cmd_prepare)

