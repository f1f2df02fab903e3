"""User mistakes end in a short message naming what is wrong and where, exit code 2, no traceback.

Every case drives the real command line (``zoo.cli.main`` in this process; one case also as a real
``python -m zoo`` process) from an empty working directory, and checks that no run folder is left
behind. Training itself is switched off: if a mistake slipped through to ``Trainer.fit``, the test
fails there instead of training (or starting 64 processes).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

from zoo.cli.main import main
from zoo.core import discovery
from zoo.core.errors import RegistryError

REPO = Path(__file__).resolve().parent.parent
RECIPE = str(REPO / "recipes" / "mlp-digits.yaml")
QUICK = ["trainer.max_epochs=1", "model.width=8"]
REAL_FIT = pl.Trainer.fit  # saved before the workspace fixture replaces it


# --- helpers ------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    """An empty working directory (``runs/`` lands here), and no training at all."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZOO_RUN_DIR", raising=False)  # train() sets it; keep it out of later tests
    import lightning.pytorch as pl

    def refuse(*args, **kwargs):
        raise AssertionError("Trainer.fit was reached: the mistake was not caught before training")

    monkeypatch.setattr(pl.Trainer, "fit", refuse)
    return tmp_path


def cli(capsys, *args: str) -> tuple[object, str]:
    """Run ``zoo ARGS`` in this process: (exit status, stderr); an escaping exception lands in stderr."""
    try:
        status: object = main(list(args))
    except SystemExit as exc:
        status = exc.code
    except Exception:  # noqa: BLE001 -- what a real process would print before dying with status 1
        status = 1
        print(traceback.format_exc(), file=sys.stderr)
    return status, capsys.readouterr().err


def assert_user_error(result: tuple[object, str], *fragments: str, where: Path | None = None) -> str:
    status, err = result
    assert "Traceback" not in err, err
    assert status == 2, err
    assert err.startswith("zoo: error: "), err
    assert len(err.strip().splitlines()) <= 3, err  # a message, not a report
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    if where is not None:
        runs = where / "runs"
        assert not runs.exists(), (
            f"a run folder was left behind: {list(runs.iterdir())}"
        )
    return err


def _image_folder(root: Path, per_class: int, classes=("ant", "bee")) -> Path:
    rng = np.random.default_rng(0)
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i:03d}.{'jpg' if i % 2 else 'png'}")
    return root


def _data(root: Path, **extra) -> str:
    params = "".join(f", {k}: {v}" for k, v in extra.items())
    return f"data={{name: imagefolder, root: {root}{params}}}"


def _recipe(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"base: {RECIPE}\n{body}")
    return str(path)


# --- recipes, components and parameters ---------------------------------------------------------------
@pytest.mark.parametrize(
    "override, fragments",
    [
        (
            "model.name=mpl",
            ["mlp-digits.yaml: model: unknown models 'mpl' (did you mean: mlp?)", "known models: mlp"],
        ),
        (
            "model.widht=16",
            ["mlp-digits.yaml: model: unknown parameter 'widht' for models 'mlp' (did you mean: width"],
        ),
        ("model.width=wide", ["mlp-digits.yaml: model.width: Input should be a valid integer", "got 'wide'"]),
        ("optimizer.lr=-0.1", ["mlp-digits.yaml: optimizer.lr: Input should be greater than 0"]),
        (
            "optimizer.lrr=0.1",
            ["optimizer: unknown parameter 'lrr' for optimizers 'adamw' (did you mean: lr?)"],
        ),
        (
            "trainer.max_epoch=3",
            ["mlp-digits.yaml: unknown key 'trainer.max_epoch'", "(did you mean: max_epochs"],
        ),
        ("modle.depth=3", ["mlp-digits.yaml: unknown key 'modle' (did you mean: model?)"]),
        ("model..depth=3", ["override 'model..depth=3': expected key.sub=value"]),
    ],
    ids=[
        "unknown-model",
        "unknown-param",
        "mistyped-param",
        "out-of-range",
        "optimizer-typo",
        "trainer-typo",
        "unknown-section",
        "bad-override",
    ],
)
def test_bad_component_or_parameter(capsys, workspace, override, fragments):
    assert_user_error(cli(capsys, "train", "mlp-digits", override), *fragments, where=workspace)


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("model: {name: mlp\ndata: digits\n", ["bad.yaml:2:", "not valid YAML"]),
        ("- model\n- data\n", ["bad.yaml: a recipe must be a YAML mapping, got list"]),
        (f"base: {RECIPE}\nmodle: {{depth: 3}}\n", ["bad.yaml: unknown key 'modle' (did you mean: model?)"]),
        (f"base: {RECIPE}\ntrainer: {{max_epochs: many}}\n", ["bad.yaml", "trainer.max_epochs"]),
        ("base: nowhere.yaml\n", ["bad.yaml: base: recipe nowhere.yaml not found"]),
    ],
    ids=["bad-yaml", "not-a-mapping", "unknown-key", "wrong-type", "missing-base"],
)
def test_bad_recipe_file(capsys, workspace, text, fragments):
    (workspace / "bad.yaml").write_text(text)
    assert_user_error(cli(capsys, "train", str(workspace / "bad.yaml")), *fragments, where=workspace)


def test_unknown_recipe_name(capsys, workspace):
    assert_user_error(
        cli(capsys, "train", "mlp-digts"),
        "recipe mlp-digts not found (did you mean: mlp-digits",
        where=workspace,
    )


def test_python_tags_in_a_recipe_are_refused_and_never_run(capsys, workspace):
    marker = workspace / "ran"
    command = f"!!python/object/apply:os.system ['touch {marker}']"
    recipe = _recipe(workspace, "evil.yaml", f"name: {command}\n")
    assert_user_error(
        cli(capsys, "train", recipe), "evil.yaml:2:", "not valid YAML", "python/object/apply:os.system"
    )
    assert not marker.exists()
    # a tag in a command-line override is plain text, never a constructor
    assert_user_error(
        cli(capsys, "train", "mlp-digits", f"model.name={command}"), "unknown models", where=workspace
    )
    assert not marker.exists()


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(RegistryError, match="unknown models 'mpl'"):
        main(["--debug", "train", "mlp-digits", "model.name=mpl"])


# --- data ---------------------------------------------------------------------------------------------
def test_missing_data_directory(capsys, workspace):
    err = assert_user_error(
        cli(capsys, "train", "mlp-digits", _data(Path("nowhere")), *QUICK),
        "imagefolder: no directory nowhere",
        where=workspace,
    )
    assert str(workspace / "nowhere") in err  # where it looked, resolved


def test_corrupt_jpeg_is_named(capsys, workspace):
    root = _image_folder(workspace / "imgs", 10)
    bad = root / "bee" / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG" * 4)
    assert_user_error(
        cli(capsys, "train", "mlp-digits", _data(root), *QUICK),
        f"cannot decode {bad}",
        "not an image or a damaged one",
        where=workspace,
    )
    assert not list(root.glob(".zoo-cache-*"))  # no cache of a half-decoded folder


def test_truncated_jpeg_is_named(capsys, workspace):
    root = _image_folder(workspace / "imgs", 10)
    bad = root / "ant" / "cut.jpg"
    bad.write_bytes((root / "ant" / "001.jpg").read_bytes()[:120])
    assert_user_error(
        cli(capsys, "train", "mlp-digits", _data(root, cache="false"), *QUICK),
        f"cannot decode {bad}",
        where=workspace,
    )


def test_broken_link_in_an_image_folder_is_named(capsys, workspace):
    root = _image_folder(workspace / "imgs", 10)
    link = root / "ant" / "gone.png"
    link.symlink_to(workspace / "deleted.png")
    assert_user_error(
        cli(capsys, "train", "mlp-digits", _data(root), *QUICK),
        f"imagefolder: cannot read {link}: No such file or directory",
        where=workspace,
    )


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files whatever their mode"
)
def test_unreadable_image_is_named(capsys, workspace):
    root = _image_folder(workspace / "imgs", 10)
    locked = root / "bee" / "003.jpg"
    locked.chmod(0)
    try:
        assert_user_error(
            cli(capsys, "train", "mlp-digits", _data(root), *QUICK),
            f"imagefolder: cannot read {locked}: Permission denied",
            where=workspace,
        )
    finally:
        locked.chmod(0o644)


@pytest.mark.parametrize(
    "classes, fragments",
    [
        ("[bee, wasp]", ["data.classes: 'wasp' is not a class folder of", "its class folders: ant, bee"]),
        ("[bee, ant, bee]", ["data.classes: 'bee' is listed twice"]),
    ],
    ids=["not-a-folder", "twice"],
)
def test_imagefolder_classes_that_are_not_its_folders(capsys, workspace, classes, fragments):
    root = _image_folder(workspace / "imgs", 10)
    assert_user_error(
        cli(capsys, "train", "mlp-digits", _data(root, classes=classes), *QUICK), *fragments, where=workspace
    )
    assert not list(root.glob(".zoo-cache-*"))


@pytest.mark.parametrize(
    "data, fragments",
    [
        # 3 images a class: 10% for val rounds to none of them
        ("imagefolder", ["is too small for the split: train 4, val 0, test 2", "val_fraction=0.1"]),
        (
            "data.val_fraction=0.0001",
            ["digits: val_fraction=0.0001", "leave 1 of the 1797 images for val", "raise data.val_fraction"],
        ),
        (
            "data={name: synthetic, shape: [1, 8, 8], n_train: 1, n_val: 1, n_test: 1}",
            ["data: synthetic is too small for the split: train 1, val 1, test 1", "data.n_train"],
        ),
    ],
    ids=["imagefolder", "digits", "synthetic"],
)
def test_data_set_too_small_for_the_split(capsys, workspace, data, fragments):
    if data == "imagefolder":
        root = _image_folder(workspace / "tiny", 3)
        data = _data(root)
        fragments = [f"imagefolder: {root} " + fragments[0], *fragments[1:]]
    assert_user_error(cli(capsys, "train", "mlp-digits", data, *QUICK), *fragments, where=workspace)


# --- devices ------------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_asked_for_where_there_is_none(capsys, workspace):
    for accelerator in ("gpu", "cuda"):
        assert_user_error(
            cli(capsys, "train", "mlp-digits", f"trainer.accelerator={accelerator}", *QUICK),
            "trainer.accelerator: a GPU was asked for, but PyTorch sees no CUDA device",
            where=workspace,
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_more_gpus_than_exist(capsys, workspace):
    asked = torch.cuda.device_count() + 1
    assert_user_error(
        cli(capsys, "train", "mlp-digits", "trainer.accelerator=gpu", f"trainer.devices={asked}", *QUICK),
        "trainer: You requested gpu",
        "your machine only has",
        where=workspace,
    )


def test_more_cpu_processes_than_cores(capsys, workspace):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert_user_error(
        cli(capsys, "train", "mlp-digits", "trainer.accelerator=cpu", "trainer.devices=64", *QUICK),
        "trainer.devices: 64 CPU processes",
        f"{cores} cores",
        where=workspace,
    )


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("trainer.strategy=bogus", "strategy='bogus'"),
        ("trainer.precision=bogus", "Precision 'bogus' is invalid"),
    ],
)
def test_trainer_arguments_lightning_refuses(capsys, workspace, override, fragment):
    assert_user_error(
        cli(capsys, "train", "mlp-digits", override, *QUICK), "trainer: ", fragment, where=workspace
    )


# --- plugins ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "plugin, source, fragments",
    [
        (
            "broken.py",
            "import torch\nimport zoo_missing_dependency\n",
            [
                "(recipe plugin) failed to import: ModuleNotFoundError:",
                "No module named 'zoo_missing_dependency'",
                "broken.py:2)",
            ],
        ),
        (
            "typo.py",
            "def f(:\n    pass\n",
            ["typo.py (recipe plugin) failed to import: SyntaxError", "(typo.py, line 1)"],
        ),
        (
            "raises.py",
            "raise ImportError('needs libfoo 2.0')\n",
            ["failed to import: ImportError: needs libfoo 2.0"],
        ),
        (
            "zoo_no_such_plugin_module",
            None,
            ["plugin zoo_no_such_plugin_module (recipe plugin) failed to import: ModuleNotFoundError"],
        ),
        ("absent.py", None, ["plugin file", "absent.py not found"]),
    ],
    ids=["missing-dependency", "syntax-error", "import-error", "no-such-module", "no-such-file"],
)
def test_recipe_plugin_that_fails_to_import(capsys, workspace, plugin, source, fragments):
    if source is not None:
        (workspace / plugin).write_text(source)
    recipe = _recipe(workspace, "with-plugin.yaml", f"plugins: [{plugin}]\n")
    err = assert_user_error(cli(capsys, "train", recipe), *fragments, where=workspace)
    assert "with-plugin.yaml" in err  # the recipe that named it


def test_installed_plugin_that_fails_to_import_warns_and_only_its_components_fail(capsys, workspace, monkeypatch):
    site = workspace / "site"
    info = site / "zoo_broken_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[zoo.plugins]\nfancy = zoo_broken_plugin_mod\n")
    (site / "zoo_broken_plugin_mod.py").write_text("import zoo_missing_dependency\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(discovery._state, "loaded", False)  # discover again, with the new package in sight
    status, err = cli(capsys, "show", "mlp-digits")
    assert status == 0, err
    assert err.strip().splitlines() == [
        "zoo: warning: plugin zoo-broken-plugin (entry point 'fancy' = zoo_broken_plugin_mod) failed to import: "
        "ModuleNotFoundError: No module named 'zoo_missing_dependency' "
        f"(at {site / 'zoo_broken_plugin_mod.py'}:1); fix or reinstall zoo-broken-plugin, "
        "`pip uninstall zoo-broken-plugin`, or set ZOO_DISABLE_PLUGINS=zoo-broken-plugin so zoo stops loading it"
    ]
    assert_user_error(
        cli(capsys, "train", "mlp-digits", "model.activation=fancy_act", *QUICK),
        "model.activation: unknown activations 'fancy_act'",
        "plugin zoo-broken-plugin (entry point 'fancy' = zoo_broken_plugin_mod) failed to import",
        "No module named 'zoo_missing_dependency'",
        where=workspace,
    )


def test_a_plugin_that_calls_sys_exit_is_a_plugin_failure(capsys, workspace):
    (workspace / "quits.py").write_text("import sys\nsys.exit(0)\n")
    recipe = _recipe(workspace, "quits.yaml", "plugins: [quits.py]\n")
    assert_user_error(
        cli(capsys, "train", recipe, *QUICK),
        "quits.py (recipe plugin) called sys.exit(0) while being imported",
        where=workspace,
    )


# --- run folders and checkpoints ----------------------------------------------------------------------
def _run_folder(path: Path) -> Path:
    """A folder zoo recognizes as one of its runs (by its marker), holding a file to keep."""
    path.mkdir()
    (path / ".zoo-run").write_text("{}")
    (path / "keep.txt").write_text("precious")
    return path


def test_existing_run_dir_is_refused_and_kept(capsys, workspace):
    _run_folder(workspace / "mine")
    assert_user_error(
        cli(capsys, "train", "mlp-digits", *QUICK, "--run-dir", "mine"),
        "run directory mine already exists",
        "--overwrite",
        where=workspace,
    )
    assert (workspace / "mine" / "keep.txt").read_text() == "precious"


def test_run_dir_that_is_a_file_is_refused(capsys, workspace):
    (workspace / "notes.txt").write_text("mine")
    assert_user_error(
        cli(capsys, "train", "mlp-digits", *QUICK, "--run-dir", "notes.txt"),
        "notes.txt",
        "not a directory",
        where=workspace,
    )
    assert (workspace / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["eval", "runs/nope"], ["runs/nope: no such run directory or checkpoint"]),
        (["eval", "empty-run"], ["empty-run: no ensemble.ckpt or checkpoints/best.ckpt"]),
        (["eval", "short.ckpt"], ["short.ckpt: not a readable checkpoint"]),
        (["eval", "junk.ckpt"], ["junk.ckpt: not a readable checkpoint"]),
        (["predict", "runs/nope"], ["runs/nope: no such run directory or checkpoint"]),
        (["train", "--resume", "runs/nope"], ["--resume runs/nope: not a run folder (no recipe.yaml in it)"]),
        (["train", "mlp-digits", "--resume", "empty-run"], ["--resume takes the run folder alone"]),
    ],
    ids=[
        "eval-missing",
        "eval-empty",
        "eval-short",
        "eval-junk",
        "predict-missing",
        "resume-missing",
        "resume-with-recipe",
    ],
)
def test_run_folder_or_checkpoint_that_is_not_one(capsys, workspace, args, fragments):
    (workspace / "empty-run").mkdir()
    (workspace / "short.ckpt").write_bytes(b"junk")
    (workspace / "junk.ckpt").write_bytes(b"not a checkpoint, just some text\n")
    assert_user_error(cli(capsys, *args), *fragments)
    assert not (workspace / "runs").exists()


def test_eval_of_a_checkpoint_whose_weights_do_not_fit_its_recipe(capsys, workspace):
    from zoo.core.recipe import load

    recipe = load("mlp-digits").to_dict()
    hp = {"recipe": recipe, "input_shape": [1, 8, 8], "num_classes": 10}
    torch.save(
        {"state_dict": {"stray.weight": torch.zeros(1)}, "hyper_parameters": hp}, workspace / "odd.ckpt"
    )
    assert_user_error(cli(capsys, "eval", "odd.ckpt"), "odd.ckpt: its weights do not fit")


# --- the command line itself --------------------------------------------------------------------------
def test_overrides_and_debug_may_follow_options(capsys, workspace):
    assert_user_error(
        cli(capsys, "train", "mlp-digits", "--run-dir", "mine", "model.name=mpl"),
        "unknown models 'mpl'",
        where=workspace,
    )
    status, err = cli(capsys, "train", "mlp-digits", "model.name=mpl", "--debug")
    assert (
        status == 1 and "UnknownComponent: " in err and "unknown models 'mpl'" in err
    )  # raised: debug shows it


def test_a_batch_size_that_leaves_one_sample_over_does_not_crash_batch_norm():
    import zoo

    dm = zoo.datasets.build({"name": "synthetic", "shape": [4], "n_train": 65, "batch_size": 64})
    assert min(len(y) for _, y in dm.train_dataloader()) >= 2


# --- one real process ---------------------------------------------------------------------------------
def test_real_process_refuses_a_code_tag_with_exit_2_and_no_traceback(workspace):
    # The cheapest real `zoo train` (nothing past reading the recipe), and the one that matters most:
    # a recipe that would run a shell command is refused and the command never runs.
    marker = workspace / "ran"
    recipe = _recipe(workspace, "evil.yaml", f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop("ZOO_RUN_DIR", None)
    out = subprocess.run(
        [sys.executable, "-m", "zoo", "train", recipe, *QUICK],
        check=False,
        capture_output=True,
        text=True,
        cwd=workspace,
        env=env,
        timeout=300,
    )
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 2, out.stderr
    # library warnings may come first; the error itself is the last thing said
    message = out.stderr[out.stderr.find("zoo: error: ") :]
    assert_user_error(
        (out.returncode, message), f"{recipe}:2:", "python/object/apply:os.system", where=workspace
    )
    assert not marker.exists()


def test_eval_does_not_run_a_plugin_that_a_checkpoint_names(tmp_path, capsys, workspace):
    """A checkpoint's recipe may list plugin files; eval imports one only when the user names it too."""
    import torch

    from zoo.core.recipe import load
    from zoo.training.classifier import Classifier

    marker = tmp_path / "plugin-ran"
    plugin = tmp_path / "evilplug.py"
    plugin.write_text(f"open({str(marker)!r}, 'w').close()\n")
    recipe = load("mlp-digits", ["model.width=8"]).to_dict()
    recipe["plugins"] = [str(plugin)]
    model = Classifier(recipe, (1, 8, 8), 10)
    torch.save({"state_dict": model.state_dict(),
                "hyper_parameters": {"recipe": recipe, "input_shape": [1, 8, 8], "num_classes": 10}},
               tmp_path / "model.ckpt")
    assert main(["eval", str(tmp_path / "model.ckpt")]) == 2
    err = capsys.readouterr().err
    assert f"names the plugin {plugin}" in err and f"pass --plugin {plugin}" in err and "Traceback" not in err
    assert not marker.exists()
    # named by the user, it is trusted: it runs, and the model evaluates
    assert main(["eval", str(tmp_path / "model.ckpt"), "--plugin", str(plugin)]) == 0
    assert marker.exists()


def test_overwrite_keeps_the_old_run_when_the_new_one_is_a_mistake(capsys, workspace):
    run = _run_folder(workspace / "mine")
    assert_user_error(
        cli(capsys, "train", "mlp-digits", "data.val_fraction=0.0001", "--run-dir", str(run), "--overwrite"),
        "raise data.val_fraction",
    )
    assert (run / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in workspace.iterdir()) == ["mine"]  # nothing set aside is left over


def test_image_augmentation_on_flat_inputs_is_refused_before_training(capsys, workspace):
    assert_user_error(
        cli(capsys, "train", "mlp-digits", "data={name: synthetic, shape: [4]}", "augment=[crop]"),
        "augment[0]: RandomCrop works on images (channels, height, width)", "shape (4,)", where=workspace,
    )
    # mixup blends whole samples: any shape will do
    status, err = cli(capsys, "train", "mlp-digits", "data={name: synthetic, shape: [4]}", "augment=[mixup]")
    assert "augment[0]" not in err


# --- every other failure before training: one line, exit 2, no folder ------------------------------------
@pytest.mark.parametrize(
    "override, fragments",
    [
        ("seed=-1", ["seed: Input should be greater than or equal to 0, got -1"]),
        ("seed=99999999999", ["seed: Input should be less than or equal to 4294967295"]),
        ("trainer.callbacks=[{class_path: ModelCheckpoint}]", ["trainer.callbacks[0]: ModelCheckpoint: zoo writes"]),
        ("trainer.logger=false", ["trainer.logger: zoo passes its own loggers", "logger.wandb.mode=disabled",
                                  "logger.extra"]),
        ("optimizer.lr=.inf", ["optimizer.lr: inf is not a finite number"]),
        ("regularization.l2=.nan", ["regularization.l2: nan is not a finite number"]),
        ("model.init={name: normal, std: -1}", ["model.init.std: Input should be greater than or equal to 0"]),
        ("model.norm={name: batch, eps: 0}", ["model.norm.eps: Input should be greater than 0"]),
        ("name=../x", ["name: a run name is one folder name under runs/", "got '../x'"]),
        ("name=/tmp/elsewhere", ["name: a run name is one folder name under runs/"]),
        ('name="caf\\uDCFF"', ["name: a run name must be valid UTF-8 text"]),
        ("data.split_seed=-5", ["data.split_seed: Input should be greater than or equal to 0"]),
        # the schedule is built inside fit; a trial build before the run folder finds what it refuses
        ("schedule={name: cosine, warmup_epochs: 1000}", ["schedule.warmup_epochs: a warmup of 1000 epochs"]),
    ],
    ids=["negative-seed", "huge-seed", "trainer-callbacks", "trainer-logger", "inf-lr", "nan-penalty",
         "negative-std", "zero-eps", "name-escapes", "absolute-name", "surrogate-name", "negative-split-seed",
         "schedule-refused"],
)
def test_values_that_would_fail_later_are_refused_up_front(capsys, workspace, override, fragments):
    assert_user_error(cli(capsys, "train", "mlp-digits", override, *QUICK), *fragments, where=workspace)
    assert not (workspace.parent / "x").exists() and not Path("/tmp/elsewhere").exists()


def test_devices_a_cpu_cannot_have(capsys, workspace):
    assert_user_error(
        cli(capsys, "train", "mlp-digits", "trainer.accelerator=cpu", "trainer.devices=[0,1,2]", *QUICK),
        "trainer: TypeError: `devices` selected with `CPUAccelerator` should be an int > 0",
        where=workspace,
    )


def test_command_line_bytes_that_are_not_utf8(capsys, workspace):
    # what Python makes of `zoo train mlp-digits name=$'\xff'` in a UTF-8 locale
    assert_user_error(cli(capsys, "train", "mlp-digits", "name=\udcff"), "is not valid UTF-8 text", where=workspace)


def test_one_class_of_data(capsys, workspace):
    root = _image_folder(workspace / "one", 10, classes=("ant",))
    assert_user_error(
        cli(capsys, "train", "mlp-digits", _data(root), *QUICK),
        "data: imagefolder has 1 class; a classifier needs at least 2",
        where=workspace,
    )


def test_recipe_files_past_the_limits(capsys, workspace):
    (workspace / "latin1.yaml").write_bytes(f"base: {RECIPE}\nname: caf\xe9\n".encode("latin-1"))
    assert_user_error(cli(capsys, "train", "latin1.yaml"), "latin1.yaml: not UTF-8 text (byte 0xe9 at offset",
                      where=workspace)
    (workspace / "deep.yaml").write_text("a: " + "[" * 3000 + "]" * 3000 + "\n")
    assert_user_error(cli(capsys, "train", "deep.yaml"), "deep.yaml:1:", "nested deeper than 50 levels",
                      where=workspace)
    for i in range(1000):
        (workspace / f"b{i}.yaml").write_text(f"base: b{i + 1}.yaml\n")
    (workspace / "b1000.yaml").write_text(f"base: {RECIPE}\n")
    assert_user_error(cli(capsys, "train", "b0.yaml"), "b0.yaml: its chain of base: recipes is longer than 32",
                      where=workspace)


def test_a_yaml_alias_bomb_is_refused_and_not_echoed(capsys, workspace):
    # nine levels of nine aliases: 366 bytes that expand to 387 million values
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    (workspace / "bomb.yaml").write_text("\n".join(lines) + "\n")
    for command in ("train", "show"):
        err = assert_user_error(cli(capsys, command, "bomb.yaml"), "bomb.yaml:", "aliases expand to", "past the limit",
                                where=workspace)
        assert len(err) < 400
    one_line = "[" + ", ".join(["&x [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + ["*x"] * 2000) + "]"
    err = assert_user_error(cli(capsys, "show", "mlp-digits", f"model.width={one_line}"), "override model.width:",
                            "aliases expand to")
    assert len(err) < 400


def test_long_values_are_cut_short_in_messages(capsys, workspace):
    err = assert_user_error(cli(capsys, "train", "mlp-digits", f"model.width=[{', '.join(['7'] * 5000)}]"),
                            "model.width: Input should be a valid integer", "...", where=workspace)
    assert len(err) < 400


def test_a_component_whose_factory_fails_is_named_by_its_recipe_key(capsys, workspace):
    (workspace / "bad_act.py").write_text(
        "from zoo import activations\n\n"
        "@activations.register('grumpy')\n"
        "def grumpy(level: float = 1.0):\n"
        "    '''An activation that refuses to be built.'''\n"
        "    raise ValueError(f'level {level} is not grumpy enough')\n"
    )
    recipe = _recipe(workspace, "grumpy.yaml", "plugins: [bad_act.py]\nmodel: {activation: grumpy}\n")
    assert_user_error(
        cli(capsys, "train", recipe, *QUICK),
        "model.activation: activation 'grumpy' (plugin file ",
        "bad_act.py) failed to build: ValueError: level 1.0 is not grumpy enough (at ",
        where=workspace,
    )


def test_an_unforeseen_error_before_training_is_one_line_and_leaves_nothing(capsys, workspace, monkeypatch):
    import zoo.training.fit as fit

    def surprise(*args, **kwargs):
        raise RuntimeError("something nobody foresaw\nwith a second line")

    monkeypatch.setattr(fit, "make_trainer", surprise)
    err = assert_user_error(cli(capsys, "train", "mlp-digits", *QUICK), "RuntimeError: something nobody foresaw with a",
                            "--debug shows the traceback", where=workspace)
    assert len(err.strip().splitlines()) == 1


def test_a_run_dir_that_cannot_be_written(capsys, workspace, full_disk):
    assert_user_error(cli(capsys, "train", "mlp-digits", *QUICK, "--run-dir", "/proc/zoo-cannot/run"),
                      "--run-dir /proc/zoo-cannot/run: cannot write there", where=workspace)
    assert_user_error(cli(capsys, "train", "mlp-digits", *QUICK, "--run-dir", "/dev/null/run"),
                      "--run-dir /dev/null/run: cannot write there: Not a directory", where=workspace)
    # the first files of a run (its .zoo-run marker, recipe.yaml) are written whole or not at all, and the
    # one the disk refused is named
    err = assert_user_error(cli(capsys, "train", "mlp-digits", *QUICK, "--run-dir", "full/run"),
                            "nothing was written there", where=workspace)
    assert re.search(r"no space left on full/run/(\.zoo-run|recipe\.yaml):", err), err
    assert not (workspace / "full").exists()


def _small_checkpoint(folder: Path) -> Path:
    from zoo.core.recipe import load
    from zoo.training.classifier import Classifier

    recipe = load("mlp-digits", ["model.width=8"]).to_dict()
    model = Classifier(recipe, (1, 8, 8), 10)
    hp = {"recipe": recipe, "input_shape": [1, 8, 8], "num_classes": 10}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hp}, folder / "model.ckpt")
    return folder / "model.ckpt"


def test_eval_and_predict_on_data_or_files_that_do_not_fit(capsys, workspace):
    ckpt = str(_small_checkpoint(workspace))
    assert_user_error(cli(capsys, "eval", ckpt, "data={name: synthetic, shape: [3, 8, 8]}"),
                      "the model takes inputs of shape (1, 8, 8), the data has (3, 8, 8)")
    assert_user_error(cli(capsys, "eval", ckpt, "data={name: synthetic, shape: [1, 8, 8], num_classes: 3}"),
                      "the model has 10 classes, the data 3")
    (workspace / "out").mkdir()
    assert_user_error(cli(capsys, "predict", ckpt, "--out", "out"), "--out out: a directory; name the CSV file")
    assert_user_error(cli(capsys, "eval"), "zoo eval: name the trained model: a run folder or a checkpoint")


def test_lr_find_write_does_not_replace_a_file_unasked(capsys, workspace):
    (workspace / "r.yaml").write_text(f"base: {RECIPE}\n")
    (workspace / "r.lr.yaml").write_text("# mine\n")
    assert_user_error(cli(capsys, "lr-find", "r.yaml", "--write"), "r.lr.yaml exists already; pass --overwrite")
    assert (workspace / "r.lr.yaml").read_text() == "# mine\n"


def test_output_cut_short_by_its_reader_is_no_error(workspace):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=workspace, env=env)
    if sys.platform == "linux":
        import fcntl

        # a pipe of one page (F_SETPIPE_SZ), far less than the 14 kB `zoo list` writes: it cannot finish
        # writing before the reader goes, whatever the timing
        fcntl.fcntl(proc.stdout.fileno(), 1031, 4096)
    assert proc.stdout.readline()  # `zoo list | head -1`: one line read, then the pipe closes
    proc.stdout.close()
    proc.wait(timeout=120)
    assert proc.returncode == 141 and proc.stderr.read() == b""  # as a process ended by SIGPIPE; nothing said


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda root: (root / "bee" / "loop").symlink_to("."), "bee/loop links back up to {root}/bee, a loop"),
        (lambda root: (root / "bee" / "up").symlink_to(".."), "bee/up links back up to {root}, a loop"),
        (lambda root: (root / "bee" / "ants").symlink_to("../ant"),
         "bee/ants links to {root}/ant, outside its class folder"),
        (lambda root: (root / "bee" / "far").symlink_to(root.parent), "bee/far links back up to"),
        (lambda root: (root / "bee" / "usr").symlink_to("/usr"), "bee/usr links to /usr, outside its class folder"),
        (lambda root: os.mkfifo(root / "bee" / "x.jpg"), "bee/x.jpg is not a regular file (a pipe or a device?)"),
    ],
    ids=["loop", "up", "other-class", "ancestor", "outside", "named-pipe"],
)
def test_image_folder_links_that_loop_or_leave_their_class_and_pipes(capsys, workspace, make, fragment):
    root = _image_folder(workspace / "imgs", 6)
    make(root)
    assert_user_error(cli(capsys, "train", "mlp-digits", _data(root), *QUICK), fragment.format(root=root),
                      where=workspace)


def test_image_folder_reads_linked_files_and_class_folders(workspace):
    import zoo

    pool = _image_folder(workspace / "pool", 6)
    root = workspace / "imgs"
    (root / "ant").mkdir(parents=True)
    for f in (pool / "ant").iterdir():
        (root / "ant" / f.name).symlink_to(f)  # image files may link anywhere
    (root / "bee").symlink_to(pool / "bee")  # and so may a class folder itself
    (root / "ant" / "more").mkdir()
    (root / "ant" / "more" / "again").symlink_to(pool / "ant")  # a link out of its class folder: refused
    with pytest.raises(zoo.ZooError, match="outside its class folder"):
        zoo.datasets.build({"name": "imagefolder", "root": str(root), "cache": False})
    (root / "ant" / "more" / "again").unlink()
    dm = zoo.datasets.build({"name": "imagefolder", "root": str(root), "cache": False})
    assert len(dm.train) + len(dm.val) + len(dm.test) == 12


# --- hostile files and values ---------------------------------------------------------------------------
class _Hung(Exception):
    pass


def bounded_cli(capsys, *args: str, seconds: int = 60) -> tuple[object, str]:
    """``cli`` that fails the test instead of hanging it (a read that waits on a named pipe forever)."""
    import signal

    def hung(signum, frame):
        raise _Hung(f"zoo {' '.join(args)} still ran after {seconds} s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        return cli(capsys, *args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _stopped_run_with_a_pipe_for_its_recipe(workspace: Path) -> None:
    (workspace / "run" / "checkpoints").mkdir(parents=True)
    (workspace / "run" / "checkpoints" / "last.ckpt").write_bytes(b"never read: the recipe comes first")
    _fifo(workspace / "run" / "recipe.yaml")


@pytest.mark.parametrize(
    "make, args, fragment",
    [
        (lambda w: _fifo(w / "x.pt"), ["predict", "{ckpt}", "--input", "x.pt"], "x.pt: not a regular file"),
        (lambda w: (w / "x.npy").symlink_to("/dev/zero"), ["predict", "{ckpt}", "--input", "x.npy"],
         "x.npy: not a regular file"),
        (lambda w: _fifo(w / "s.yaml"), ["sweep", "s.yaml"], "s.yaml: not a regular file"),
        (lambda w: _fifo(w / "r.yaml"), ["train", "r.yaml"], "r.yaml: not a regular file"),
        (lambda w: [(w / "r.yaml").write_text("base: b.yaml\n"), _fifo(w / "b.yaml")], ["train", "r.yaml"],
         "b.yaml: not a regular file"),
        (_stopped_run_with_a_pipe_for_its_recipe, ["train", "--resume", "run"], "run/recipe.yaml: not a regular file"),
        (lambda w: (w / "r.yaml").write_text(f"base: {RECIPE}\n#" + "x" * (5 * 2**20) + "\n"), ["train", "r.yaml"],
         "r.yaml: 5.0 MiB, more than a recipe may be (4.0 MiB)"),
        (lambda w: (w / "run").mkdir() or _fifo(w / "run" / "metrics.json"), ["report", "run", "--no-confusion"],
         "run/metrics.json: not a regular file"),
    ],
    ids=["pipe-input", "dev-zero-input", "pipe-sweep", "pipe-recipe", "pipe-base", "pipe-resumed-recipe", "huge-recipe",
         "pipe-in-a-run-folder"],
)
def test_pipes_devices_and_huge_files_are_refused_at_once(capsys, workspace, make, args, fragment):
    ckpt = str(_small_checkpoint(workspace)) if "{ckpt}" in args else ""
    make(workspace)
    assert_user_error(bounded_cli(capsys, *(a.format(ckpt=ckpt) for a in args)), fragment, where=workspace)


def test_a_run_folder_whose_recipe_is_a_pipe_is_not_waited_on(capsys, workspace):
    (workspace / "old").mkdir()
    _fifo(workspace / "old" / "recipe.yaml")
    assert_user_error(bounded_cli(capsys, "train", "mlp-digits", *QUICK, "--run-dir", "old", "--overwrite"),
                      "--run-dir old: not a zoo run folder")


def test_a_decompression_bomb_is_refused_before_it_is_decoded(capsys, workspace):
    root = _image_folder(workspace / "imgs", 6)
    Image.new("1", (20000, 20000)).save(root / "ant" / "huge.png")  # 48 kB of file, 1.2 GB as RGB
    assert_user_error(cli(capsys, "train", "mlp-digits", _data(root, cache="false"), *QUICK),
                      f"imagefolder: {root / 'ant' / 'huge.png'} is more than 178,956,970 pixels, past the 89,478,485",
                      where=workspace)


@pytest.mark.parametrize(
    "body, args, fragments",
    [
        ("optimizer:\n  name: sgd\n  lr: 0.1\n  lr: 0.2\n", [], ["r.yaml:5:3: not valid YAML: duplicate key 'lr' (first at line 4)"]),
        ("", ["trainer.max_epochs=true"], ["trainer.max_epochs: Input should be a valid integer, got True"]),
        ("", ["model.width=64.0"], ["model.width: Input should be a valid integer, got 64.0"]),
        ("", ["trainer.max_steps=0"], ["trainer.max_steps: 0 steps would leave the network untrained"]),
    ],
    ids=["duplicate-key", "bool-for-int", "float-for-int", "zero-steps"],
)
def test_recipe_values_that_were_taken_silently(capsys, workspace, body, args, fragments):
    recipe = _recipe(workspace, "r.yaml", body)
    assert_user_error(cli(capsys, "train", recipe, *args), *fragments, where=workspace)


def _broken_checkpoint(folder: Path) -> Path:
    """A checkpoint whose weights are NaN: every output is NaN."""
    ckpt = _small_checkpoint(folder)
    payload = torch.load(ckpt, weights_only=True)
    payload["state_dict"] = {k: v.float().fill_(float("nan")) if v.is_floating_point() else v
                             for k, v in payload["state_dict"].items()}
    torch.save(payload, ckpt)
    return ckpt


def test_non_finite_inputs_or_outputs_are_errors_naming_them(capsys, workspace):
    ckpt = str(_small_checkpoint(workspace))
    x = torch.zeros(5, 1, 8, 8)
    x[3, 0, 2, 2] = float("nan")
    x[4, 0, 0, 0] = float("inf")
    torch.save(x, workspace / "x.pt")
    assert_user_error(cli(capsys, "predict", ckpt, "--input", "x.pt"),
                      "x.pt: input 3 (and 1 more) holds NaN or infinite values")
    np.save(workspace / "x.npy", x.numpy())
    assert_user_error(cli(capsys, "predict", ckpt, "--input", "x.npy"), "x.npy: input 3 (and 1 more)")
    broken = str(_broken_checkpoint(workspace))
    assert_user_error(cli(capsys, "predict", broken), f"{broken}: output for input 0 (and 359 more) holds NaN")
    assert_user_error(cli(capsys, "eval", broken), f"{broken}: output for the test split's sample 0 (and 359 more)")


def test_predict_says_which_split_it_predicts_on(capsys, workspace):
    from zoo.core.recipe import load
    from zoo.training.classifier import Classifier

    root = workspace / "imgs"
    _image_folder(root / "train", 10)  # a train/ folder, no test/
    recipe = load("mlp-digits", ["model.width=8", _data(root)]).to_dict()
    model = Classifier(recipe, (3, 8, 8), 2)
    hp = {"recipe": recipe, "input_shape": [3, 8, 8], "num_classes": 2}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hp}, workspace / "m.ckpt")
    status, err = cli(capsys, "predict", "m.ckpt")
    assert status == 0, err
    assert f"zoo: note: there is no {root / 'test'} folder: the test split is a seeded 20% of each class of " \
           f"{root / 'train'} (data.test_fraction, data.split_seed=0)" in err
    (root / "test").mkdir()
    _image_folder(root / "test", 2)
    status, err = cli(capsys, "predict", "m.ckpt")
    assert status == 0 and "note" not in err, err


def test_a_full_disk_under_an_export_is_named_and_leaves_nothing(capsys, workspace, full_disk):
    ckpt = str(_small_checkpoint(workspace))
    assert_user_error(cli(capsys, "predict", ckpt, "--out", "p.csv"),
                      "no space left on p.csv: No space left on device; nothing was written there")
    assert sorted(os.listdir(workspace)) == ["model.ckpt"]


def test_a_run_that_takes_no_step_is_refused_and_leaves_nothing(capsys, workspace, monkeypatch):
    monkeypatch.setattr(pl.Trainer, "fit", REAL_FIT)  # this mistake shows only once training starts
    assert_user_error(cli(capsys, "train", "mlp-digits", *QUICK, "trainer.max_time=00:00:00:00"),
                      "training took no optimizer step", "the network is untrained", where=workspace)


@pytest.mark.parametrize("args, fragment", [
    (["sanity", "mlp-digits", "--lr", "nan"], "argument --lr: must be a finite number above 0, got nan"),
    (["sanity", "mlp-digits", "--steps", "100000000"], "argument --steps: must be from 1 to 100000"),
    (["lr-find", "mlp-digits", "--max", "inf"], "argument --max: must be a finite number above 0, got inf"),
    (["lr-find", "mlp-digits", "--min", "abc"], "argument --min: expected a number, got 'abc'"),
    (["augment", "mlp-digits", "--n", "0"], "argument --n: must be from 1 to 256, got 0"),
    (["augment", "mlp-digits", "--seed", "99999999999999999999"], "argument --seed: must be from 0 to 4294967295"),
    (["init-explorer", "--depth", "100000"], "argument --depth: must be from 1 to 1000, got 100000"),
    (["init-explorer", "--seed", "-1"], "argument --seed: must be from 0 to 4294967295, got -1"),
    (["show", "mlp-digits", "--stats", "--classes", "0", "--input-shape", "1x8x8"], "argument --classes"),
    (["show", "mlp-digits", "--stats", "--classes", "10", "--input-shape", "0x8x8"],
     "--input-shape '0x8x8': expected sizes of at least 1"),
    (["init-explorer", "--width", "60000"], "more than the 268,435,456 (1 GiB of float32"),
    (["eval", "run", "--split", "bogus"], "argument --split: invalid choice: 'bogus'"),
])
def test_a_number_or_choice_out_of_range_on_the_command_line_is_one_line(capsys, workspace, args, fragment):
    # each would have run for hours, asked for terabytes, divided by zero, or gone on with a NaN
    err = assert_user_error(cli(capsys, *args), fragment, where=workspace)
    assert len(err.strip().splitlines()) == 1, err
    assert os.listdir(workspace) == []


@pytest.mark.parametrize("command", [["augment", "mlp-digits"], ["init-explorer"], ["lr-find", "mlp-digits"]])
def test_a_picture_in_a_format_matplotlib_lacks_is_refused_before_the_work(capsys, workspace, command):
    assert_user_error(cli(capsys, *command, "--out", "pic.txt"), "pic.txt: cannot write a picture as '.txt'",
                      where=workspace)
    assert capsys.readouterr().out == "" and os.listdir(workspace) == []


def test_a_picture_is_written_whole_or_not_at_all(capsys, workspace, full_disk):
    # pictures land in run folders too (augmentations.png): a full disk leaves no half of one
    small = ["--depth", "2", "--width", "8", "--batch", "4"]
    assert_user_error(cli(capsys, "init-explorer", *small, "--out", "plots/pic.png"),
                      "no space left on plots/pic.png", "nothing was written there")
    assert os.listdir(workspace / "plots") == []
