"""Registry behaviour: registering, lookup, spec validation, clashes, and plugin discovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field
from typing_extensions import Annotated

import zoo
from zoo.core.errors import PluginError, RegistryError
from zoo.core.registry import REGISTRIES, Component, Origin, Registry, current_source


@pytest.fixture
def reg():
    r = Registry("widgets_under_test")
    yield r
    del REGISTRIES["widgets_under_test"]


def test_register_forms_and_default_name(reg):
    @reg.register
    def plain(*, size: int = 3):
        """A plain widget."""
        return ("plain", size)

    @reg.register("named")
    def _named(*, colour: Literal["red", "blue"] = "red"):
        """A named widget."""
        return ("named", colour)

    def third():
        return "third"

    reg.register(third, name="other")
    assert reg.names() == ["named", "other", "plain"]
    assert reg.get("plain").summary == "A plain widget."
    assert reg.get("plain").signature_text() == "plain(size: int = 3)"
    assert reg.build("plain") == ("plain", 3)
    assert reg.build({"name": "plain", "size": 5}) == ("plain", 5)
    assert reg.build({"name": "named", "colour": "blue"}) == ("named", "blue")
    assert reg.build("other") == "third"


def test_unknown_name_names_registry_and_close_matches(reg):
    @reg.register
    def leaky_relu():
        return 1

    with pytest.raises(RegistryError) as info:
        reg.get("leaky_rellu", where="model.activation")
    msg = str(info.value)
    assert "model.activation" in msg and "widgets_under_test" in msg and "'leaky_rellu'" in msg
    assert "did you mean: leaky_relu?" in msg


def test_bad_parameters_list_what_is_accepted(reg):
    @reg.register
    def knob(*, slope: float = 0.01, mode: Literal["a", "b"] = "a"):
        return slope

    with pytest.raises(RegistryError, match=r"unknown parameter 'slop' for widgets_under_test 'knob' \(did you mean: slope\?\); accepted: slope: float = 0.01"):
        reg.build({"name": "knob", "slop": 0.1})
    with pytest.raises(RegistryError, match=r"^widgets_under_test\.slope: .*number.*got 'steep'"):
        reg.build({"name": "knob", "slope": "steep"})
    with pytest.raises(RegistryError, match=r"\.mode: .*'a' or 'b'"):
        reg.build({"name": "knob", "mode": "c"})
    with pytest.raises(RegistryError, match="needs a 'name' key"):
        reg.build({"slope": 0.1})
    with pytest.raises(RegistryError, match="expected a component name"):
        reg.build(3)


def test_context_is_the_callers_and_required_params_are_reported():
    r = Registry("ctx_under_test", context=("num_features",))
    try:

        @r.register
        def layer(num_features, *, kind: str):
            return (num_features, kind)

        assert [p.name for p in r.get("layer").params] == ["kind"]
        assert r.build({"name": "layer", "kind": "x"}, num_features=7) == (7, "x")
        with pytest.raises(RegistryError, match="num_features: set by the caller"):
            r.build({"name": "layer", "kind": "x", "num_features": 3}, num_features=7)
        with pytest.raises(RegistryError, match="needs parameter 'kind'"):
            r.build("layer", num_features=7)
    finally:
        del REGISTRIES["ctx_under_test"]


def test_validate_fills_defaults_of_nested_specs(reg):
    @reg.register
    def block(*, act: Annotated[zoo.Spec, Component("activations")] = "relu", depth: int = 2):
        return act

    resolved = reg.validate({"name": "block", "act": {"name": "leaky_relu"}})
    assert resolved["depth"] == 2
    assert resolved["act"]["name"] == "leaky_relu"
    assert resolved["act"]["negative_slope"] == pytest.approx(0.01)
    with pytest.raises(RegistryError, match=r"block\.act.*unknown activations 'gelo'.*did you mean: gelu"):
        reg.validate({"name": "block", "act": "gelo"}, where="block")


def _register_as(reg, origin, factory, name):
    token = current_source.set(origin)
    try:
        reg.register(factory, name=name)
    finally:
        current_source.reset(token)


def test_same_name_from_two_packages_is_an_error_for_that_name_only(reg):
    def first():
        """The first package's widget."""
        return 1

    def second():
        """The second package's widget."""
        return 2

    def other():
        """A widget only the second package has."""
        return 3

    _register_as(reg, Origin("pkg-one (entry point 'a')", package="pkg-one", version="1.0"), first, "clash")
    _register_as(reg, Origin("pkg-two (entry point 'b')", package="pkg-two", version="2.0"), second, "clash")
    _register_as(reg, Origin("pkg-two (entry point 'b')", package="pkg-two", version="2.0"), other, "other")
    with pytest.raises(RegistryError) as info:
        reg.build("clash", "model.thing")
    message = str(info.value)
    assert message.startswith("model.thing: widgets_under_test 'clash' is registered by 2 plugins")
    assert "pkg-one (entry point 'a')" in message and "pkg-two (entry point 'b')" in message
    assert "write pkg-one:clash or pkg-two:clash" in message
    # a qualified name picks one; the other names of both packages are untouched
    assert reg.build("pkg-one:clash") == 1 and reg.build("pkg-two:clash") == 2 and reg.build("Pkg_Two:clash") == 2
    assert reg.build("other") == 3
    assert reg.names() == ["other", "pkg-one:clash", "pkg-two:clash"]
    assert reg.validate("pkg-two:clash")["name"] == "pkg-two:clash"  # the resolved recipe keeps the choice
    with pytest.raises(RegistryError, match="unknown widgets_under_test 'pkg-three:clash': no plugin pkg-three"):
        reg.get("pkg-three:clash")
    # the same definition again (a re-import) is fine; a second, different one from the same package is not
    _register_as(reg, Origin("pkg-one (entry point 'a')", package="pkg-one", version="1.0"), first, "clash")

    def first_again():
        """Another factory under the same name."""

    with pytest.raises(RegistryError, match="'clash' is registered twice by pkg-one"):
        _register_as(reg, Origin("pkg-one (entry point 'a')", package="pkg-one"), first_again, "clash")


def test_names_a_recipe_cannot_write_are_refused(reg):
    def widget():
        """A widget."""

    for bad in ("pkg:widget", "two words", "3d"):
        with pytest.raises(RegistryError, match="cannot register"):
            reg.register(widget, name=bad)


def test_builtins_describe_themselves():
    for registry in (zoo.activations, zoo.normalizers, zoo.initializers, zoo.models, zoo.datasets, zoo.optimizers, zoo.schedules):
        assert len(registry) > 0, registry.name
        for entry in registry:
            assert entry.summary, f"{registry.name} '{entry.name}' has no docstring summary"
            assert entry.source.startswith("zoo (entry point"), entry.source


# --- discovery through real entry points, in a child process with a throw-away installed plugin -----


def _fake_distribution(root: Path, dist: str, module: str, body: str) -> None:
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[zoo.plugins]\n{module} = {module}\n")


def _zoo(args: list[str], pythonpath: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run(
        [sys.executable, "-m", "zoo", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


PLUGIN = """
    from torch import nn
    from zoo import activations

    @activations.register("squareplus")
    def squareplus(*, b: float = 4.0) -> nn.Module:
        '''Squareplus, (x + sqrt(x^2 + b)) / 2: a smooth ReLU without exponentials.'''
        class Squareplus(nn.Module):
            def forward(self, x):
                return (x + (x * x + b).sqrt()) / 2
        return Squareplus()
"""


def test_entry_point_plugin_is_discovered_and_listed(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _fake_distribution(site, "zoo-squareplus", "zoo_squareplus", PLUGIN)
    out = _zoo(["list", "activations", "--json"], site, tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["squareplus"]["signature"] == "squareplus(b: float = 4.0)"
    assert rows["squareplus"]["summary"].startswith("Squareplus")
    assert rows["squareplus"]["source"].startswith("zoo-squareplus (entry point 'zoo_squareplus'")
    assert rows["relu"]["source"].startswith("zoo (entry point")


def test_two_plugins_claiming_one_name_fail_for_that_name_only(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _fake_distribution(site, "zoo-sp-one", "zoo_sp_one", PLUGIN)
    _fake_distribution(site, "zoo-sp-two", "zoo_sp_two", PLUGIN)
    listed = _zoo(["list", "activations", "--json"], site, tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = {r["name"] for r in json.loads(listed.stdout)}
    assert {"zoo-sp-one:squareplus", "zoo-sp-two:squareplus", "relu"} <= names and "squareplus" not in names
    out = _zoo(["show", "mlp-digits", "model.activation=squareplus"], site, tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "model.activation: activations 'squareplus' is registered by 2 plugins" in out.stderr
    assert "write zoo-sp-one:squareplus or zoo-sp-two:squareplus" in out.stderr
    picked = _zoo(["show", "mlp-digits", "model.activation=zoo-sp-two:squareplus", "--json"], site, tmp_path)
    assert picked.returncode == 0, picked.stderr
    resolved = json.loads(picked.stdout.strip().splitlines()[-1])
    assert resolved["model"]["activation"] == {"name": "zoo-sp-two:squareplus", "b": 4.0}
    assert resolved["provenance"]["model.activation"]["package"] == "zoo-sp-two"


def test_plugin_that_fails_to_import_is_named_and_breaks_nothing_else(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _fake_distribution(site, "zoo-broken", "zoo_broken", "import no_such_module_anywhere\n")
    out = _zoo(["list", "activations"], site, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "relu" in out.stdout
    warning = [line for line in out.stderr.splitlines() if "zoo-broken" in line]
    assert len(warning) == 1 and warning[0].startswith("zoo: warning: plugin zoo-broken (entry point 'zoo_broken'")
    assert "ModuleNotFoundError: No module named 'no_such_module_anywhere'" in warning[0]
    assert "ZOO_DISABLE_PLUGINS=zoo-broken" in warning[0]
    # a recipe that asks for a component nobody registered hears about the failure
    asked = _zoo(["show", "mlp-digits", "model.activation=brokenplus"], site, tmp_path)
    assert asked.returncode == 2 and "Traceback" not in asked.stderr
    error = asked.stderr.strip().splitlines()[-1]
    assert "unknown activations 'brokenplus'" in error and "plugin zoo-broken" in error
    assert "No module named 'no_such_module_anywhere'" in error
    # disabled, it is not imported at all: no warning; on the command line or in a recipe
    quiet = _zoo(["--disable-plugins", "zoo-broken", "list", "activations"], site, tmp_path)
    assert quiet.returncode == 0 and "zoo-broken" not in quiet.stderr, quiet.stderr
    recipe = tmp_path / "quiet.yaml"
    recipe.write_text(f"base: {Path(zoo.__file__).parents[1] / 'recipes' / 'mlp-digits.yaml'}\ndisable_plugins: [zoo-broken]\n")
    shown = _zoo(["show", str(recipe), "--json"], site, tmp_path)
    assert shown.returncode == 0 and "zoo-broken" not in shown.stderr, shown.stderr
    assert json.loads(shown.stdout.strip().splitlines()[-1])["disable_plugins"] == ["zoo-broken"]


def test_recipe_plugin_file_is_loaded_relative_to_the_recipe(tmp_path):
    (tmp_path / "my_acts.py").write_text(textwrap.dedent(PLUGIN).replace("squareplus", "squareplus_local"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("plugins: [my_acts.py]\nmodel: {name: mlp, activation: squareplus_local}\ndata: digits\n")
    resolved = zoo.load_recipe(str(recipe))
    assert resolved["model"]["activation"] == {"name": "squareplus_local", "b": 4.0}
    assert zoo.activations.get("squareplus_local").source.endswith("my_acts.py (recipe plugin)")


def test_missing_recipe_plugin_is_a_plugin_error(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("plugins: [nowhere.py]\nmodel: mlp\ndata: digits\n")
    with pytest.raises(PluginError, match="nowhere.py not found"):
        zoo.load_recipe(str(recipe))


def test_container_parameters_read_plainly_in_signatures(reg):
    @reg.register("sized")
    def sized(*, widths: list[Annotated[int, Field(ge=1)]] | None = None, pair: tuple[float, float] = (0.0, 1.0)):
        """Widths and a pair."""
        return widths, pair

    text = reg.get("sized").signature_text()
    assert text == "sized(widths: list[int >= 1] | None = None, pair: tuple[float, float] = (0.0, 1.0))"


def test_zoo_plugins_lists_packages_versions_components_failures_and_disabled(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _fake_distribution(site, "zoo-broken", "zoo_broken", "raise RuntimeError('needs a GPU driver')\n")
    _fake_distribution(site, "zoo-sp-one", "zoo_sp_one", PLUGIN)
    _fake_distribution(site, "zoo-sp-two", "zoo_sp_two", PLUGIN)
    _fake_distribution(site, "zoo-quiet", "zoo_quiet", PLUGIN.replace('"squareplus"', '"quietplus"'))
    out = _zoo(["--disable-plugins", "zoo-quiet", "plugins", "--json"], site, tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {r["package"]: r for r in json.loads(out.stdout) if r["package"] != "zoo"}
    assert rows["zoo-broken"]["status"] == "failed" and rows["zoo-broken"]["version"] == "1.0"
    assert "RuntimeError: needs a GPU driver" in rows["zoo-broken"]["error"]
    assert rows["zoo-quiet"]["status"] == "disabled" and rows["zoo-quiet"]["components"] == {}
    for package in ("zoo-sp-one", "zoo-sp-two"):
        assert rows[package]["status"] == "loaded" and rows[package]["components"] == {"activations": ["squareplus"]}
        assert rows[package]["clashes"] == [f"activations 'squareplus' (use {package}:squareplus)"]
    zoo_rows = [r for r in json.loads(out.stdout) if r["package"] == "zoo"]
    # one row per entry point zoo's own pyproject.toml declares
    declared = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    built_in = len(declared["project"]["entry-points"]["zoo.plugins"])
    assert {r["status"] for r in zoo_rows} == {"loaded"} and len(zoo_rows) == built_in
    text = _zoo(["--disable-plugins", "zoo-quiet", "plugins"], site, tmp_path)
    assert "zoo-broken 1.0" in text.stdout and "[failed]" in text.stdout and "[disabled]" in text.stdout
    assert f"plugins: {built_in + 2} loaded, 1 failed, 1 disabled" in text.stdout
