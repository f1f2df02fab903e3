"""What a plugin may not do to zoo, and what zoo owes a plugin author.

A plugin never takes over zoo's names: a package registering `relu` is a warning, and the default
recipe, `zoo eval` and `--resume` of existing runs keep zoo's component (a run's recorded provenance
decides where two third-party packages share a name). A plugin that changes torch's process-wide
settings, the working folder, the environment, warnings filters or logging when imported (or a component
when built) has them put back, with a warning naming it, and cannot hide zoo's warnings. The conformance kit fails a
component it never built and probes normalizers on several layouts. And the smaller promises: the
documented initializer signature works with every model, a plugin's ZooError names its recipe key and
package, evaluation needs only the model's and data's plugins, `--plugin` on every command and in
parallel ensemble members, plugin files qualified by their file name, feature vectors in the
augmentation picture, and `zoo new-plugin` refusing names that shadow a module.

Packages are installed for a test as pip leaves them (a dist-info on sys.path); files go in tmp_path.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import random
import shutil
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_bad_plugins import fake_distribution
from torch import nn

import zoo
from zoo.cli.main import build_parser, main
from zoo.core import discovery
from zoo.core.errors import PluginError, PluginWarning, RegistryError, ZooError
from zoo.core.recipe import from_dict
from zoo.core.registry import REGISTRIES, Origin, Registry, current_source, using_provenance

# A package registering zoo's `relu` (as a tanh, so which one was built shows).
TAKEOVER = '''
from torch import nn
from zoo import activations

@activations.register("relu")
def relu() -> nn.Module:
    """A "relu" that is a tanh."""
    return nn.Tanh()
'''

# A package supplying a run's optimizer, augmentation and initializer, but not its model or data.
PARTS = '''
import torch
from torch import nn
from zoo import augmentations, initializers, optimizers
from zoo.plugins.initializers import Initializer


@optimizers.register("parts_sgd")
def parts_sgd(params, *, lr: float = 0.05) -> torch.optim.Optimizer:
    """Plain SGD at ``lr``."""
    return torch.optim.SGD(params, lr=lr)


class Keep:
    images_only = False

    def __call__(self, x, y, generator):
        return x, y


@augmentations.register("parts_keep")
def parts_keep() -> Keep:
    """Leaves the batch as it is."""
    return Keep()


class Small(Initializer):
    def init_weight(self, weight, act) -> None:
        nn.init.normal_(weight, 0.0, 0.05)


@initializers.register("parts_small")
def parts_small(*, bias: float = 0.0) -> Small:
    """Normal weights of std 0.05; every bias set to ``bias``."""
    return Small(bias=bias)
'''


def _distribution(site: Path, dist: str, module: str, body: str) -> Path:
    """A folder holding one installed distribution: on sys.path, it is installed; off it, it is not."""
    fake_distribution(site / dist, dist, module, body, version="1.0")
    return site / dist


def _forget(test) -> None:
    """Drop the plugins ``test(record)`` picks: their components, modules and discovery records."""
    for record in discovery.records():
        if test(record):
            for registry in REGISTRIES.values():
                registry.drop(record.label)
            sys.modules.pop(record.origin.module or "", None)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("site")
    return {
        "zoo-takeover": _distribution(root, "zoo-takeover", "zoo_takeover", TAKEOVER),
        "zoo-parts": _distribution(root, "zoo-parts", "zoo_parts", PARTS),
        "acts": _distribution(root, "acts", "acts", TAKEOVER.replace('"relu"', '"sq"')),
    }


@pytest.fixture
def install(site):
    """install("zoo-parts", ...): exactly those test packages on the path, discovered afresh."""
    ours = {name for name in site}

    def use(*packages: str) -> None:
        _forget(lambda r: r.origin.package in ours or r.origin.file is not None)
        sys.path[:] = [p for p in sys.path if p not in {str(f) for f in site.values()}]
        for name in packages:
            sys.path.insert(0, str(site[name]))
        importlib.invalidate_caches()
        discovery.reset()

    yield use
    use()


@pytest.fixture(scope="module")
def run(tmp_path_factory, site) -> Path:
    """A finished one-epoch run of the default recipe with zoo-parts' optimizer, augmentation and initializer."""
    folder = tmp_path_factory.mktemp("runs") / "run"
    sys.path.insert(0, str(site["zoo-parts"]))
    discovery.reset()
    try:
        args = ["trainer.max_epochs=1", "model.width=16", "optimizer=parts_sgd", "schedule=constant",
                "augment=[parts_keep]", "model.init=parts_small"]
        assert main(["train", "mlp-digits", *args, "--run-dir", str(folder)]) == 0
    finally:
        _forget(lambda r: r.origin.package == "zoo-parts")
        sys.path.remove(str(site["zoo-parts"]))
        discovery.reset()
    return folder


# --- zoo's names and recorded provenance win --------------------------------------------------------


def test_a_package_registering_a_name_zoo_ships_is_a_warning_and_zoo_keeps_the_name(install):
    install("zoo-takeover")
    with pytest.warns(PluginWarning, match=r"zoo-takeover .* registers activations 'relu', a name zoo ships"):
        discovery.load_plugins()
    resolved = zoo.load_recipe("mlp-digits")
    assert resolved["provenance"]["model.activation"]["package"] == "zoo"
    assert type(zoo.activations.build("relu")) is nn.ReLU
    assert type(zoo.activations.build("zoo-takeover:relu")) is nn.Tanh
    assert {"relu", "zoo-takeover:relu"} <= set(zoo.activations.names())


def test_existing_runs_evaluate_and_resume_with_zoos_component(run, install, tmp_path, capsys):
    install("zoo-takeover", "zoo-parts")
    assert main(["eval", str(run)]) == 0
    stopped = tmp_path / "stopped"
    shutil.copytree(run, stopped)
    (stopped / "metrics.json").unlink()  # as if it had been killed before the end
    assert main(["train", "--resume", str(stopped)]) == 0
    assert "error" not in capsys.readouterr().err
    recorded = yaml.safe_load((stopped / "recipe.yaml").read_text())["provenance"]["model.activation"]
    assert recorded["package"] == "zoo"


@pytest.fixture
def widgets():
    registry = Registry("widgets_of_two_packages")
    yield registry
    REGISTRIES.pop(registry.name)


def _register(registry: Registry, package: str, value: int) -> None:
    def widget() -> int:
        """A widget."""
        return value

    widget.__qualname__ = f"widget_{package}"  # two definitions, not one re-imported
    token = current_source.set(Origin(f"{package} (entry point 'w')", package=package, version="1.0"))
    try:
        registry.register(widget, name="widget")
    finally:
        current_source.reset(token)


def test_a_recorded_provenance_settles_a_name_two_packages_share(widgets):
    _register(widgets, "pkg-one", 1)
    with pytest.warns(PluginWarning, match="must pick one: pkg-one:widget or pkg-two:widget"):
        _register(widgets, "pkg-two", 2)
    with pytest.raises(RegistryError, match="registered by 2 plugins"):
        widgets.validate("widget", "model.widget")
    recorded = {"model.widget": {"name": "widget", "registry": widgets.name, "package": "pkg-two", "version": "1.0"}}
    with using_provenance(recorded):
        resolved = widgets.validate("widget", "model.widget")
    # written qualified, so that building it later (without the record at hand) gets the same one
    assert resolved == {"name": "pkg-two:widget"} and widgets.build(resolved) == 2


# --- torch's global state ---------------------------------------------------------------------------

GLOBAL_STATE = '''
import torch
torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)
torch.set_grad_enabled(False)
torch.use_deterministic_algorithms(True)
'''


def test_a_plugin_changing_torchs_global_state_at_import_has_it_put_back_with_a_warning(tmp_path, install):
    plugin = tmp_path / "meddler.py"
    plugin.write_text(GLOBAL_STATE)
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if threads == 1 else threads)
    before = (torch.get_default_dtype(), torch.get_num_threads(), torch.is_grad_enabled(),
              torch.are_deterministic_algorithms_enabled())
    try:
        with pytest.warns(PluginWarning) as caught:
            discovery.load_local([str(plugin)], kind="--plugin")
        after = (torch.get_default_dtype(), torch.get_num_threads(), torch.is_grad_enabled(),
                 torch.are_deterministic_algorithms_enabled())
    finally:
        torch.set_num_threads(threads)
    assert after == before == (torch.float32, after[1], True, False)
    message = str(caught[0].message)
    assert message.startswith(f"plugin {plugin} (--plugin) changed torch's default dtype float32 -> float64")
    for change in ("threads", "grad mode on -> off", "deterministic algorithms off -> on"):
        assert change in message


# A plugin that meddles with the process: it works elsewhere, changes the environment, ignores every
# warning (which would hide the one saying it took zoo's relu), silences logging and reseeds Python's and
# NumPy's generators.
PROCESS_STATE = '''
import logging, os, random, warnings
import numpy as np
from torch import nn
from zoo import activations

warnings.simplefilter("ignore")
os.environ["ZOO_TEST_MEDDLED"] = "1"
os.environ["KMP_SOMETHING"] = "a library's own"
os.chdir(os.path.dirname(os.path.dirname(__file__)))
logging.disable(logging.CRITICAL)
random.seed(1)
np.random.seed(1)


@activations.register("relu")
def relu() -> nn.Module:
    """A "relu" that is a tanh."""
    return nn.Tanh()
'''


def test_a_plugin_changing_the_process_at_import_has_it_put_back_and_cannot_hide_zoos_warnings(tmp_path, install):
    plugin = tmp_path / "sub" / "meddler_process.py"
    plugin.parent.mkdir()
    plugin.write_text(PROCESS_STATE)
    before = (Path.cwd(), dict(os.environ), list(warnings.filters), logging.root.manager.disable,
              random.getstate(), np.random.get_state()[1].tolist())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        discovery.load_local([str(plugin)], kind="--plugin")
        filters_after = list(warnings.filters)
    # a variable that does not steer a run is the plugin's (libraries set their own)
    assert os.environ.pop("KMP_SOMETHING") == "a library's own"
    after = (Path.cwd(), dict(os.environ), filters_after, logging.root.manager.disable,
             random.getstate(), np.random.get_state()[1].tolist())
    assert after[0] == before[0] and after[1] == before[1] and after[3:] == before[3:]
    assert filters_after[0] == ("always", None, Warning, None, 0)
    messages = [str(w.message) for w in caught if issubclass(w.category, PluginWarning)]
    assert any(
        m.startswith(f"plugin {plugin} (--plugin) changed the process's working folder to {tmp_path}; "
                     "environment variables ZOO_TEST_MEDDLED; warnings filters; logging configuration")
        for m in messages
    ), messages
    assert any("registers activations 'relu', a name zoo ships" in m for m in messages), messages


def test_a_component_changing_the_process_when_built_has_it_put_back_with_a_warning(widgets, tmp_path):
    def meddling() -> int:
        """Works elsewhere, in float64, ignoring warnings."""
        os.chdir(tmp_path)
        torch.set_default_dtype(torch.float64)
        warnings.simplefilter("ignore")
        return 1

    widgets.register("meddling")(meddling)
    cwd, filters = Path.cwd(), list(warnings.filters)
    with pytest.warns(PluginWarning) as caught:
        assert widgets.build("meddling", "model.widget") == 1
    assert (Path.cwd(), torch.get_default_dtype(), warnings.filters) == (cwd, torch.float32, filters)
    message = str(caught[0].message)
    assert message.startswith("model.widget: ") and "'meddling'" in message
    assert f"changed torch's default dtype float32 -> float64; working folder to {tmp_path}; warnings filters " \
        "when built" in message


# --- the conformance kit ----------------------------------------------------------------------------

NORMALIZERS = '''
from torch import nn
from zoo import normalizers
from zoo.core.errors import ZooError


@normalizers.register("groups_of_four")
def groups_of_four(num_features, dim, *, eps: float = 1e-5) -> nn.Module:
    """Group norm in groups of four channels; ``eps`` is added to the variance."""
    if num_features % 4:
        raise ZooError(f"groups_of_four needs a multiple of 4 channels, got {num_features}")
    return nn.GroupNorm(num_features // 4, num_features, eps=eps)


@normalizers.register("never_builds")
def never_builds(num_features, dim) -> nn.Module:
    """Declines every layout."""
    raise ZooError("not on this machine")


@normalizers.register("misspelt")
def misspelt(num_feature, dim) -> nn.Module:
    """A normalizer whose factory misspells num_features."""
    return nn.Identity()
'''


def _check(file: Path, capsys, *extra: str) -> tuple[int, str]:
    status = main(["check-plugin", str(file), *extra])
    return status, capsys.readouterr().out


def test_the_kit_probes_several_layouts_and_fails_what_it_never_built(tmp_path, install, capsys):
    plugin = tmp_path / "norms.py"
    plugin.write_text(textwrap.dedent(NORMALIZERS))
    status, out = _check(plugin, capsys, "--json")
    results = {(r["name"], r["check"]): r for r in json.loads(out)}
    # a normalizer that serves only multiples of 4 channels is checked on them (the one probe of 6 missed it)
    assert {r["status"] for (name, _), r in results.items() if name == "groups_of_four"} == {"pass"}
    assert results[("groups_of_four", "builds")]["detail"] == "6 layouts (dims [0, 1, 2], features [8, 32])"
    # one that never built is a failure, not eight skips
    assert results[("never_builds", "builds")]["status"] == "fail"
    assert "nothing could be checked" in results[("never_builds", "builds")]["detail"]
    assert status == 1
    # the table shows the real signature problem, and builds is skipped for it rather than misreported
    status, table = _check(plugin, capsys)
    assert "FAIL normalizers:misspelt signature: its factory does not take 'num_features'" in table
    assert "needs parameter num_feature" not in table


# --- smaller promises -------------------------------------------------------------------------------

STRICT_INIT = '''
from torch import nn
from zoo import initializers


class Strict:
    seen = None

    def apply(self, model, *, activation, sample):
        Strict.seen = activation
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.zeros_(m.weight)


@initializers.register("strict_zero")
def strict_zero() -> Strict:
    """Zero weights; apply's signature as docs/plugins.md writes it."""
    return Strict()
'''


def test_the_documented_initializer_signature_works_with_the_timm_model(tmp_path, install):
    plugin = tmp_path / "strict.py"
    plugin.write_text(textwrap.dedent(STRICT_INIT))
    discovery.load_local([str(plugin)], kind="--plugin")
    net = zoo.models.build({"name": "timm", "arch": "test_resnet", "init": "strict_zero"}, "model",
                           input_shape=(3, 16, 16), num_classes=4)
    net.initialize(torch.rand(2, 3, 16, 16))
    strict = sys.modules[next(m for m in sys.modules if m.startswith("zoo_local_plugin_strict_"))].Strict
    assert strict.seen == "relu"  # the activation timm built test_resnet with
    assert all(float(m.weight.detach().abs().sum()) == 0 for m in net.modules() if isinstance(m, nn.Conv2d))


RAISES_ZOO_ERROR = '''
from torch import nn
from zoo import normalizers
from zoo.core.errors import ZooError


@normalizers.register("picky")
def picky(num_features, dim) -> nn.Module:
    """Refuses feature vectors."""
    if dim == 0:
        raise ZooError("picky needs positions; use it in a ResNet")
    return nn.Identity()
'''


def test_a_zoo_error_from_a_plugin_names_the_key_the_component_and_its_file(tmp_path, install):
    plugin = tmp_path / "picky.py"
    plugin.write_text(textwrap.dedent(RAISES_ZOO_ERROR))
    discovery.load_local([str(plugin)], kind="--plugin")
    with pytest.raises(ZooError) as info:
        zoo.models.build({"name": "mlp", "norm": "picky"}, "model", input_shape=(1, 8, 8), num_classes=10)
    assert str(info.value) == (
        f"model.norm: normalizer 'picky' (plugin file {plugin}): picky needs positions; use it in a ResNet"
    )


def test_evaluating_needs_only_the_model_and_data_plugins(run, install, capsys):
    install()  # zoo-parts, which gave the optimizer, augmentation and initializer, is gone
    assert main(["eval", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["acc"] > 0.1
    with pytest.raises(PluginError, match="came from zoo-parts 1.0, which is not installed"):
        from_dict(yaml.safe_load((run / "recipe.yaml").read_text()), "recipe.yaml")  # training needs them all


@pytest.mark.parametrize(
    "command", ["train", "show", "augment", "eval", "predict", "list", "init-explorer", "sanity", "lr-find",
                "sweep", "check-plugin"],
)
def test_plugin_is_accepted_by_every_command_that_resolves_components(command):
    positional = {"sweep": ["s.yaml"], "check-plugin": ["zoo"]}.get(command, [])
    ns = build_parser().parse_args([command, *positional, "--plugin", "a.py", "--plugin", "b"])
    assert ns.plugin == ["a.py", "b"]


FILE_PLUGIN = TAKEOVER.replace('"relu"', '"sq"').replace("nn.Tanh()", "nn.Sigmoid()")


def test_list_imports_a_plugin_file_and_a_file_and_a_package_of_one_name_stay_apart(tmp_path, install, capsys):
    install("acts")  # an installed package `acts` registering sq
    plugin = tmp_path / "acts.py"  # and a file of the same module name registering sq
    plugin.write_text(textwrap.dedent(FILE_PLUGIN))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)  # the clash is warned about; here it is on purpose
        assert main(["list", "activations", "--json", "--plugin", str(plugin)]) == 0
    names = {row["name"] for row in json.loads(capsys.readouterr().out)}
    assert {"acts:sq", "acts.py:sq"} <= names
    assert type(zoo.activations.build("acts.py:sq")) is nn.Sigmoid
    assert type(zoo.activations.build("acts:sq")) is nn.Tanh


def test_parallel_ensemble_members_import_the_parents_plugin_files(tmp_path, install):
    import multiprocessing

    from zoo.training.ensemble_training import _fit_member, _share_stop_request

    plugin = tmp_path / "member_act.py"
    plugin.write_text(textwrap.dedent(FILE_PLUGIN).replace('"sq"', '"member_act"'))
    discovery.load_local([str(plugin)], kind="--plugin")
    assert str(plugin) in discovery.loaded_by_name()  # what the parent hands its workers
    recipe = zoo.core.recipe.load("mlp-digits", ["model.activation=member_act", "trainer.max_epochs=1",
                                                 "model.width=8"]).to_dict()
    install()  # a fresh worker process: the file is not imported there
    assert "member_act" not in zoo.activations
    _share_stop_request(multiprocessing.Value("i", 0))  # as the pool's initializer does in a worker
    member = tmp_path / "members" / "m0"
    assert _fit_member(recipe, None, str(member), None, None, [str(plugin)]) is None  # finished, not stopped
    assert (member / "metrics.json").is_file() and "member_act" in zoo.activations


@pytest.mark.parametrize("shape", [[12], [2, 6]])
def test_the_augmentation_picture_draws_feature_vectors_and_sequences(tmp_path, shape):
    from zoo.data.grid import augmentation_grid

    recipe = zoo.core.recipe.load(
        "mlp-digits", ["data.name=synthetic", f"data.shape={shape}", "data.n_train=40", "augment=[mixup]"]
    )
    out = augmentation_grid(recipe, tmp_path / "grid.png", n=4)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["zoo", "json", "torch"])
def test_new_plugin_refuses_a_name_that_shadows_an_importable_module(name, tmp_path, capsys):
    assert main(["new-plugin", name, "--out", str(tmp_path / "pkg")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"zoo: error: new-plugin: '{name}' would be imported as '{name}', which is already ")
    assert len(err.splitlines()) == 1 and not (tmp_path / "pkg").exists()


@pytest.mark.parametrize("command", [["show", "mlp-digits"], ["check-plugin"]])
def test_a_plugin_file_that_is_a_pipe_or_a_folder_is_named_as_such(tmp_path, capsys, command):
    os.mkfifo(tmp_path / "pipe.py")  # importing it would wait for a writer forever
    (tmp_path / "folder.py").mkdir()
    for name in ("pipe.py", "folder.py"):
        path = tmp_path / name
        args = [*command, str(path)] if command == ["check-plugin"] else [*command, "--plugin", str(path)]
        assert main(args) == 2
        assert f"plugin file {path} is not a regular file (a pipe, a device or a folder?)" in capsys.readouterr().err
