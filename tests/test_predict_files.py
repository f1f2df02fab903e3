"""zoo predict on image files: files and folders of any size and format, each image's first classes by name,
decoded as the run's evaluation decodes images; damaged files named and left out."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.cli.main import main
from zoo.data.images import decode_crop, eval_chooser
from zoo.export.images import decode_images
from zoo.export import image_predictions
from zoo.training.classifier import Classifier
from zoo.training.ensemble_model import Ensemble
from zoo.training.evaluation import load_model, top_classes
from zoo.export.image_predictions import image_reader


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("predict") / "run"
    assert main(["train", "mlp-digits", "trainer.max_epochs=2", "model.width=32", "--run-dir", str(folder)]) == 0
    return folder


def digit_images(folder: Path) -> list[Path]:
    """sklearn's digits as 8x8 grey PNGs, and larger ones in other formats and modes (RGB, RGBA, grey)."""
    from sklearn.datasets import load_digits

    pixels = (load_digits().images[:6] * 255 / 16).astype(np.uint8)
    (folder / "more").mkdir(parents=True)
    files = []
    for i, digit in enumerate(pixels):
        files.append(folder / f"{i}.png")
        Image.fromarray(digit).save(files[-1])
    bigger = [("more/a.jpg", "RGB", (40, 30)), ("more/b.webp", "RGBA", (24, 24)), ("more/c.bmp", "L", (9, 17))]
    for (name, mode, size), digit in zip(bigger, pixels):
        files.append(folder / name)
        Image.fromarray(digit).resize(size).convert(mode).save(files[-1])
    return files


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def predict(capsys, *args: str) -> tuple[int, str]:
    status = main(["predict", *args])
    return status, capsys.readouterr().err


def test_each_image_gets_the_models_first_classes_by_name(run, tmp_path, capsys, monkeypatch):
    files = digit_images(tmp_path / "images")
    monkeypatch.setattr(image_predictions, "BATCH", 4)  # several batches, one decoded while one is classified
    out = tmp_path / "p.csv"
    # a folder (walked at any depth, sorted) and a file named alone
    status, err = predict(capsys, str(run), "--input", str(tmp_path / "images" / "more"), str(files[0]),
                          "--top-k", "3", "--out", str(out))
    assert status == 0, err
    rows = read_csv(out)
    assert rows[0] == ["path", "class_1", "prob_1", "class_2", "prob_2", "class_3", "prob_3"]
    expected_files = [*files[6:], files[0]]
    assert [r[0] for r in rows[1:]] == [str(f) for f in expected_files]
    model = load_model(run)
    expected = model.predict_proba(decode_images(expected_files, model.input_shape))
    for row, probs in zip(rows[1:], expected):
        got = [float(p) for p in row[2::2]]
        first = probs.sort(descending=True, stable=True).indices[:3]
        assert row[1::2] == [str(int(c)) for c in first]  # the digits' classes are named "0".."9"
        assert got == sorted(got, reverse=True) and sum(got) <= 1 + 3e-6
        assert got == pytest.approx(probs.sort(descending=True).values[:3].tolist(), abs=1e-5)


def test_a_damaged_file_is_named_and_the_others_are_written(run, tmp_path, capsys):
    files = digit_images(tmp_path / "images")
    (tmp_path / "images" / "broken.png").write_bytes(files[1].read_bytes()[:30])  # a PNG cut short
    out = tmp_path / "p.csv"
    status, err = predict(capsys, str(run), "--input", str(tmp_path / "images"), "--out", str(out))
    assert status == 1
    assert f"skipped: cannot decode {tmp_path / 'images' / 'broken.png'}" in err and "Traceback" not in err
    rows = read_csv(out)
    assert sorted(r[0] for r in rows[1:]) == sorted(map(str, files))
    assert len(rows[0]) == 1 + 2 * 5  # five classes by default

    # nothing readable: no CSV at all
    out.unlink()
    status, err = predict(capsys, str(run), "--input", str(tmp_path / "images" / "broken.png"), "--out", str(out))
    assert status == 1 and "nothing written" in err and not out.exists()


def test_top_k_is_capped_at_the_class_count(run, tmp_path, capsys):
    files = digit_images(tmp_path / "images")
    out = tmp_path / "p.csv"
    assert predict(capsys, str(run), "--input", str(files[2]), "--top-k", "50", "--out", str(out))[0] == 0
    header, row = read_csv(out)
    assert header[-2:] == ["class_10", "prob_10"] and sorted(row[1::2]) == [str(i) for i in range(10)]
    assert sum(float(p) for p in row[2::2]) == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--input", "nowhere.png"], "--input nowhere.png: no such file or folder"),
        (["--input", "empty"], "--input empty: no image files in this folder"),
        (["--top-k", "3"], "--top-k: only for image files"),
        (["--input", "x.pt", "a.png"], "--input x.pt: not an image file by its extension"),
        # data overrides after --input are overrides, not files
        (["--input", "a.png", "data.nope=1"], "unknown parameter 'nope'"),
    ],
)
def test_mistakes_are_one_line(run, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    status, err = predict(capsys, str(run), *args, "--out", "p.csv")
    assert status == 2 and err.startswith("zoo: error: ") and message in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "empty"]


def test_a_streamed_runs_images_get_its_evaluation_crop(tmp_path):
    file = tmp_path / "wide.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(file)
    read = image_reader({"name": "streaming", "image_size": 12, "eval_size": 16, "crop_pct": 0.5}, (3, 12, 12))
    assert torch.equal(read(file), decode_crop(file.read_bytes(), str(file), 16, eval_chooser(0.5)))
    # eval_size unset: the training size
    read = image_reader({"name": "streaming", "image_size": 12, "eval_size": None, "crop_pct": 0.5}, (3, 12, 12))
    assert read(file).shape == (3, 12, 12)
    # zoo.load's models read files the same way: the run's data section decides
    from zoo.export.load import Predictor

    spec = {"name": "streaming", "image_size": 12, "eval_size": None, "crop_pct": 0.5}
    loaded = Predictor(lambda x: x, (3, 12, 12), None, ["a"], "run", spec)
    assert torch.equal(loaded.preprocess([file]), decode_crop(file.read_bytes(), str(file), 12, eval_chooser(0.5))[None])


def test_a_vote_ensembles_classes_are_ranked_as_it_decides():
    from zoo.core.recipe import load

    recipe = load("mlp-digits", ["model.width=8"]).to_dict()
    torch.manual_seed(0)
    members = [Classifier(recipe, (1, 8, 8), 10).eval() for _ in range(3)]
    x = torch.rand(64, 1, 8, 8)
    for combine in ("vote", "mean"):
        model = Ensemble(members, combine)
        scores, classes, name = top_classes(model, x, 4)
        assert name == ("vote_share" if combine == "vote" else "probability")
        assert torch.equal(classes[:, 0], model.predict(x))
        assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_an_ensemble_on_rgb_images_names_the_data_sets_classes(tmp_path, capsys):
    """Class names come from the run's data set; a vote ensemble's columns are vote shares, first its decision."""
    from zoo.core.recipe import load

    data = "data={name: synthetic, shape: [3, 8, 8], num_classes: 4, n_train: 16, n_val: 8, n_test: 8}"
    recipe = load("mlp-digits", ["model.width=8", data]).to_dict()
    torch.manual_seed(0)
    model = Ensemble([Classifier(recipe, (3, 8, 8), 4).eval() for _ in range(3)], "vote")
    model.save(tmp_path / "vote.ckpt")
    rng = np.random.default_rng(0)
    files = [tmp_path / f"{i}.png" for i in range(5)]
    for i, file in enumerate(files):  # grey, RGB and RGBA images, for a model of RGB images
        mode = ("L", "RGB", "RGBA")[i % 3]
        Image.fromarray(rng.integers(0, 256, (8 + i, 12, 3), dtype=np.uint8)).convert(mode).save(file)
    out = tmp_path / "p.csv"
    assert predict(capsys, str(tmp_path / "vote.ckpt"), "--input", *map(str, files), "--out", str(out))[0] == 0
    header, *rows = read_csv(out)
    assert header == ["path"] + [f"{c}_{i}" for i in range(1, 5) for c in ("class", "vote_share")]
    decided = model.predict(decode_images(files, (3, 8, 8)))
    assert [r[1] for r in rows] == [f"class{int(c)}" for c in decided]
    for row in rows:
        shares = [float(s) for s in row[2::2]]
        assert shares == sorted(shares, reverse=True) and sum(shares) == pytest.approx(1, abs=1e-5)


def test_without_the_training_data_the_classes_keep_their_numbers(tmp_path, capsys):
    from zoo.core.recipe import load

    data = f"data={{name: imagefolder, root: {tmp_path / 'moved'}, size: 8, color: gray}}"
    recipe = load("mlp-digits", ["model.width=8", data]).to_dict()
    hp = {"recipe": recipe, "input_shape": [1, 8, 8], "num_classes": 3}
    torch.save({"state_dict": Classifier(recipe, (1, 8, 8), 3).state_dict(), "hyper_parameters": hp},
               tmp_path / "m.ckpt")
    Image.new("L", (8, 8), 200).save(tmp_path / "a.png")
    out = tmp_path / "p.csv"
    status, err = predict(capsys, str(tmp_path / "m.ckpt"), "--input", str(tmp_path / "a.png"), "--out", str(out))
    assert status == 0 and "classes named by number" in err and str(tmp_path / "moved") in err
    header, row = read_csv(out)
    assert len(header) == 1 + 2 * 3 and sorted(row[1::2]) == ["0", "1", "2"]
