"""Starting from trained weights: timm weights files, another zoo run (init_from), what trains (finetune)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from run_stops import CrashAt, one_torch_thread, with_callback

import zoo
from zoo.cli.main import main
from zoo.core.errors import ZooError
from zoo.core.recipe import load

REPO = Path(__file__).resolve().parent.parent
RECIPE = str(REPO / "recipes" / "mlp-digits.yaml")
QUICK = ["model.width=16", "trainer.enable_progress_bar=false"]
SHAPE = (3, 16, 16)


@pytest.fixture
def timm_weights(tmp_path):
    """A tiny timm network of 5 classes and its state dict, saved as timm saves weights (safetensors)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm.create_model("test_resnet", num_classes=5).eval()
    path = tmp_path / "test_resnet.safetensors"
    save_file(net.state_dict(), str(path))
    return net, path


def timm_spec(path, **more):
    return {"name": "timm", "arch": "test_resnet", "pretrained_file": str(path), **more}


def test_pretrained_file_gives_the_same_logits_and_standardizes_by_the_weights_own_statistics(timm_weights):
    from zoo.training.classifier import Classifier

    net, path = timm_weights
    recipe = load(RECIPE, [f"model={timm_spec(path)}", "augment=[]"]).to_dict()
    module = Classifier(recipe, SHAPE, 5).eval()
    module.set_input_stats(torch.full((3, 1, 1), 0.2), torch.full((3, 1, 1), 3.0))  # the data's: not used
    assert torch.equal(module.input_mean, torch.full(SHAPE, 0.5))  # test_resnet's pretrained_cfg
    assert torch.equal(module.input_std, torch.full(SHAPE, 0.5))
    pixels = torch.randint(0, 256, (4, *SHAPE), dtype=torch.uint8)
    with torch.no_grad():
        expected = net((pixels.float() / 255 - 0.5) / 0.5)
        assert torch.equal(module(module.standardize(pixels)), expected)


def test_pretrained_file_with_another_class_count_keeps_the_backbone_and_gets_a_new_head(timm_weights):
    net, path = timm_weights
    model = zoo.models.build(timm_spec(path), input_shape=SHAPE, num_classes=7)
    loaded, trained = model.net.state_dict(), net.state_dict()
    backbone = [key for key in trained if not key.startswith("fc.")]
    assert backbone and all(torch.equal(loaded[key], trained[key]) for key in backbone)
    assert loaded["fc.weight"].shape == (7, trained["fc.weight"].shape[1])


def test_weights_that_do_not_fit_name_the_file_and_the_keys(timm_weights, tmp_path):
    from safetensors.torch import save_file

    net, _ = timm_weights
    state = dict(net.state_dict())
    state["conv1.0.weight"] = torch.zeros(24, 3, 3, 3)
    del state["layer1.0.conv1.weight"]
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad))
    with pytest.raises(ZooError) as caught:
        zoo.models.build(timm_spec(bad), input_shape=SHAPE, num_classes=5)
    message = str(caught.value)
    assert str(bad) in message and "missing layer1.0.conv1.weight" in message
    assert "shape conv1.0.weight (24, 3, 3, 3) in the file, (16, 3, 3, 3) in the model" in message
    assert "\n" not in message


def test_pretrained_offline_says_to_pass_a_weights_file(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read by the hub when imported
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # nothing cached
    with pytest.raises(ZooError) as caught:
        spec = {"name": "timm", "arch": "test_resnet", "pretrained": True}
        zoo.models.build(spec, input_shape=SHAPE, num_classes=5)
    message = str(caught.value)
    assert "could not be downloaded" in message and "model.pretrained_file=PATH" in message
    assert "\n" not in message


def cli(capsys, *args: str) -> tuple[object, str, str]:
    try:
        status: object = main(list(args))
    except SystemExit as exc:
        status = exc.code
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["model={name: timm, arch: test_resnet, pretrained_file: W, activation: gelu}"],
         "'activation' with pretrained_file"),
        (["model={name: timm, arch: test_resnet, pretrained_file: W, init: kaiming_normal}"],
         "'init' with pretrained_file"),
        (["finetune.freeze=[layers.1.*, nothing.*]"], "finetune.freeze[1]: 'nothing.*' matches no parameter"),
        (["init_from=NOWHERE"], "init_from: NOWHERE: no such run directory or checkpoint"),
    ],
)
def test_refusals_are_one_line_exit_2_and_leave_no_run_folder(
    capsys, monkeypatch, tmp_path, timm_weights, overrides, fragment
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(L.Trainer, "fit", lambda *a, **k: pytest.fail("the mistake reached training"))
    nowhere = str(tmp_path / "nowhere")
    overrides = [o.replace(" W,", f" {timm_weights[1]},").replace("NOWHERE", nowhere) for o in overrides]
    fragment = fragment.replace("NOWHERE", str(tmp_path / "nowhere"))
    status, _, err = cli(capsys, "train", RECIPE, *QUICK, "augment=[]", *overrides)
    assert status == 2 and fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A finished tiny digits run to start from."""
    folder = tmp_path_factory.mktemp("source") / "run"
    zoo.train(RECIPE, [*QUICK, "trainer.max_epochs=1"], run_dir=folder)
    return folder


def trained_net(folder: Path) -> dict[str, torch.Tensor]:
    from zoo.training.evaluation import load_model

    return load_model(folder).net.state_dict()


def prepared(overrides, tmp_path, resuming=False):
    from zoo.training.fit import prepare_fit

    recipe = load(RECIPE, [*QUICK, *overrides])
    return prepare_fit(recipe, tmp_path / "new", progress=False, resuming=resuming)


def test_init_from_the_same_classes_starts_from_identical_weights(source_run, tmp_path, capsys):
    module = prepared([f"init_from={source_run}"], tmp_path).module
    source = trained_net(source_run)
    assert all(torch.equal(module.net.state_dict()[key], value) for key, value in source.items())
    err = capsys.readouterr().err
    loaded = f"init_from {source_run}: loaded {len(source)} tensors, re-initialized 0 (head kept), ignored 0"
    assert loaded in err
    # a resumed run takes its weights from its own checkpoint, not from init_from again
    again = prepared([f"init_from={source_run}"], tmp_path, resuming=True).module
    assert not torch.equal(again.net.state_dict()["layers.1.weight"], source["layers.1.weight"])
    assert "init_from" not in capsys.readouterr().err


def test_init_from_another_class_count_gets_a_new_head_and_says_so(source_run, tmp_path, capsys):
    data = "data={name: synthetic, shape: [1, 8, 8], num_classes: 4, n_train: 64, n_val: 16, n_test: 16}"
    module = prepared([f"init_from={source_run}", data], tmp_path).module
    source, net = trained_net(source_run), module.net.state_dict()
    head = [key for key in source if key.startswith("layers.9.")]
    assert head and net["layers.9.weight"].shape == (4, 16)
    assert all(torch.equal(net[key], value) for key, value in source.items() if key not in head)
    err = capsys.readouterr().err
    assert f"loaded {len(source) - 2} tensors, re-initialized 2 (head: layers.9.weight, layers.9.bias)" in err
    # a backbone that does not fit is refused naming its tensors
    wrong = r"outside the head: layers\.1\.weight \(16, 64\) in the source, \(16, 16\) here"
    with pytest.raises(ZooError, match=wrong):
        prepared([f"init_from={source_run}", data.replace("[1, 8, 8]", "[1, 4, 4]")], tmp_path)


class Snapshots(L.Callback):
    """The network's weights and buffers as training starts and after each epoch; the optimizer's groups."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []
        self.groups: list[dict] = []

    def _take(self, module) -> None:
        self.states.append({k: v.detach().clone() for k, v in module.net.state_dict().items()})

    def on_train_start(self, trainer, pl_module) -> None:
        self._take(pl_module)
        groups = trainer.optimizers[0].param_groups
        self.groups = [{"lr": g["initial_lr"], "n": len(g["params"])} for g in groups]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._take(pl_module)


TUNING = ["trainer.max_epochs=3", "finetune.freeze=[layers.1.*]", "finetune.unfreeze_at_epoch=2",
          "finetune.backbone_lr_mult=0.1", "finetune.freeze_bn_stats=true"]


@pytest.fixture(scope="module")
def tuned(source_run, tmp_path_factory):
    """Three epochs from the source run, its first layer frozen for two (one torch thread: resumes compare
    exactly)."""
    snapshots = Snapshots()
    with one_torch_thread():
        result = zoo.train(RECIPE, [*QUICK, *TUNING, f"init_from={source_run}"],
                           run_dir=tmp_path_factory.mktemp("tuned") / "run", callbacks=[snapshots])
    return result, snapshots


def test_frozen_weights_stay_bit_identical_until_unfrozen_and_the_backbone_learns_slower(tuned, source_run):
    result, snapshots = tuned
    # the run records the file it started from: the source folder's best checkpoint
    recorded = load(Path(result.run_dir) / "recipe.yaml").init_from
    assert recorded == str((source_run / "checkpoints" / "best.ckpt").resolve())
    start, *epochs = snapshots.states
    assert len(epochs) == 3
    for epoch, state in enumerate(epochs):
        frozen = torch.equal(state["layers.1.weight"], start["layers.1.weight"])
        assert frozen == (epoch < 2), f"epoch {epoch}"  # frozen for epochs 0 and 1, trained in epoch 2
        before = epochs[epoch - 1] if epoch else start
        assert not torch.equal(state["layers.5.weight"], before["layers.5.weight"])
        assert torch.equal(state["layers.2.running_mean"], start["layers.2.running_mean"])  # freeze_bn_stats
    lr = load(RECIPE).optimizer["lr"]
    # weights and 1-d tensors (no weight decay) each split into the head (lr) and the rest (lr x 0.1)
    assert sorted(g["lr"] for g in snapshots.groups) == pytest.approx(sorted([lr, lr * 0.1, lr, lr * 0.1]))
    trained = [k for k in start if "running" not in k and "num_batches" not in k]
    # the frozen ones included, without gradients
    assert sum(g["n"] for g in snapshots.groups) == len(trained)


def test_a_run_killed_while_frozen_resumes_exactly_across_the_unfreezing(
    tuned, source_run, tmp_path, monkeypatch
):
    uninterrupted, _ = tuned
    run = tmp_path / "run"
    with one_torch_thread():
        with monkeypatch.context() as patch:
            # the end of epoch 1, before its checkpoint: the run goes on from epoch 1
            with_callback(patch, CrashAt(40))
            with pytest.raises(SystemExit):
                zoo.train(RECIPE, [*QUICK, *TUNING, f"init_from={source_run}"], run_dir=run)
        resumed = zoo.train(resume=run, progress=False)
    assert resumed.metrics == uninterrupted.metrics
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    last = Path(uninterrupted.run_dir) / "checkpoints" / "last.ckpt"
    expected = torch.load(last, weights_only=True)["state_dict"]
    assert all(torch.equal(final[key], value) for key, value in expected.items())


def test_show_lists_what_trains(capsys, source_run):
    tuning = ["finetune.freeze=[layers.1.*]", "finetune.backbone_lr_mult=0.1"]
    status, out, _ = cli(capsys, "show", RECIPE, *QUICK, *tuning)
    assert status == 0
    assert "# trains head: 2 tensors, 170 values, lr x 1" in out
    # the first layer's weight (no bias: batch norm follows) is frozen; its norms and the second layer train
    assert "# trains backbone: 5 tensors, 320 values, lr x 0.1" in out
    assert "# frozen for the whole run: layers.1.*: 1 tensors, 1,024 values" in out


def test_freeze_stages_takes_the_stem_and_the_first_stages():
    from zoo.training.finetune import frozen_names

    resnet = zoo.models.build({"name": "resnet", "depth": 20}, input_shape=(1, 8, 8), num_classes=10)
    frozen = frozen_names(resnet, {"freeze_stages": 1})["stem and 1 stages"]
    blocks = {name.split(".")[1] for name in frozen if name.startswith("blocks.")}
    # ResNet-20: 3 blocks a stage
    assert blocks == {"0", "1", "2"} and any(name.startswith("stem.") for name in frozen)
    timm_net = zoo.models.build({"name": "timm", "arch": "test_resnet"}, input_shape=SHAPE, num_classes=5)
    stem = frozen_names(timm_net, {"freeze_stages": 0})["stem and 0 stages"]
    assert stem and all(name.startswith(("net.conv1.", "net.bn1.")) for name in stem)
    with pytest.raises(ZooError, match="4 asked for, but the model has a stem and 3 stages"):
        frozen_names(resnet, {"freeze_stages": 4})
    mlp = zoo.models.build({"name": "mlp", "width": 8}, input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ZooError, match=r"finetune.freeze_stages: the model \(MLP\) does not name its stages"):
        frozen_names(mlp, {"freeze_stages": 0})


def test_unfreezing_under_ddp_is_refused(tmp_path):
    ddp = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
    with pytest.raises(ZooError, match=r"finetune.unfreeze_at_epoch: not under DDP \(2 processes here\)"):
        prepared([*ddp, "finetune.freeze=[layers.1.*]", "finetune.unfreeze_at_epoch=1"], tmp_path)


def test_the_run_records_its_weights_file_by_absolute_path(timm_weights, monkeypatch):
    from zoo.training.init_from import with_weights_files

    _, path = timm_weights
    monkeypatch.chdir(path.parent)
    recipe = load(RECIPE, [f"model={timm_spec(path.name)}"])
    assert with_weights_files(recipe).model["pretrained_file"] == str(path.resolve())
    assert recipe.model["pretrained_file"] == path.name  # the caller's recipe is left as it was


def test_an_ensemble_as_the_source_is_refused_naming_a_member(source_run, tmp_path):
    from zoo.training.ensemble_model import Ensemble
    from zoo.training.evaluation import load_model

    folder = tmp_path / "ensemble"
    folder.mkdir()
    Ensemble([load_model(source_run), load_model(source_run)]).save(folder / "ensemble.ckpt")
    member = rf"is an ensemble.*name one member's run folder instead \({folder}/members/m0"
    with pytest.raises(ZooError, match=member):
        prepared([f"init_from={folder}"], tmp_path)
