"""Streamed data sets: prepared folders read in DataLoader workers, every image once, exact resumes, damaged
images named."""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
from pathlib import Path

import pytest
import torch
from streaming_data import prepared

from zoo.core import discovery
from zoo.core.catalog import datasets
from zoo.data.streaming import StreamingData

TESTS = Path(__file__).resolve().parent
BOX = TESTS / "plugins" / "box_crop.py"
COUNTS = {"train": 50, "val": 12, "test": 15}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    from run_stops import one_torch_thread

    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return prepared(tmp_path_factory.mktemp("streaming") / "prepared", COUNTS)


def data(root: Path, **settings):
    spec = {"name": "streaming", "root": str(root), "image_size": 16, "batch_size": 8, "eval_batch_size": 5,
            "num_workers": 0, **settings}
    return datasets.build(spec, "data")


def fingerprints(x: torch.Tensor) -> list[str]:
    return sorted(hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in x)


def epoch(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


def test_a_training_epoch_is_every_image_once_in_uint8_batches_reshuffled_per_epoch(folder):
    dm = data(folder)
    assert isinstance(dm, StreamingData)
    assert (dm.input_shape, dm.num_classes, dm.classes) == ((3, 16, 16), 3, ["a", "b", "c"])
    loader = dm.train_dataloader()
    first, second = epoch(loader), epoch(loader)
    assert len(first) == len(loader) == 7
    for x, y in first:
        assert x.dtype == torch.uint8 and x.shape[1:] == (3, 16, 16) and y.dtype == torch.int64
    # without a per-image crop in the recipe, training images get the evaluation crop: spread()'s pixels
    everything = dm.spread(50)
    assert fingerprints(torch.cat([x for x, _ in first])) == fingerprints(everything.x)
    assert fingerprints(torch.cat([x for x, _ in second])) == fingerprints(everything.x)
    assert not torch.equal(first[0][0], second[0][0])  # the next epoch is another order
    assert sorted(torch.cat([y for _, y in first]).tolist()) == sorted(everything.y.tolist())
    # statistics: per channel, from the (here: all 50) training images, on the [0, 1] scale
    mean = everything.x.double().div(255).mean((0, 2, 3))
    assert torch.allclose(dm.mean.view(-1).double(), mean, atol=1e-4)


def test_a_root_read_through_litdatas_downloaders_gives_the_local_folders_batches(folder, tmp_path):
    # "local:" goes the way of s3:// and the other URLs (chunks downloaded into the cache, then read), with
    # nothing remote needed; the figures must be those of the folder read in place
    cache = tmp_path / "cache"
    remote, here = data(f"local:{folder}", cache_dir=str(cache)), data(folder)
    assert (remote.classes, remote.sizes) == (here.classes, here.sizes)
    for ours, theirs in zip(epoch(remote.train_dataloader()), epoch(here.train_dataloader()), strict=True):
        assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    for ours, theirs in zip(remote.batches("test"), here.batches("test"), strict=True):
        assert torch.equal(ours[0], theirs[0])
    assert list(cache.rglob("chunk-*.bin"))  # downloaded into the cache asked for


def test_training_workers_outlive_an_epoch_and_crop_each_epoch_afresh(folder):
    import zoo

    crop = zoo.augmentations.build({"name": "random_resized_crop"}).per_image_box
    kept, serial = data(folder, num_workers=2), data(folder)
    kept.train_box = serial.train_box = crop
    loader, reference = kept.train_dataloader(), serial.train_dataloader()
    first = epoch(loader)
    workers = list(loader.loader._iterator._workers)
    second = epoch(loader)
    assert list(loader.loader._iterator._workers) == workers and all(w.is_alive() for w in workers)
    # the kept workers crop as this process does, epoch by epoch: they learn the epoch from the indices
    for ours, theirs in zip(first + second, epoch(reference) + epoch(reference), strict=True):
        assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    assert fingerprints(torch.cat([x for x, _ in first])) != fingerprints(torch.cat([x for x, _ in second]))
    kept.teardown("fit")
    assert not any(w.is_alive() for w in workers)


@pytest.mark.parametrize("extra, message", [
    (["data.root=nowhere"], "streaming: nowhere (data.root) does not exist; it must be a folder written by zoo data"),
    (["ensemble.members=2", "ensemble.bootstrap=true"], "ensemble.bootstrap: the streaming data set streams its"),
    (["data.root=file:///nowhere"], "streaming: file:///nowhere (data.root): LitData reads s3://, gs://"),
])
def test_mistakes_are_one_line_and_leave_no_run_folder(folder, tmp_path, capsys, extra, message):
    from zoo.cli.main import main

    run = tmp_path / "run"
    assert main(["train", str(recipe_file(tmp_path, folder)), "--run-dir", str(run), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not run.exists()


def test_evaluation_images_are_cropped_to_eval_size(folder):
    dm = data(folder, eval_size=24)
    x, _ = next(iter(dm.batches("test")))
    assert x.shape[1:] == (3, 24, 24) and dm.input_shape == (3, 16, 16)


def test_batches_and_samples_mix_the_classes_of_a_folder_written_class_by_class(tmp_path):
    # litdata's own shuffle keeps items in blocks of their chunk: each batch would be one class here
    dm = data(prepared(tmp_path / "prepared", {"train": 48, "val": 6, "test": 6}, by_class=True))
    assert all(len(set(y.tolist())) > 1 for _, y in dm.train_dataloader())
    # and of what sanity, lr-find, zoo augment and a data-dependent init read, the first few are of several
    # classes (the split's first 12 are all of class 0)
    assert len(set(dm.spread(48).y[:12].tolist())) > 1


def recipe_file(tmp_path: Path, root: Path, augment: str = "[{name: flip}]", **data) -> Path:
    settings = {"image_size": 16, "batch_size": 8, "eval_batch_size": 5, "num_workers": 0, **data}
    entries = ", ".join(f"{k}: {v}" for k, v in settings.items())
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "model: {name: mlp, depth: 1, width: 32}\n"
        f"data: {{name: streaming, root: {root}, {entries}}}\n"
        "optimizer: {name: adamw, lr: 0.01}\n"
        "schedule: {name: cosine}\n"
        "trainer: {max_epochs: 2}\n"
        "logger: {wandb: {mode: disabled}}\n"
        f"augment: {augment}\n"
    )
    return path


def test_a_leading_per_image_crop_runs_in_the_workers_and_leaves_the_batch_pipeline(folder, tmp_path):
    from zoo.core.recipe import load
    from zoo.training.fit import prepare_fit

    discovery.load_local([str(BOX)], kind="--plugin")
    recipe = load(recipe_file(tmp_path, folder, "[{name: test_half_box}, {name: flip}]", num_workers=2))
    fit = prepare_fit(recipe, tmp_path / "run")
    assert [spec["name"] for spec in fit.module.augment.specs] == ["flip"]
    dm = fit.data
    assert dm.train_box is not None
    in_workers = torch.cat([x for x, _ in dm.train_dataloader()])
    # every image its own half-size box, not the evaluation crop; drawn from (seed, epoch, image), so the
    # same crops come whichever worker decodes an image, or none does
    assert not set(fingerprints(in_workers)) & set(fingerprints(dm.spread(50).x))
    dm.num_workers = 0
    dm._train = None
    here = torch.cat([x for x, _ in dm.train_dataloader()])
    assert fingerprints(here) == fingerprints(in_workers)


def shards(dm, world: int, monkeypatch, make) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    out = []
    for rank in range(world):
        monkeypatch.setattr(dm, "_rank", lambda rank=rank: (rank, world))
        dm._train = None
        out.append(epoch(make()))
    return out


def test_under_ddp_ranks_step_equally_and_see_every_training_image_and_score_every_evaluation_image_once(
    folder, monkeypatch
):
    # batches of 7: no shard ends on a lone image, left for the next epoch (see lone_last_batch)
    dm = data(folder, batch_size=7)
    everything = fingerprints(dm.spread(50).x)
    ranks = shards(dm, 2, monkeypatch, dm.train_dataloader)
    assert len(ranks[0]) == len(ranks[1])  # an unequal count of steps would hang DDP's gradient reduction
    seen = [fingerprints(torch.cat([x for x, _ in batches])) for batches in ranks]
    assert sorted(set(seen[0]) | set(seen[1])) == everything
    # 50 images on 3 ranks: 17 each, a permutation padded with its first image
    ranks = shards(dm, 3, monkeypatch, dm.train_dataloader)
    seen = [h for batches in ranks for h in fingerprints(torch.cat([x for x, _ in batches]))]
    assert sorted(set(seen)) == everything and len(seen) == 51
    for split in ("val", "test"):
        scored = shards(dm, 2, monkeypatch, lambda split=split: dm.batches(split))
        labels = [y for batches in scored for _, y in batches]
        assert len(torch.cat(labels)) == COUNTS[split]  # no padding, nothing dropped
        whole = torch.cat([x for batches in scored for x, _ in batches])
        monkeypatch.setattr(dm, "_rank", lambda: (0, 1))
        assert torch.equal(whole, torch.cat([x for x, _ in dm.batches(split)]))  # in order, each once


def test_a_stream_resumed_mid_epoch_goes_on_with_the_batches_the_uninterrupted_epoch_had(folder, monkeypatch):
    dm = data(folder, num_workers=2)
    monkeypatch.setattr(dm, "_trainer_epoch", lambda: 1)
    whole = epoch(dm.train_dataloader())
    done = 3
    # Lightning prefetches: the loader has given out a batch more than the trainer has trained on
    stopped = iter(dm.train_dataloader())
    for _ in range(done + 1):
        next(stopped)
    monkeypatch.setattr(dm, "_trainer_batches_done", lambda: done)
    state = dm._train.state_dict()
    del stopped
    again = data(folder, num_workers=2)
    monkeypatch.setattr(again, "_trainer_epoch", lambda: 1)
    again.resume_train_state = state
    loader = again.train_dataloader()
    # as Lightning asks: for the batches left by the length, never for the end of the iteration
    rest = list(itertools.islice(loader, len(loader) - done))
    for (x, y), (x_whole, y_whole) in zip(rest, whole[done:], strict=True):
        assert torch.equal(x, x_whole) and torch.equal(y, y_whole)
    # and the next epoch is the next epoch, not the resumed one again
    for dm_ in (dm, again):
        monkeypatch.setattr(dm_, "_trainer_epoch", lambda: 2)
    pairs = zip(epoch(loader), epoch(dm.train_dataloader()), strict=True)
    assert all(torch.equal(a[0], b[0]) for a, b in pairs)
    for dm_ in (dm, again):
        dm_.teardown("fit")  # the kept workers stop, as at the end of a fit


def test_a_damaged_image_stops_the_run_naming_it_in_one_line_with_the_workers_shut_down(tmp_path, capsys):
    from zoo.cli.main import main

    root = prepared(tmp_path / "prepared", {"train": 20, "val": 10, "test": 10}, bad={"val": [4]})
    run = tmp_path / "run"
    before = set(multiprocessing.active_children())
    # the damaged image is in the validation split: the sanity check before training reads it in a worker
    code = main(["train", str(recipe_file(tmp_path, root, num_workers=2)), "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if "val/b/0004.jpg" in line]
    assert len(lines) == 1 and "data.on_bad_image=stop" in lines[0], err
    assert f"{root}/val" in lines[0] and "Traceback" not in err
    assert set(multiprocessing.active_children()) <= before
    assert not run.exists()


def test_a_training_batch_of_damaged_images_alone_is_an_error_under_ddp_and_left_out_otherwise(
    tmp_path, monkeypatch
):
    from zoo.core.errors import ZooError

    root = prepared(tmp_path / "prepared", {"train": 12, "val": 3, "test": 3}, bad={"train": list(range(12))})
    dm = data(root, batch_size=3, on_bad_image="skip")
    assert epoch(dm.train_dataloader()) == []  # one process: nothing to keep in step with
    monkeypatch.setattr(dm, "_rank", lambda: (1, 2))
    dm._train = None
    with pytest.raises(ZooError, match=r"every image of a training batch is damaged \(3, first: train/"):
        epoch(dm.train_dataloader())


def test_skipped_damaged_images_are_counted_and_logged_and_eval_scores_the_others(tmp_path, capsys):
    import csv

    from zoo.cli.main import main

    bad = {"train": [3, 7], "test": [2]}
    root = prepared(tmp_path / "prepared", {"train": 20, "val": 10, "test": 10}, bad=bad)
    run = tmp_path / "run"
    recipe = recipe_file(tmp_path, root, on_bad_image="skip")
    assert main(["train", str(recipe), "--run-dir", str(run), "trainer.max_epochs=1"]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 damaged images in training epoch 0 (first: train/" in err
    assert "skipped 1 damaged image in the test split (first: test/c/0002.jpg)" in err
    with open(run / "logs" / "metrics.csv") as f:
        logged = [row["data/skipped_images"] for row in csv.DictReader(f) if row.get("data/skipped_images")]
    assert logged == ["2.0"]
    assert main(["eval", str(run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["samples"] == 9
    assert main(["predict", str(run), "--out", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    right = sum(row["prediction"] == row["label"] for row in rows)
    assert len(rows) == 9 and right / 9 == pytest.approx(report["acc"])


# 50 training images in batches of 8: 7 steps an epoch, 14 in all. Without workers: the workers' part of a
# resume is test_a_stream_resumed_mid_epoch_goes_on_with_the_batches_the_uninterrupted_epoch_had's
RESUMABLE = ["trainer.max_epochs=2", "performance.steps_per_execution=1"]


@pytest.fixture(scope="module")
def uninterrupted(folder, tmp_path_factory):
    from zoo.training.run import train

    tmp = tmp_path_factory.mktemp("uninterrupted")
    return train(recipe_file(tmp, folder), RESUMABLE, run_dir=tmp / "run", progress=False)


def resume_matches(run: Path, step: int, uninterrupted):
    """Resume ``run``, stopped with a checkpoint at ``step``: it ends with the uninterrupted run's figures and
    final weights (best.ckpt may be from an epoch before the stop, so its figures alone prove little)."""
    from zoo.training.run import train

    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step
    resumed = train(resume=run, progress=False)
    assert resumed.metrics == uninterrupted.metrics
    ours, theirs = (torch.load(Path(r) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
                    for r in (run, uninterrupted.run_dir))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    return resumed


def test_killed_mid_epoch_then_resumed_ends_with_the_uninterrupted_figures(
    folder, tmp_path, monkeypatch, capsys, uninterrupted
):
    from run_stops import CrashAt, with_callback

    from zoo.cli.main import main
    from zoo.training.run import train

    recipe, run = recipe_file(tmp_path, folder), tmp_path / "run"
    with monkeypatch.context() as patch:
        with_callback(patch, CrashAt(10))  # mid-epoch 2: it goes on from the end of epoch 1
        with pytest.raises(SystemExit):
            train(recipe, RESUMABLE, run_dir=run, progress=False)
    resumed = resume_matches(run, 7, uninterrupted)
    # zoo eval of a streamed run scores every test image once, as the run's own test pass did
    assert main(["eval", str(run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["samples"] == COUNTS["test"] and report["acc"] == resumed.test_acc


def test_stopped_by_a_signal_mid_epoch_then_resumed_ends_with_the_uninterrupted_figures(
    folder, tmp_path, uninterrupted
):
    from zoo.training.checkpoints import Interrupted
    from zoo.training.run import train

    faults = TESTS / "plugins" / "faults.py"
    discovery.load_local([str(faults)], kind="--plugin")
    recipe, run = recipe_file(tmp_path, folder), tmp_path / "run"
    monitor = f"{{name: signal_at_step, step: 11, marker: {tmp_path / 'fired'}, signal_name: SIGTERM}}"
    with recipe.open("a") as f:
        f.write(f"monitors: [{monitor}]\n")
    with pytest.raises(Interrupted):
        train(recipe, RESUMABLE, run_dir=run, progress=False)
    # the checkpoint holds the loader's place: 4 of epoch 2's 7 batches done
    resume_matches(run, 11, uninterrupted)


def test_two_process_ddp_on_streamed_data_scores_every_test_image_once(folder, tmp_path, capsys):
    from test_ddp import DDP, zoo

    from zoo.cli.main import main

    recipe = recipe_file(tmp_path, folder)
    # one step: a network that gets some images wrong, so that an image scored twice or never shows
    steps = ["trainer.max_steps=1", "optimizer.lr=1e-6"]
    out = zoo("train", str(recipe), *DDP, *steps, "--json", cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
    assert summary["world_size"] == 2 and summary["test_acc"] < 1
    # the two ranks' test passes together scored each test image once: one process scoring them agrees exactly
    assert main(["eval", str(tmp_path / summary["run_dir"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["samples"] == COUNTS["test"] and report["acc"] == summary["test_acc"]


def test_a_streamed_run_exports_checked_on_its_first_test_images(uninterrupted, folder, tmp_path):
    from zoo.core.contracts import split_size
    from zoo.export.run import export_run

    done = export_run(uninterrupted.run_dir, "torchscript", tmp_path / "export")
    size = split_size(data(folder), "test")
    # every test image of this small split, decoded batch by batch as evaluation decodes them
    assert done.parity.passed and done.parity.samples == min(size, 1000) > 0
