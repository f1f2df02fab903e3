"""``zoo export``: a finished run written as one model file and its card, checked against zoo's own
evaluation before the folder appears.

The folder is built as a hidden sibling of ``--out`` and renamed into place only once the exported model
has been read back and matches zoo's evaluation; a failure of any kind, the check's included, removes it,
so ``--out`` holds a whole, checked export or nothing new.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from zoo.core.contracts import split_size
from zoo.core.errors import ZooError
from zoo.core.io import MAX_TEXT_BYTES, atomic_write_text, read_text
from zoo.export import formats
from zoo.export.card import card_text
from zoo.export.graph import ExportGraph, build_graph, flops_per_image, members_of, set_tta, view_count
from zoo.export.load import CONFIG, CONFIG_FORMAT, load_export

CHECK_SAMPLES = 1000
# what an export must meet: the largest difference of a probability, the share of top-1 classes that agree
MAX_ABS_DIFF, MIN_AGREEMENT = 1e-4, 1.0


@dataclass
class Parity:
    """How far the exported model is from zoo's evaluation on the same images."""

    samples: int
    max_abs_diff: float
    top1_agreement: float
    runtime: str

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= MAX_ABS_DIFF and self.top1_agreement >= MIN_AGREEMENT

    def text(self) -> str:
        return (
            f"check: {self.runtime} against zoo's evaluation on {self.samples} test images: max |difference| "
            f"of a probability {self.max_abs_diff:.2e}, top-1 agreement {100 * self.top1_agreement:.2f}%"
        )


class ExportCheckFailed(Exception):
    """The exported model does not give what zoo's evaluation gives (exit code 1: no user mistake)."""

    def __init__(self, parity: Parity, out: Path) -> None:
        super().__init__(
            f"the exported model differs from zoo's evaluation (more than {MAX_ABS_DIFF:g} in a probability, "
            f"or a top-1 class that disagrees): {out} was not written"
        )
        self.parity = parity


@dataclass
class ExportResult:
    out: Path
    format: str
    tta: bool
    parity: Parity
    parameters: int
    flops_per_image: int

    def summary(self) -> dict[str, Any]:
        return {"out": str(self.out), "format": self.format, "tta": self.tta, **asdict(self.parity),
                "passed": self.parity.passed, "parameters": self.parameters,
                "flops_per_image": self.flops_per_image}


def finished_run(run: str | Path) -> Path:
    """``run`` as a finished run folder (its metrics.json written), or one line saying what it is instead."""
    path = Path(run)
    if not path.is_dir():
        raise ZooError(f"{path}: not a run folder (zoo export takes the folder of a finished run)")
    if not (path / "metrics.json").is_file():
        if (path / "recipe.yaml").is_file():
            from zoo.training.run_folder import resume_command

            raise ZooError(
                f"{path}: not a finished run (no metrics.json); finish it first: {resume_command(path)}"
            )
        raise ZooError(f"{path}: not a run folder (no recipe.yaml or metrics.json in it)")
    return path


def check_out(out: str | Path, overwrite: bool) -> Path:
    """``--out`` before anything is built: new, or an export that --overwrite may replace."""
    out = Path(out)
    if not out.parent.is_dir():
        raise ZooError(f"--out {out}: no folder {out.parent} to write it in")
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise ZooError(f"--out {out}: already exists; pass --overwrite to replace it, or name a new one")
        if not (out.is_dir() and (out / CONFIG).is_file()):
            raise ZooError(
                f"--out {out}: exists and is not a zoo export folder (no {CONFIG}); "
                "--overwrite replaces only those"
            )
    return out


def parity(predict, reference: torch.Tensor, x: torch.Tensor, runtime: str, chunk: int = 256) -> Parity:
    probs = torch.cat([predict(c).float() for c in x.split(chunk)])
    if probs.shape != reference.shape:
        raise ZooError(
            f"the exported model gives outputs of shape {tuple(probs.shape)}, not {tuple(reference.shape)}"
        )
    diff = float((probs.double() - reference.double()).abs().max()) if len(x) else 0.0
    if diff != diff:  # NaN: no agreement to speak of
        diff = float("inf")
    agree = float((probs.argmax(1) == reference.argmax(1)).double().mean()) if len(x) else 1.0
    return Parity(len(x), diff, agree, runtime)


def export_run(
    run: str | Path, fmt: str, out: str | Path, *, tta: bool = False, overwrite: bool = False, plugins=(),
    command: str | None = None,
) -> ExportResult:
    """Export a finished run as ``fmt`` into the folder ``out``; see the module docstring."""
    from zoo.training.evaluation import check_fits, data_of, first_samples, load_model

    formats.check_format(fmt)
    run_dir = finished_run(run)
    out = check_out(out, overwrite)
    plugins = list(plugins)
    model = load_model(run_dir, plugins)
    members = members_of(model)  # a vote ensemble is refused here
    set_tta(model, tta)
    dm = data_of(dict(model.recipe["data"]), "test")
    check_fits(model, dm, run_dir)
    x = first_samples(dm, "test", CHECK_SAMPLES).cpu()  # a streamed test split: its first images, decoded
    graph = build_graph(model, x.dtype)
    reference = model.predict_proba(x)
    meta = _metadata(run_dir, model, members, graph, dm, x, fmt, tta)

    _remove_abandoned(out)
    tmp = out.parent / f".{out.name}.partial-{socket.gethostname()}-{os.getpid()}"
    tmp.mkdir()
    try:
        example = x[: formats.EXAMPLE_BATCH]
        if len(example) < formats.EXAMPLE_BATCH:
            example = torch.cat([example] * formats.EXAMPLE_BATCH)[: formats.EXAMPLE_BATCH]
        try:
            formats.write(fmt, graph, example, tmp)
        except (ZooError, OSError):
            raise
        except Exception as exc:  # noqa: BLE001 - the exporters raise many kinds for what they cannot take
            raise ZooError(f"{run_dir}: {formats.export_failure(fmt, exc)}") from None
        config = {"format": CONFIG_FORMAT, **_config(meta, members, fmt, tta)}
        atomic_write_text(tmp / CONFIG, json.dumps(config, indent=1) + "\n")
        check = parity(load_export(tmp, plugins).predict, reference, x, formats.RUNTIMES[fmt])
        if not check.passed:
            raise ExportCheckFailed(check, out)
        meta["check"] = asdict(check)
        atomic_write_text(tmp / "README.md", card_text(meta))
        _put_in_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out, fmt, meta["tta"]["included"], check, meta["parameters"], meta["flops_per_image"])


def _remove_abandoned(out: Path) -> None:
    """Partial folders of ``out`` whose process is gone (killed before it could clean up after itself); one
    of another host may be running still, and is left alone, as run folders' locks are."""
    from zoo.training.run_folder import _alive

    for folder in out.parent.glob(f".{out.name}.partial-*"):
        host, _, pid = folder.name.removeprefix(f".{out.name}.partial-").rpartition("-")
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive({"host": host, "pid": int(pid)})):
            shutil.rmtree(folder, ignore_errors=True)


def _put_in_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        tmp.rename(out)
        return
    aside = out.parent / f".{out.name}.replaced-{os.getpid()}"
    out.rename(aside)
    try:
        tmp.rename(out)
    except BaseException:
        aside.rename(out)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _config(meta: dict[str, Any], members, fmt: str, tta: bool) -> dict[str, Any]:
    """zoo-export.json: what zoo.load needs, and for safetensors each member's recipe to rebuild it from."""
    config = {"model_format": fmt, "file": formats.FILES[fmt], "input": meta["input"],
              "output": meta["output"], "classes": meta["classes"], "tta": tta}
    if fmt == "safetensors":
        config["members"] = [
            {"recipe": m.recipe, "input_shape": list(m.input_shape), "num_classes": m.num_classes}
            for m in members
        ]
    return config


def _metadata(
    run_dir: Path, model, members, graph: ExportGraph, dm, x: torch.Tensor, fmt: str, tta: bool
) -> dict[str, Any]:
    from importlib.metadata import version
    from zoo.core.recipe import load_yaml

    recipe_text = read_text(run_dir / "recipe.yaml", MAX_TEXT_BYTES, "run recipe")
    recipe = load_yaml(recipe_text)
    metrics = json.loads(read_text(run_dir / "metrics.json", MAX_TEXT_BYTES, "metrics file"))
    metrics = {k: v for k, v in metrics.items() if k not in ("run_dir", "best_checkpoint")}
    plugins: dict[str, str] = {}
    for member in members:
        for origin in (member.recipe.get("provenance") or {}).values():
            if origin.get("package"):
                plugins[origin["package"]] = str(origin.get("version"))
    shape = list(x.shape[1:])
    run_tta = members[0].recipe.get("tta") or {}
    run_views = (1 + int(run_tta.get("crops", 0))) * (2 if run_tta.get("flip") else 1)
    # the run folder keeps its resolved recipe, headed by the file it was resolved from
    header = recipe_text.splitlines()[0] if recipe_text.startswith("# resolved from ") else ""
    source = header.removeprefix("# resolved from ").split(";")[0] or None
    trained = (recipe.get("trainer") or {}).get("precision")
    return {
        "name": run_dir.resolve().name,
        "kind": f"{len(members)}-member ensemble (mean of the members' probabilities)"
        if len(members) > 1 else "model",
        "format": fmt,
        "file": formats.FILES[fmt],
        "runtime": formats.RUNTIMES[fmt],
        "dataset": {"name": model.recipe["data"]["name"], "data": dict(model.recipe["data"]),
                    "test_samples": split_size(dm, "test")},
        "classes": [str(c) for c in dm.classes],
        "input": {"name": formats.INPUT_NAME, "shape": shape, "dtype": str(x.dtype).removeprefix("torch."),
                  "batch": "any (dynamic first dimension)"},
        "output": {"name": formats.OUTPUT_NAME, "shape": ["N", len(dm.classes)],
                   "values": "class probabilities (softmax)"},
        # --tta on a recipe without test-time views leaves the graph with the one view it has
        "tta": {"included": tta and run_views > 1, "views": view_count(members[0]), "run_views": run_views,
                "description": _tta_words(members[0].tta)},
        "precision": {"trained": trained if trained is not None else "32-true", "exported": "float32"},
        "parameters": sum(p.numel() for p in graph.parameters()),
        "flops_per_image": flops_per_image(graph, tuple(shape), x.dtype),
        "metrics": metrics,
        "versions": {"zoo": version("zoo"), "torch": torch.__version__.split("+")[0], "plugins": plugins},
        "training": {"recipe_source": source, "command": f"zoo train {run_dir}/recipe.yaml"},
        "recipe": recipe,
    }


def _tta_words(tta: dict[str, Any]) -> str:
    parts = ["as it is"]
    if tta["crops"]:
        parts.append(f"shifted by {tta['shift']} pixels in {tta['crops']} directions")
    if tta["flip"]:
        parts.append("each of those mirrored")
    return ", ".join(parts)
