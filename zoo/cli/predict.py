"""``zoo predict RUN``: a trained model's classes, as CSV, for a data split, a tensor file or image files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zoo.cli.args import MAX_CLASSES, whole_number
from zoo.core.errors import ZooError

DEFAULT_TOP_K = 5


def cmd_predict(ns: argparse.Namespace) -> int:
    from zoo.cli.main import _need_model
    from zoo.core.io import output_file
    from zoo.data.image_files import IMAGE_EXTENSIONS, image_files, is_image_name
    from zoo.training.evaluation import load_model

    _need_model(ns)
    # --input takes every word after it, data.key=value overrides that follow it too
    moved = [a for a in ns.input if a.startswith("data.") and "=" in a and not Path(a).exists()]
    ns.input = [a for a in ns.input if a not in moved]
    ns.overrides = [*ns.overrides, *moved]
    out = output_file(ns.out, "CSV file", "predictions.csv") if ns.out else None
    # a file without an image's extension is a file of inputs (.pt, .npy), as --input has always taken
    tensors = [p for p in ns.input if not is_image_name(p) and not Path(p).is_dir()]
    if tensors and len(ns.input) > 1:
        raise ZooError(
            f"--input {tensors[0]}: not an image file by its extension "
            f"({', '.join(sorted(IMAGE_EXTENSIONS))}); a file of raw inputs (.pt, .npy) comes alone"
        )
    images = bool(ns.input) and not tensors
    if ns.top_k is not None and not images:
        raise ZooError(
            "--top-k: only for image files and folders (--input); other predictions give one class each"
        )
    if images:
        files = image_files(ns.input)  # a mistyped path stops here, before the model is loaded
        model = load_model(ns.run, ns.plugin)
        return _predict_images(model, ns, files, out)
    model = load_model(ns.run, ns.plugin)
    return _predict_tensors(model, ns, Path(tensors[0]) if tensors else None, out)


def _predict_tensors(model, ns: argparse.Namespace, tensor_file: Path | None, out: Path | None) -> int:
    """One row per input of a tensor file or a data split: its class and score (and label)."""
    from zoo.cli.main import _data_spec, _note_split
    from zoo.training.evaluation import check_fits, data_of, load_inputs, predictions, split_predictions

    labels = None
    if tensor_file is not None:
        x = load_inputs(tensor_file, model.input_shape)
        pred, score, score_name = predictions(model, x, ns.run)  # a vote ensemble's score is its vote share
    else:
        dm = data_of(_data_spec(model, ns.overrides), ns.split)
        check_fits(model, dm, ns.run)
        _note_split(getattr(dm, "split_notes", {}).get(ns.split))
        # batch by batch: a streamed split is never whole in memory
        pred, score, score_name, labels = split_predictions(model, dm, ns.split, ns.run)
    rows = [["index", "prediction", score_name] + (["label"] if labels is not None else [])]
    for i in range(len(pred)):
        row = [i, int(pred[i]), f"{float(score[i]):.4f}"]
        rows.append(row + ([int(labels[i])] if labels is not None else []))
    _write(rows, out)
    return 0


def _predict_images(model, ns: argparse.Namespace, files: list[Path], out: Path | None) -> int:
    """One row per readable image: its path, then its first classes by name with their scores. Unreadable
    files are named on stderr and left out; any makes the exit code 1, after the others' rows are written."""
    from zoo.cli.main import _data_spec
    from zoo.data.datamodule import usable_cores
    from zoo.training.evaluation import class_names
    from zoo.export.image_predictions import image_reader, predict_files

    data = _data_spec(model, ns.overrides)
    read = image_reader(data, model.input_shape)
    try:
        names = class_names(data)
    except ZooError as exc:  # the training data is elsewhere now, say: the classes keep their numbers
        names = [str(i) for i in range(model.num_classes)]
        print(f"zoo: note: classes named by number: the run's data set gives no names here ({exc})",
              file=sys.stderr)
    k = min(ns.top_k or DEFAULT_TOP_K, model.num_classes)
    threads = max(1, min(8, usable_cores()))  # torchvision's decoders let go of the GIL
    rows, failed = [], 0
    for result in predict_files(model, files, k, read, threads, str(ns.run)):
        if result.error is not None:
            failed += 1
            print(f"zoo: skipped: {result.error}", file=sys.stderr)  # the message names the file
            continue
        if not rows:
            score = "vote_share" if _votes(model) else "prob"
            rows.append(["path"] + [f"{c}_{i}" for i in range(1, k + 1) for c in ("class", score)])
        ranked = [cell for c, s in zip(result.classes, result.scores) for cell in (names[c], f"{s:.6f}")]
        rows.append([str(result.path), *ranked])
    if not rows:
        print(f"zoo: none of the {len(files)} files could be read as an image; nothing written",
              file=sys.stderr)
        return 1
    _write(rows, out)
    if failed:
        print(f"zoo: {failed} of {len(files)} files could not be read (named above) and have no row",
              file=sys.stderr)
        return 1
    return 0


def _votes(model) -> bool:
    return not getattr(model, "gives_probabilities", True)


def _write(rows: list[list], out: Path | None) -> None:
    import csv
    import io

    if out is None:
        csv.writer(sys.stdout).writerows(rows)
        return
    from zoo.core.io import atomic_write_text

    text = io.StringIO()
    csv.writer(text).writerows(rows)
    try:
        atomic_write_text(out, text.getvalue())
    except OSError as exc:
        raise ZooError(f"--out {out}: cannot write: {exc.strerror or exc}") from None
    print(f"wrote {len(rows) - 1} predictions to {out}", file=sys.stderr)


def add_parser(sub) -> None:
    from zoo.cli.main import _model_command

    pr = _model_command(sub, "predict", "write class predictions of a trained model or ensemble as CSV")
    pr.add_argument(
        "--input", nargs="+", default=[], metavar="PATH",
        help="image files and folders of them (searched at any depth), or one .pt or .npy file of raw inputs "
        "(N, *input_shape), instead of a data split",
    )
    pr.add_argument("--out", help="CSV file to write (default: standard output)")
    pr.add_argument(
        "--top-k", type=whole_number(1, MAX_CLASSES), metavar="K",
        help=f"for image files: the K likeliest classes of each, with their scores "
        f"(default: {DEFAULT_TOP_K}, at most the model's classes)",
    )
    pr.set_defaults(func=cmd_predict)
