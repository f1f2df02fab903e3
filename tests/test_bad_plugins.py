"""A package of broken components, installed the way a plugin is: each mistake is one named line and exit 2.

`zoo-bad` breaks every contract a plugin author can break by accident: an activation returning
torch.tanh or None, a normalizer returning a string, augmentations returning only x or another size,
a model with the wrong number of outputs, factories missing a context parameter, an untyped parameter.
Training through each is refused before Trainer.fit (which the workspace fixture forbids) with one line
naming the recipe key, the component and its package, and no run folder is left. `zoo check-plugin`
then fails each of them on the check it breaks (exit 1), and passes a correct package (exit 0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zoo.cli.main import main
from zoo.core import discovery
from zoo.core.registry import REGISTRIES

BAD = '''
import torch
from torch import nn

from zoo import activations, augmentations, models, normalizers, optimizers


@activations.register("bad_tanh_fn")
def bad_tanh_fn() -> nn.Module:
    """Hands back the function torch.tanh instead of a module."""
    return torch.tanh


@activations.register("bad_none")
def bad_none() -> nn.Module:
    """Forgets to return."""


@normalizers.register("bad_string")
def bad_string(num_features, dim) -> nn.Module:
    """Returns the name of a normalizer instead of one."""
    return "batch"


class OnlyX:
    images_only = True

    def __call__(self, x, y, generator):
        return x.flip(-1)


@augmentations.register("bad_only_x")
def bad_only_x():
    """Returns the images without the targets."""
    return OnlyX()


class Shrink:
    images_only = True

    def __call__(self, x, y, generator):
        return x[..., 1:, 1:], y


@augmentations.register("bad_resize")
def bad_resize():
    """Crops a pixel off every image, changing its size."""
    return Shrink()


@models.register("bad_outputs")
def bad_outputs(input_shape, num_classes):
    """Always three outputs, whatever num_classes is."""
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(3))


@normalizers.register("bad_no_dim")
def bad_no_dim(num_features, *, eps: float = 1e-5) -> nn.Module:
    """Forgets that normalizers are also told ``dim``; ``eps`` is added to the variance."""
    return nn.BatchNorm1d(num_features, eps=eps)


@models.register("bad_no_input_shape")
def bad_no_input_shape(num_classes, *, width: int = 8):
    """Forgets that models are told ``input_shape``; ``width`` hidden units."""
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(width), nn.ReLU(), nn.Linear(width, num_classes))


@activations.register("bad_untyped")
def bad_untyped(*, slope=0.1) -> nn.Module:
    """A leaky ReLU whose ``slope`` has no type, so recipes cannot be checked against it."""
    return nn.LeakyReLU(slope)


class GlobalCoin:
    images_only = True

    def __call__(self, x, y, generator):
        flip = torch.rand(x.shape[0], device=x.device) < 0.5  # torch's global generator, not `generator`
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x), y


@augmentations.register("bad_global_rng")
def bad_global_rng():
    """Flips images with coins from torch's global generator."""
    return GlobalCoin()


class Float32Only(nn.Module):
    def forward(self, x):
        return torch.relu(x.float())


@activations.register("bad_float32")
def bad_float32() -> nn.Module:
    """A ReLU that turns everything into float32."""
    return Float32Only()


class Note:
    """Not a tensor: a checkpoint read with weights_only=True cannot hold it."""


class NoteTaking(torch.optim.SGD):
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["note"] = Note()
        return super().step(closure)


@optimizers.register("bad_state")
def bad_state(params, *, lr: float = 0.1):
    """SGD at learning rate ``lr`` that keeps an object in its state."""
    return NoteTaking(params, lr=lr)


class Detached(nn.Module):
    def forward(self, x):
        return torch.relu(x).detach()


@activations.register("bad_detached")
def bad_detached() -> nn.Module:
    """A ReLU that cuts the gradient."""
    return Detached()


@activations.register("bad_undocumented")
def bad_undocumented(*, alpha: float = 1.0) -> nn.Module:
    """An ELU whose parameter goes unexplained."""
    return nn.ELU(alpha)
'''

GOOD = '''
import torch
from torch import nn

from zoo import activations, models
from zoo.plugins.activations import unit_gain


class Cube(nn.Module):
    def forward(self, x):
        return x ** 3 / 3 + x


CUBE_GAIN = unit_gain(Cube())  # g with E[(g z + (g z)^3 / 3)^2] = 1: about 0.67


@activations.register("cubic")
def cubic() -> nn.Module:
    """x + x^3 / 3: an odd polynomial activation."""
    module = Cube()
    module.gain = CUBE_GAIN
    return module


@models.register("linear_probe")
def linear_probe(input_shape, num_classes, *, bias: bool = True) -> nn.Module:
    """A linear classifier on the flattened input; ``bias`` adds an intercept."""
    width = 1
    for size in input_shape:
        width *= size
    return nn.Sequential(nn.Flatten(), nn.Linear(width, num_classes, bias=bias))
'''


def fake_distribution(site: Path, dist: str, module: str, body: str, version: str = "0.1.0") -> None:
    """An installed distribution as pip leaves one: the module and a dist-info with its entry point."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(body))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[zoo.plugins]\n{module} = {module}\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    fake_distribution(folder, "zoo-bad", "zoo_bad_components", BAD)
    fake_distribution(folder, "zoo-good", "zoo_good_components", GOOD)
    return folder


@pytest.fixture
def installed(site, monkeypatch):
    """zoo-bad and zoo-good installed for this test: discovered afresh, and forgotten again after it."""
    monkeypatch.syspath_prepend(str(site))
    discovery.reset()
    yield site
    for record in discovery.records():
        if record.origin.package in ("zoo-bad", "zoo-good"):
            for registry in REGISTRIES.values():
                registry.drop(record.label)
            sys.modules.pop(record.origin.module, None)  # so that the next test's discovery imports it again
    monkeypatch.undo()
    discovery.reset()


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """An empty working directory (``runs/`` lands here), and no training at all."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ZOO_RUN_DIR", raising=False)
    import lightning.pytorch as pl

    def refuse(*args, **kwargs):
        raise AssertionError("Trainer.fit was reached: the broken component was not caught before training")

    monkeypatch.setattr(pl.Trainer, "fit", refuse)
    return tmp_path


QUICK = ["trainer.max_epochs=1", "model.width=8"]
SCENARIO = {
    "activation-returns-torch.tanh": (
        ["model.activation=bad_tanh_fn"],
        "model.activation: activation 'bad_tanh_fn' (zoo-bad 0.1.0) returned a builtin_function_or_method, "
        "not an nn.Module; wrap a function in a module (nn.Tanh(), not torch.tanh)",
    ),
    "activation-returns-None": (
        ["model.activation=bad_none"],
        "model.activation: activation 'bad_none' (zoo-bad 0.1.0) returned None, not an nn.Module",
    ),
    "normalizer-returns-a-string": (
        ["model.norm=bad_string"],
        "model.norm: normalizer 'bad_string' (zoo-bad 0.1.0) returned a str 'batch', not an nn.Module",
    ),
    "augmentation-returns-only-x": (
        ["augment=[bad_only_x]"],
        "augment[0]: augmentation 'bad_only_x' (zoo-bad 0.1.0) returned Tensor for a sample batch x of shape "
        "(4, 1, 8, 8) with targets y of shape (4, 10); an augmentation returns the pair (x, y)",
    ),
    "augmentation-changes-the-size": (
        ["augment=[bad_resize]"],
        "augment[0]: augmentation 'bad_resize' (zoo-bad 0.1.0) changed the shape of x from (4, 1, 8, 8) to "
        "(4, 1, 7, 7); it must keep it",
    ),
    "model-with-wrong-output-count": (
        ["model=bad_outputs"],
        "model: model 'bad_outputs' (zoo-bad 0.1.0) gave output of shape (2, 3) for a batch of 2 inputs of "
        "shape (1, 8, 8); a model's forward returns logits of shape (batch, num_classes) = (2, 10)",
    ),
    "normalizer-without-dim": (
        ["model.norm=bad_no_dim"],
        "model.norm: normalizer 'bad_no_dim' (zoo-bad 0.1.0) cannot be used: its factory does not take 'dim', "
        "which zoo passes by keyword to every normalizers factory (the context: num_features, dim)",
    ),
    "model-without-input_shape": (
        ["model=bad_no_input_shape"],
        "model: model 'bad_no_input_shape' (zoo-bad 0.1.0) cannot be used: its factory does not take "
        "'input_shape', which zoo passes by keyword to every models factory (the context: input_shape, num_classes)",
    ),
    "untyped-parameter": (
        ["model.activation={name: bad_untyped, slope: 0.2}"],
        "model.activation: activation 'bad_untyped' (zoo-bad 0.1.0) cannot be used: parameter 'slope' has no "
        "type annotation, so a recipe's value could not be validated",
    ),
}


@pytest.mark.parametrize("case", sorted(SCENARIO))
def test_each_broken_component_is_one_named_line_exit_2_and_no_run_folder(case, installed, workspace, capsys):
    overrides, message = SCENARIO[case]
    args = ["train", "mlp-digits", *QUICK, *overrides]
    if "model=" in overrides[0]:
        args.remove("model.width=8")  # these models have no width
    status = main(args)
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, no traceback, no warnings
    assert lines[0].startswith("zoo: error: ") and message in lines[0], lines[0]
    assert not (workspace / "runs").exists(), list((workspace / "runs").rglob("*"))


def test_a_real_process_exits_2_naming_the_model_and_its_package(site, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env.pop("ZOO_RUN_DIR", None)
    out = subprocess.run(
        [sys.executable, "-m", "zoo", "train", "mlp-digits", "model=bad_outputs", "trainer.max_epochs=1"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("zoo: error: model: model 'bad_outputs' (zoo-bad 0.1.0)")
    assert not (tmp_path / "runs").exists()


def test_the_broken_components_are_listed_with_what_is_wrong(installed, capsys):
    assert main(["list", "models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["bad_no_input_shape"]["package"] == "zoo-bad" and rows["bad_no_input_shape"]["version"] == "0.1.0"
    assert "does not take 'input_shape'" in rows["bad_no_input_shape"]["problems"][0]
    assert rows["mlp"]["problems"] == [] and rows["linear_probe"]["problems"] == []


# Each bad component and the check of the kit it fails (the checks after a failed `builds` are skipped).
FAILS = {
    "activations:bad_tanh_fn": "builds",
    "activations:bad_none": "builds",
    "normalizers:bad_string": "builds",
    "augmentations:bad_only_x": "output",
    "augmentations:bad_resize": "output",
    "models:bad_outputs": "output",
    "normalizers:bad_no_dim": "signature",
    "models:bad_no_input_shape": "signature",
    "activations:bad_untyped": "signature",
    "augmentations:bad_global_rng": "deterministic",
    "activations:bad_float32": "device_dtype",
    "optimizers:bad_state": "checkpoint",
    "activations:bad_detached": "train_step",
    "activations:bad_undocumented": "documented",
}


def _check_plugin(site: Path, cwd: Path, package: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "zoo", "check-plugin", package, "--json"],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=600,
    )


def test_check_plugin_fails_each_broken_component_on_the_check_it_breaks(site, tmp_path):
    out = _check_plugin(site, tmp_path, "zoo-bad")
    assert out.returncode == 1, out.stderr
    results = json.loads(out.stdout.strip().splitlines()[-1])
    failed: dict[str, set[str]] = {}
    for r in results:
        if r["status"] == "fail":
            failed.setdefault(r["component"], set()).add(r["check"])
    assert sorted(failed) == sorted(FAILS)
    for component, check in FAILS.items():
        assert check in failed[component], (component, failed[component])
    # where `signature`, `builds` or `output` fails what needs it is skipped, so every failure names exactly
    # its own check
    for component, checks in failed.items():
        assert checks == {FAILS[component]}, (component, checks)
    detail = {(r["component"], r["check"]): r["detail"] for r in results}
    assert "draw only from the generator it is given" in detail[("augmentations:bad_global_rng", "deterministic")]
    assert "refused to load" in detail[("optimizers:bad_state", "checkpoint")]


def test_check_plugin_passes_a_correct_package(site, tmp_path):
    out = _check_plugin(site, tmp_path, "zoo-good")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert {r["component"] for r in results} == {"activations:cubic", "models:linear_probe"}
    assert {r["status"] for r in results} <= {"pass", "n/a"}
    assert sum(r["status"] == "pass" for r in results) == 16  # 8 checks each, all of which apply


def test_the_build_time_checks_leave_a_seeded_run_as_it_was():
    """The model's and the augmentations' sample runs draw from generators of their own."""
    import torch

    from zoo.core.build import build_network
    from zoo.data.augment import AugmentPipeline

    spec = {"name": "resnet", "depth": 8, "width": 4}
    torch.manual_seed(0)
    plain = REGISTRIES["models"].build(spec, input_shape=(3, 8, 8), num_classes=10)
    after_plain = torch.get_rng_state()
    torch.manual_seed(0)
    checked = build_network(spec, (3, 8, 8), 10)
    assert torch.equal(torch.get_rng_state(), after_plain)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), checked.state_dict().values()))
    pipeline = AugmentPipeline([{"name": "cutmix"}, {"name": "crop", "padding": 1}], num_classes=10, seed=3)
    state = torch.get_rng_state()
    pipeline.check_input_shape((3, 8, 8))
    assert torch.equal(torch.get_rng_state(), state) and pipeline._generator is None
