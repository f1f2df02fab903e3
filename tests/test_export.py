"""zoo export and zoo.load: each kind of model (an MLP, a ResNet with test-time views, a mean ensemble)
leaves zoo as one graph that gives zoo's own probabilities, checked as it is written, and comes back with
zoo.load."""

from __future__ import annotations

import json
import shutil
import socket
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import zoo
from zoo.cli.main import main
from zoo.export.card import read_metadata
from zoo.export.formats import FILES
from zoo.export.graph import set_tta
from zoo.tools.model_stats import forward_flops
from zoo.training.evaluation import load_model, split_of
from zoo.training.ensemble_model import Ensemble

# a ResNet on uint8 RGB images, evaluated over 6 views (the image and two 1-pixel shifts, each mirrored)
RESNET = [
    "resnet-digits",
    "data={name: synthetic, shape: [3, 8, 8], n_train: 160, n_val: 40, n_test: 48, num_classes: 4}",
    "model.depth=8", "model.width=4", "trainer.max_epochs=1", "schedule.warmup_epochs=0",
    "tta={flip: true, crops: 2, shift: 1}", "augment=[]",
]
ENSEMBLE = [
    "mlp-digits-ensemble", "ensemble.members=2", "model.width=16", "trainer.max_epochs=1", "augment=[]",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The run folders by kind; the MLP is the ensemble's first member, a finished run folder of its own."""
    root = tmp_path_factory.mktemp("export")
    for name, args in (("resnet", RESNET), ("ensemble", ENSEMBLE)):
        assert main(["train", *args, "--run-dir", str(root / name)]) == 0
    mlp = root / "ensemble" / "members" / "m0"
    return {"mlp": mlp, "resnet": root / "resnet", "ensemble": root / "ensemble"}


def zoo_probabilities(run: Path, tta: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images and zoo's evaluation of them (tta: with the recipe's test-time views or without)."""
    model = load_model(run)
    set_tta(model, tta)
    _, test = split_of(dict(model.recipe["data"]), "test")
    return test.x, model.predict_proba(test.x)


def export(capsys, run: Path, fmt: str, out: Path, *extra: str) -> dict:
    assert main(["export", str(run), "--format", fmt, "--out", str(out), "--json", *extra]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[1].startswith("check: ") and "top-1 agreement 100.00%" in printed[1]
    return json.loads(printed[-1])


@pytest.mark.parametrize("kind", ["mlp", "resnet", "ensemble"])
def test_onnx_export_gives_zoo_probabilities_and_carries_its_card(runs, kind, tmp_path, capsys):
    """The ResNet is exported with its test-time views (--tta), which the graph averages as zoo does."""
    out, tta = tmp_path / "onnx", kind == "resnet"
    summary = export(capsys, runs[kind], "onnx", out, *(["--tta"] if tta else []))
    x, expected = zoo_probabilities(runs[kind], tta=tta)
    assert summary["passed"] and summary["samples"] == len(x) and summary["top1_agreement"] == 1.0
    assert 0 <= summary["max_abs_diff"] <= 1e-4 and summary["tta"] == tta
    # read back through onnxruntime by zoo.load, on a batch size the graph was not traced with
    predictor = zoo.load(out)
    got = predictor.predict(x[:7])
    assert torch.allclose(got, expected[:7], atol=1e-5, rtol=0)
    assert torch.allclose(got.sum(1), torch.ones(7), atol=1e-5)

    meta = read_metadata((out / "README.md").read_text())
    model = load_model(runs[kind])
    members = model.members if isinstance(model, Ensemble) else [model]
    assert meta["parameters"] == sum(p.numel() for m in members for p in m.net.parameters()) > 0
    # FLOPs as zoo show --stats counts them, times the views and members in the graph
    assert meta["flops_per_image"] == (6 if tta else 1) * sum(forward_flops(m) for m in members)
    run_metrics = json.loads((runs[kind] / "metrics.json").read_text())
    assert meta["format"] == "onnx" and meta["metrics"]["test_acc"] == run_metrics["test_acc"]
    assert meta["recipe"] == yaml.safe_load((runs[kind] / "recipe.yaml").read_text())
    assert meta["input"]["shape"] == list(x.shape[1:])
    assert meta["input"]["dtype"] == ("uint8" if kind == "resnet" else "float32")
    assert meta["classes"] == predictor.classes == (
        ["class0", "class1", "class2", "class3"] if kind == "resnet" else list("0123456789"))
    assert meta["versions"]["zoo"] == zoo.__version__
    assert meta["versions"]["plugins"] == {"zoo": zoo.__version__}
    assert meta["precision"]["exported"] == "float32" and meta["check"]["samples"] == len(x)
    assert meta["training"]["command"] == f"zoo train {runs[kind]}/recipe.yaml"
    assert meta["tta"]["included"] == tta and meta["tta"]["views"] == (6 if tta else 1)
    assert [p.name for p in tmp_path.iterdir()] == ["onnx"]  # nothing left beside it
    if tta:
        _, without = zoo_probabilities(runs[kind], tta=False)
        assert (got - without[:7]).abs().max() > 1e-3  # the views are inside: without them the numbers differ
        names = predictor.top_k(x[:2], k=2)
        assert [len(n) for n in names] == [2, 2]
        assert names[0][0][0] == predictor.classes[int(expected[0].argmax())]


def test_other_formats_load_without_the_run_and_overwrite_replaces_an_export(runs, tmp_path, capsys):
    out = tmp_path / "out"
    x, expected = zoo_probabilities(runs["mlp"], tta=False)
    moved = tmp_path / "run-elsewhere"
    # what an export killed on its way (kill -9, a lost machine) left: a process id no process has
    abandoned = tmp_path / f".out.partial-{socket.gethostname()}-{2**22 + 1}"
    abandoned.mkdir()
    for i, fmt in enumerate(["torchscript", "exported-program", "safetensors"]):
        summary = export(capsys, runs["mlp"], fmt, out, *(["--overwrite"] if i else []))
        assert summary["passed"] and summary["format"] == fmt and summary["max_abs_diff"] <= 1e-4
        assert sorted(p.name for p in out.iterdir()) == sorted(["README.md", "zoo-export.json", FILES[fmt]])
        shutil.move(runs["mlp"], moved)  # the export needs nothing of the run
        try:
            got = zoo.load(out).predict(x)
        finally:
            shutil.move(moved, runs["mlp"])
        assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial or replaced folder left beside it


def test_zoo_load_of_a_run_predicts_as_zoo_eval_from_tensors_and_image_files(runs, tmp_path):
    from torchvision.io import write_png

    # a run predicts as zoo eval does: with its views
    x, expected = zoo_probabilities(runs["resnet"], tta=True)
    model = zoo.load(runs["resnet"])
    assert model.classes == ["class0", "class1", "class2", "class3"]
    assert torch.equal(model.predict(x), expected)
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.png")
        write_png(x[i], str(files[-1]))
    assert torch.equal(model.predict([str(f) for f in files]), model.predict(x[:3]))
    mlp_x, mlp_expected = zoo_probabilities(runs["mlp"], tta=False)
    assert torch.equal(zoo.load(runs["mlp"] / "checkpoints" / "best.ckpt").predict(mlp_x), mlp_expected)


def test_an_export_that_differs_from_zoo_is_exit_1_and_writes_nothing(runs, tmp_path, capsys, monkeypatch):
    import zoo.export.graph

    # a graph that lost its test-time views: zoo's evaluation of the same run has them
    def unmoved(x, flip, crops, shift):
        return [x] * (1 + crops) * (1 + flip)

    monkeypatch.setattr(zoo.export.graph, "views", unmoved)
    out = tmp_path / "broken"
    args = ["export", str(runs["resnet"]), "--format", "safetensors", "--out", str(out), "--tta", "--json"]
    status = main(args)
    captured = capsys.readouterr()
    assert status == 1
    assert json.loads(captured.out.strip().splitlines()[-1])["passed"] is False
    assert "top-1 agreement" in captured.err and "was not written" in captured.err.splitlines()[-1]
    assert "Traceback" not in captured.err
    assert list(tmp_path.iterdir()) == []


def refused(capsys, args: list[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and err.startswith("zoo: error: ")
    return err


def test_user_mistakes_are_one_line_and_write_nothing(runs, tmp_path, capsys):
    out = tmp_path / "out"

    def onnx(run: Path, *extra: str) -> list[str]:
        return ["export", str(run), "--format", "onnx", "--out", str(out), *extra]

    tflite = ["export", str(runs["mlp"]), "--format", "tflite", "--out", str(out)]
    assert "invalid choice: 'tflite'" in refused(capsys, tflite)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(runs["mlp"] / "recipe.yaml", unfinished)
    assert "not a finished run (no metrics.json)" in refused(capsys, onnx(unfinished))
    assert "not a run folder" in refused(capsys, onnx(tmp_path / "nothing"))
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "already exists; pass --overwrite" in refused(capsys, onnx(runs["mlp"]))
    assert "not a zoo export folder" in refused(capsys, onnx(runs["mlp"], "--overwrite"))
    assert (out / "keep.txt").read_text() == "mine"
    # a vote ensemble has no probabilities to put in a graph
    vote = tmp_path / "vote"
    shutil.copytree(runs["ensemble"], vote, ignore=shutil.ignore_patterns("wandb", "members"))
    ensemble = Ensemble.load(vote / "ensemble.ckpt")
    ensemble.combine = "vote"
    ensemble.save(vote / "ensemble.ckpt")
    shutil.rmtree(out)
    assert "combine: vote ensemble cannot be exported" in refused(capsys, onnx(vote))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unfinished", "vote"]


BRANCHY = """
import torch
from torch import nn

from zoo import models


class Branchy(nn.Module):
    def __init__(self, size, num_classes):
        super().__init__()
        self.head = nn.Linear(size, num_classes)

    def forward(self, x):
        logits = self.head(x.flatten(1))
        if logits.sum() > 0:  # a branch on the data: no one graph holds it
            return logits
        return -logits


@models.register("branchy")
def branchy(input_shape, num_classes):
    '''A linear model that flips its logits' sign on some batches.'''
    size = 1
    for s in input_shape:
        size *= s
    return Branchy(size, num_classes)
"""


def test_plugin_models_need_their_plugin_and_a_graph_that_cannot_hold_them_is_named(tmp_path, capsys):
    from tests.test_provenance import install

    plugin = tmp_path / "branchy.py"
    plugin.write_text(textwrap.dedent(BRANCHY))
    run = tmp_path / "run"
    try:
        args = ["train", "mlp-digits", "model=branchy", "trainer.max_epochs=1", "augment=[]"]
        assert main([*args, "--run-dir", str(run), "--plugin", str(plugin)]) == 0
        install(None)  # the run folder names the file; nothing imports it unless asked
        with pytest.raises(zoo.ZooError, match=f"pass --plugin {plugin}"):
            zoo.load(run)
        assert zoo.load(run, plugins=[str(plugin)]).predict(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
        export_args = ["export", str(run), "--format", "exported-program", "--out", str(tmp_path / "e")]
        err = refused(capsys, [*export_args, "--plugin", str(plugin)])
        assert "cannot be exported as exported-program: its forward branches on" in err
        assert f"(at {plugin}:15: if logits.sum() > 0:" in err
    finally:
        install(None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["branchy.py", "run"]


def test_an_operation_onnx_has_no_translation_for_is_named(tmp_path):
    from torch import nn

    from zoo.export.formats import export_failure, write

    class SingularValues(nn.Module):
        def forward(self, x):
            return torch.linalg.svdvals(x.flatten(2)).sum(-1)

    with pytest.raises(Exception) as failed:  # noqa: PT011 - whatever torch.onnx raises: its words count
        write("onnx", SingularValues(), torch.rand(4, 3, 8, 8), tmp_path)
    assert export_failure("onnx", failed.value) == (
        "the model cannot be exported as onnx: ONNX has no translation of the operation "
        "aten._linalg_svd.default (torch.ops.aten._linalg_svd.default) that the model uses"
    )
