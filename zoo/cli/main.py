"""``zoo`` on the command line. Heavy imports wait inside each command so ``zoo --help`` answers at once."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from zoo.cli.args import (
    MAX_CLASSES,
    MAX_GRID,
    OneLineParser,
    add_plugin_argument,
    seed_number,
    split_recipe,
    whole_number,
)
from zoo.core.errors import ZooError, brief, clip
from zoo.core.io import file_error_message, json_text

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # what a shell reports for a process that SIGPIPE ended, as `yes | head -1` does
# Commands with a module of their own, each with ``add_parser(subparsers)``; imported when the parser is
# built, so they keep torch and Lightning imports inside their functions and `zoo --help` answers at once.
COMMAND_MODULES = [
    "zoo.cli.sanity",
    "zoo.cli.init_explorer",
    "zoo.cli.lr_find",
    "zoo.cli.sweep",
    "zoo.cli.report",
    "zoo.cli.plugins",
    "zoo.cli.check_plugin",
    "zoo.cli.new_plugin",
    "zoo.cli.export",
]


def cmd_train(ns: argparse.Namespace) -> int:
    from zoo.training.checkpoints import Interrupted
    from zoo.training.fit import process_rank
    from zoo.training.run import train

    recipe, overrides = split_recipe(ns.args)
    try:
        result = train(recipe, overrides, run_dir=ns.run_dir, overwrite=ns.overwrite, resume=ns.resume)
    except Interrupted as stop:
        if process_rank() == 0:  # every rank of a DDP job stops; rank 0 says so for all of them
            print(_interrupted_message(stop), file=sys.stderr)
            if stop.requeue:
                requeue_job(goes_on=ns.run_dir is not None or ns.resume is not None)
        return stop.exit_code
    if result.rank != 0:
        return 0  # the other ranks of a DDP job: rank 0 reports for all of them
    if result.members:
        print("\nmember  test acc  val acc")
        for m in result.members:
            print(f"{m['member']:>6}  {m['test_acc']:8.4f}  {m['val_acc']:7.4f}")
        mean = sum(m["test_acc"] for m in result.members) / len(result.members)
        print(f"{'mean':>6}  {mean:8.4f}")
        print(f"{'ens.':>6}  {result.ensemble_acc:8.4f}  {result.val_acc:7.4f}")
    print(f"\nrun:       {result.run_dir}")
    print(f"val acc:   {result.val_acc:.4f}")
    print(f"test acc:  {result.test_acc:.4f}")
    print(f"time:      {result.seconds:.1f} s")
    if ns.json:
        print(result.to_json())
    if result.diverged:
        print(
            f"zoo: training diverged at {result.diverged}; stopped early, and the figures above are of "
            f"{result.best_checkpoint or 'the last weights'}, written before it",
            file=sys.stderr,
        )
        return 1
    return 0


def _interrupted_message(stop) -> str:
    """What a signal did to a run, and how it goes on."""
    from zoo.training.run_folder import resume_command

    run_dir = stop.run_dir or (stop.checkpoint.parent.parent if stop.checkpoint is not None else None)
    wrote = f"; wrote {stop.checkpoint}" if stop.checkpoint is not None else ""
    if run_dir is None:
        return f"zoo: {stop}; nothing was written"
    if stop.resumable:
        return f"zoo: {stop}{wrote}\nzoo: continue with: {resume_command(run_dir)}"
    return f"zoo: {stop} (the run had no checkpoint to resume from): {run_dir} is as it was before the run"


def requeue_job(goes_on: bool, what: str = "run", option: str = "--run-dir") -> None:
    """The SLURM job's requeue signal stopped the run (or sweep: ``what``): the job goes back in the queue, last
    of all (a requeue makes SLURM end this job), to run its batch script again; ``goes_on``: this command names
    its folder (``option``), so the requeued job goes on with it."""
    import signal

    from zoo.training.slurm import batch_job, requeue

    job = batch_job()
    if job is None:  # the requeue signal is only handled in a batch job
        return
    # SLURM answers a requeue by sending the job SIGTERM; the run is over, and this line is all that is left
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    failed = requeue(job)
    if failed is None:
        then = f"goes on with this {what}" if goes_on else f"starts a new {what} (this command has no {option})"
        print(f"zoo: requeued SLURM job {job}: it runs this command again, which {then}", file=sys.stderr)
    else:
        print(f"zoo: SLURM job {job} was not requeued: {failed}", file=sys.stderr)


def _data_spec(model, overrides: list[str]) -> dict:
    """The model's own data section, with ``data.key=value`` overrides applied and validated."""
    from zoo.core.catalog import datasets
    from zoo.core.recipe import apply_override, parse_override

    data = {"data": dict(model.recipe["data"])}
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] != "data":
            raise ZooError(f"override {text!r}: only data.* can change when evaluating a trained model")
        apply_override(data, keys, value)
    return datasets.validate(data["data"], "data")


def _need_model(ns: argparse.Namespace) -> None:
    if ns.run is None:
        raise ZooError(f"zoo {ns.command}: name the trained model: a run folder or a checkpoint, e.g. zoo {ns.command} runs/<run>")


def cmd_eval(ns: argparse.Namespace) -> int:
    from zoo.training.evaluation import evaluate, load_model

    _need_model(ns)
    model = load_model(ns.run, ns.plugin)
    spec = _data_spec(model, ns.overrides)
    report = evaluate(model, spec, ns.split, where=ns.run)
    _note_split(report.get("split_note"))
    if "members" in report:
        for i, acc in enumerate(report["members"]):
            print(f"member {i}: {ns.split} acc {acc:.4f}")
    def figure(value, width=0):  # undefined metrics are None: a class absent from the split, a vote ensemble
        return f"{value:{width}.4f}" if value is not None else f"{'-':>{width}}"

    print(f"{ns.split} acc: {report['acc']:.4f}   nll: {figure(report['nll'])}   samples: {report['samples']}")
    print(
        f"top-5 acc: {figure(report['top5_acc'])}   macro F1: {figure(report['macro_f1'])}   "
        f"ROC-AUC: {figure(report['roc_auc'])}   PR-AUC: {figure(report['pr_auc'])}"
    )
    if "vote" in report:
        vote = report["vote"]
        print(
            f"vote ensemble (votes, not probabilities: no NLL, top-5 or AUC): winning share {vote['winning_share']:.4f}"
            f"   unanimous {vote['unanimous']:.4f}   ties broken by probability: {vote['ties']}"
        )
    elif report["auc_classes"] < len(report["recall"]):
        print(f"(AUCs over the {report['auc_classes']} classes with positives and negatives in this split)")
    print("class  precision  recall")
    for i, (p, r) in enumerate(zip(report["precision"], report["recall"])):
        print(f"{i:>5}  {figure(p, 9)}  {figure(r, 6)}")
    if ns.json:
        print(json_text(report))
    return 0


def cmd_predict(ns: argparse.Namespace) -> int:
    import csv
    import io
    from pathlib import Path

    from zoo.training.evaluation import check_fits, data_of, load_inputs, load_model, predictions, split_predictions

    _need_model(ns)
    model = load_model(ns.run, ns.plugin)
    labels = None
    if ns.input:
        x = load_inputs(Path(ns.input), model.input_shape)
        pred, score, score_name = predictions(model, x, ns.run)  # a vote ensemble's score is its vote share
    else:
        dm = data_of(_data_spec(model, ns.overrides), ns.split)
        check_fits(model, dm, ns.run)
        _note_split(getattr(dm, "split_notes", {}).get(ns.split))
        pred, score, score_name, labels = split_predictions(model, dm, ns.split, ns.run)
    rows = [["index", "prediction", score_name] + (["label"] if labels is not None else [])]
    for i in range(len(pred)):
        row = [i, int(pred[i]), f"{float(score[i]):.4f}"]
        rows.append(row + ([int(labels[i])] if labels is not None else []))
    if not ns.out:
        csv.writer(sys.stdout).writerows(rows)
        return 0
    from zoo.core.io import atomic_write_text, output_file

    out = output_file(ns.out, "CSV file", "predictions.csv")
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    try:
        atomic_write_text(out, text.getvalue())
    except OSError as exc:
        raise ZooError(f"--out {out}: cannot write: {exc.strerror or exc}") from None
    print(f"wrote {len(pred)} predictions to {ns.out}", file=sys.stderr)
    return 0


def _note_split(note: str | None) -> None:
    """Say what a split is where its name alone would mislead (see DataModule.split_notes)."""
    if note:
        print(f"zoo: note: {note}", file=sys.stderr)


def cmd_show(ns: argparse.Namespace) -> int:
    from zoo.core.recipe import load
    recipe, overrides = split_recipe(ns.args)
    resolved = load(recipe, overrides)
    if ns.stats:
        return _show_stats(resolved, ns)
    if ns.json:
        print(json.dumps(resolved.to_dict()))
        return 0
    from zoo.training.finetune import starts_from_weights, trainable_lines

    # built before anything is printed: a freeze pattern that matches nothing is refused alone
    trains = trainable_lines(resolved) if starts_from_weights(resolved) else []
    print(f"# {resolved.source}, resolved")
    print(resolved.to_yaml(), end="")
    print("".join(f"# {line}\n" for line in trains), end="")
    return 0


def _show_stats(recipe, ns: argparse.Namespace) -> int:
    from zoo.tools.model_stats import recipe_stats, stats_text

    shape = None
    if ns.input_shape:
        try:
            shape = tuple(int(d) for d in ns.input_shape.lower().split("x"))
            if min(shape) < 1:
                raise ValueError
        except ValueError:
            raise ZooError(f"--input-shape {ns.input_shape!r}: expected sizes of at least 1 joined by x, e.g. 3x32x32") from None
    if (shape is None) != (ns.classes is None):
        raise ZooError("--input-shape and --classes go together (the data is read for both otherwise)")
    stats = recipe_stats(recipe, shape, ns.classes)
    print(json_text(stats.to_dict()) if ns.json else stats_text(stats, recipe.source), end="\n" if ns.json else "")
    return 0


def cmd_list(ns: argparse.Namespace) -> int:
    from zoo.core.registry import REGISTRIES

    if ns.registry is not None and ns.registry not in REGISTRIES:
        from zoo.core.errors import did_you_mean

        raise ZooError(
            f"unknown registry '{ns.registry}'{did_you_mean(ns.registry, REGISTRIES)}; "
            f"registries: {', '.join(REGISTRIES)}"
        )
    chosen = [REGISTRIES[ns.registry]] if ns.registry else list(REGISTRIES.values())
    rows = [
        {
            "registry": reg.name,
            "name": reg.display_name(e),
            "signature": e.signature_text().replace(e.name, reg.display_name(e), 1),
            "summary": e.summary,
            "source": e.source,
            "package": e.origin.package,
            "version": e.origin.version,
            "problems": list(e.problems),
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
            for problem in row["problems"]:
                print(f"      cannot be used: {problem}")
        print()
    return 0


def cmd_augment(ns: argparse.Namespace) -> int:
    from zoo.core.recipe import load
    from zoo.core.io import figure_format
    from zoo.data.grid import augmentation_grid

    figure_format(ns.out)
    recipe, overrides = split_recipe(ns.args)
    path = augmentation_grid(load(recipe, overrides), ns.out, n=ns.n, seed=ns.seed)
    print(f"wrote {path}")
    return 0


def cmd_docs(ns: argparse.Namespace) -> int:
    from pathlib import Path

    from zoo.core.io import MAX_TEXT_BYTES, atomic_write_text, read_text
    from zoo.core.reference import generate
    from zoo.tools.sweep import reference_section

    text = generate(reference_section())
    if ns.check:
        current = read_text(ns.check, MAX_TEXT_BYTES, "recipe reference") if Path(ns.check).exists() else ""
        if current != text:
            print(f"zoo: {ns.check} is out of date; regenerate it with: zoo docs --out {ns.check}", file=sys.stderr)
            return 1
        print(f"{ns.check} is up to date")
    elif ns.out:
        atomic_write_text(ns.out, text)
        print(f"wrote {ns.out}")
    else:
        print(text, end="")
    return 0


def _model_command(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    """A command on a trained model: the model, data overrides, the split, and the plugins it may need."""
    cmd = sub.add_parser(name, help=help_text)
    # optional for argparse, required by the command: argparse's own message would list data.key=value as
    # required too
    cmd.add_argument("run", metavar="RUN_DIR_OR_CKPT", nargs="?")
    cmd.add_argument(
        "overrides", nargs="*", metavar="data.key=value", help="change the data (e.g. data.split_seed=1)"
    )
    cmd.add_argument("--split", default="test", choices=["train", "val", "test"])
    add_plugin_argument(
        cmd,
        "import this plugin (a module or .py file); a plugin the checkpoint's recipe names is imported "
        "only when named here (a checkpoint alone never runs code)",
    )
    return cmd


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="zoo",
        description="Train MLPs and ResNets from YAML recipes assembled from plugin components.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors too")
    parser.add_argument(
        "--disable-plugins", metavar="NAMES",
        help="comma-separated plugin packages (or entry-point names) not to load; adds to $ZOO_DISABLE_PLUGINS",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = sub.add_parser("train", help="train a recipe (default: recipes/mlp-digits.yaml)")
    train.add_argument("args", nargs="*", metavar="RECIPE [key=value ...]", help="recipe file or name, then overrides")
    train.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    train.add_argument("--run-dir", help="write the run here instead of a new folder under runs/")
    train.add_argument("--overwrite", action="store_true", help="replace an existing --run-dir")
    train.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a stopped run from its last checkpoint (no RECIPE then)"
    )
    add_plugin_argument(train, "import this plugin first (e.g. a module a resumed run's components come from)")
    train.set_defaults(func=cmd_train)

    show = sub.add_parser("show", help="print the fully resolved recipe")
    show.add_argument("args", nargs="*", metavar="RECIPE [key=value ...]")
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    show.add_argument(
        "--stats", action="store_true",
        help="print the model's parameters, FLOPs per image and training-step memory instead (reads the data's shape)",
    )
    show.add_argument("--input-shape", metavar="CxHxW", help="with --stats: this input shape instead of the data's")
    show.add_argument("--classes", type=whole_number(1, MAX_CLASSES), metavar="N", help="with --stats: this many classes instead of the data's")
    add_plugin_argument(show)
    show.set_defaults(func=cmd_show)

    ev = _model_command(sub, "eval", "evaluate a trained model or ensemble (run folder or checkpoint)")
    ev.add_argument("--json", action="store_true", help="print a JSON report as the last line")
    ev.set_defaults(func=cmd_eval)

    pr = _model_command(sub, "predict", "write class predictions of a trained model or ensemble as CSV")
    pr.add_argument("--input", help="a .pt or .npy file of raw inputs (N, *input_shape) instead of a data split")
    pr.add_argument("--out", help="CSV file to write (default: standard output)")
    pr.set_defaults(func=cmd_predict)

    aug = sub.add_parser("augment", help="write a picture of training images before and after augmentation")
    aug.add_argument("args", nargs="*", metavar="RECIPE [key=value ...]")
    aug.add_argument("--out", default="augment-grid.png", help="PNG file to write (default: augment-grid.png)")
    aug.add_argument("--n", type=whole_number(1, MAX_GRID), default=16, help=f"how many images (default: 16, at most {MAX_GRID})")
    aug.add_argument("--seed", type=seed_number, default=0, help="seed of the augmentation draws")
    add_plugin_argument(aug)
    aug.set_defaults(func=cmd_augment)

    docs = sub.add_parser("docs", help="print the recipe reference generated from the code")
    docs.add_argument("--out", help="write it to this file")
    docs.add_argument("--check", metavar="FILE", help="exit 1 if FILE differs from what would be generated")
    docs.set_defaults(func=cmd_docs)

    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)

    lst = sub.add_parser("list", help="list registered components")
    lst.add_argument("registry", nargs="?", help="only this registry (activations, models, ...)")
    lst.add_argument("--json", action="store_true", help="print JSON")
    add_plugin_argument(lst)
    lst.set_defaults(func=cmd_list)
    return parser


def _plugin_warnings_on_one_line() -> None:
    """Show zoo's PluginWarnings as `zoo: warning: ...`, one line each; other warnings as Python does."""
    import warnings

    from zoo.core.errors import PluginWarning

    shown = warnings.showwarning
    if getattr(shown, "zoo_one_line", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PluginWarning):
            print(f"zoo: warning: {message}", file=file or sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    show.zoo_one_line = True
    warnings.showwarning = show


def _take_disabled(argv: list[str]) -> tuple[list[str], list[str]]:
    """``--disable-plugins a,b`` (or ``=a,b``) taken out of ``argv`` wherever it stands: (names, the rest)."""
    names, rest, it = [], [], iter(argv)
    for arg in it:
        if arg == "--disable-plugins":
            names.append(next(it, ""))
        elif arg.startswith("--disable-plugins="):
            names.append(arg.partition("=")[2])
        else:
            rest.append(arg)
    return [n for n in ",".join(names).split(",") if n.strip()], rest


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    ns, extra = parser.parse_known_args(argv)
    # the recipe and key=value overrides may also follow options (`zoo train r --run-dir x a=1`):
    # argparse reads one run of positionals and leaves the rest over
    for name in ("args", "overrides"):
        if extra and isinstance(getattr(ns, name, None), list):
            getattr(ns, name).extend(a for a in extra if not a.startswith("-"))
            extra = [a for a in extra if a.startswith("-")]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return ns


def main(argv: Sequence[str] | None = None) -> int:
    _plugin_warnings_on_one_line()
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            # the terminal passed bytes that are not UTF-8 (Python keeps them as surrogates): they would
            # fail later, in a file name or a written recipe
            print(f"zoo: error: argument {brief(arg)} is not valid UTF-8 text", file=sys.stderr)
            return EXIT_USAGE
    # --debug and --disable-plugins are accepted anywhere, not only before the command, where people
    # forget to put them
    debug = "--debug" in argv
    disabled, argv = _take_disabled(argv)
    try:
        ns = _parse(parser, [a for a in argv if a != "--debug"])
    except ZooError as exc:
        print(f"zoo: error: {clip(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    ns.debug = debug
    if disabled:
        from zoo.core import discovery

        discovery.disable(disabled)
    try:
        if getattr(ns, "plugin", None):
            from zoo.core import discovery

            # before the command reads a recipe: its components (or a resumed run's) may come from these
            discovery.load_local(ns.plugin, kind="--plugin")
        return ns.func(ns)
    except BrokenPipeError:
        # whoever read the output stopped reading (`zoo list | head -1`): not an error to report. Python
        # would complain again when it flushes stdout at exit, so stdout goes to /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except ZooError as exc:
        if ns.debug:
            raise
        print(f"zoo: error: {clip(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - whatever else went wrong: one line, not a traceback
        if ns.debug:
            raise
        print(f"zoo: error: {_unexpected(exc)}", file=sys.stderr)
        return EXIT_USAGE


def _unexpected(exc: Exception) -> str:
    """One line for an error zoo did not foresee: what it is, where the run is, how to see more."""
    text = " ".join(str(exc).split()) or "(no message)"
    line = file_error_message(exc) or f"{type(exc).__name__}: {clip(text, 500)}"
    run_dir = getattr(exc, "zoo_run_dir", None)
    if run_dir is not None and getattr(exc, "zoo_resumable", False):
        from zoo.training.run_folder import resume_command

        line += f"; the run stopped and can go on from its last checkpoint: {resume_command(run_dir)}"
    elif run_dir is not None:
        line += f" (nothing was kept in {run_dir})"
    return line + "; --debug shows the traceback"


if __name__ == "__main__":
    sys.exit(main())
