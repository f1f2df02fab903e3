"""Recipe resolution: inheritance, overrides, validation with errors that name file and key."""

from __future__ import annotations

import pytest

from zoo.core.errors import RecipeError, RegistryError, ZooError
from zoo.core.recipe import load, merge, parse_override


def write(path, text):
    path.write_text(text)
    return path


def test_merge_is_deep_for_mappings_and_replaces_lists():
    base = {"model": {"name": "mlp", "widths": [1, 2], "dropout": 0.1}, "seed": 1}
    top = {"model": {"widths": [9]}, "seed": 2}
    assert merge(base, top) == {"model": {"name": "mlp", "widths": [9], "dropout": 0.1}, "seed": 2}
    assert base["model"]["widths"] == [1, 2]  # inputs untouched


def test_naming_another_component_replaces_the_spec():
    base = {"model": {"name": "mlp", "width": 512, "activation": {"name": "leaky_relu", "negative_slope": 0.1}}}
    top = {"model": {"name": "resnet", "depth": 20}}
    assert merge(base, top) == {"model": {"name": "resnet", "depth": 20}}
    same = merge(base, {"model": {"name": "mlp", "activation": {"name": "gelu"}}})
    assert same["model"] == {"name": "mlp", "width": 512, "activation": {"name": "gelu"}}


def test_override_of_a_name_drops_the_old_parameters(tmp_path):
    recipe = write(tmp_path / "r.yaml", "model: {name: mlp, width: 7, activation: {name: leaky_relu, negative_slope: 0.3}}\ndata: digits\n")
    r = load(recipe, ["model.activation.name=gelu", "model.name=resnet"])
    assert r.model["name"] == "resnet" and r.model["width"] is None
    assert r.model["activation"] == {"name": "relu"}


def test_a_name_outside_the_component_sections_is_an_ordinary_key():
    r = load(None, ["logger.wandb.mode=offline", "logger.wandb.project=p", "logger.wandb.name=mine"])
    assert (r.logger.wandb.mode, r.logger.wandb.project, r.logger.wandb.name) == ("offline", "p", "mine")


def test_base_is_relative_to_the_recipe_and_defaults_are_filled(tmp_path):
    (tmp_path / "common").mkdir()
    write(tmp_path / "common" / "base.yaml", "model: {name: mlp, width: 32, activation: tanh}\ndata: digits\nseed: 3\n")
    child = write(tmp_path / "child.yaml", "base: common/base.yaml\nmodel: {depth: 1}\noptimizer: {name: sgd, lr: 0.5}\n")
    r = load(child)
    assert r.model["width"] == 32 and r.model["depth"] == 1
    assert r.model["activation"] == {"name": "tanh"}
    assert r.model["dropout"] == 0.0  # a default, written out
    assert r.optimizer == {"name": "sgd", "lr": 0.5, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}
    assert r.seed == 3 and r.name == "child"


def test_several_bases_merge_in_order(tmp_path):
    write(tmp_path / "a.yaml", "model: {name: mlp, width: 8}\ndata: digits\nseed: 1\n")
    write(tmp_path / "b.yaml", "seed: 2\nmodel: {depth: 3}\n")
    r = load(write(tmp_path / "c.yaml", "base: [a.yaml, b.yaml]\n"))
    assert (r.seed, r.model["width"], r.model["depth"]) == (2, 8, 3)


def test_overrides_are_typed_and_reach_nested_specs(tmp_path):
    recipe = write(tmp_path / "r.yaml", "model: {name: mlp, activation: leaky_relu}\ndata: digits\n")
    r = load(recipe, ["optimizer.lr=0.05", "model.activation.negative_slope=0.2", "trainer.max_epochs=3", "model.widths=[4, 5]"])
    assert r.optimizer["lr"] == 0.05 and isinstance(r.optimizer["lr"], float)
    assert r.model["activation"] == {"name": "leaky_relu", "negative_slope": 0.2}
    assert r.trainer.max_epochs == 3 and r.model["widths"] == [4, 5]
    assert load(recipe, ["model.activation=gelu"]).model["activation"]["name"] == "gelu"


def test_parse_override_rejects_malformed():
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    for bad in ("novalue", "=3", "a..b=1"):
        with pytest.raises(RecipeError, match="expected key.sub=value"):
            parse_override(bad)


@pytest.mark.parametrize(
    "text, overrides, error, pattern",
    [
        ("model: mlp\ndata: digits\ntrainr: {max_epochs: 1}\n", [], RecipeError, r"r\.yaml: unknown key 'trainr' \(did you mean: trainer"),
        ("model: mlp\ndata: digits\ntrainer: {max_epoch: 1}\n", [], RecipeError, r"unknown key 'trainer\.max_epoch'.*did you mean: max_epochs"),
        ("model: mlp\ndata: digits\ntrainer: {max_epochs: many}\n", [], RecipeError, r"r\.yaml: trainer\.max_epochs: .*integer.*got 'many'"),
        ("model: mlp\ndata: digits\n", ["optimizer.lr=-1"], RegistryError, r"r\.yaml: optimizer\.lr: .*greater than 0, got -1"),
        ("model: {name: mlpp}\ndata: digits\n", [], RegistryError, r"r\.yaml: model: unknown models 'mlpp' \(did you mean: mlp\?\)"),
        ("model: {name: mlp, activaton: relu}\ndata: digits\n", [], RegistryError, r"unknown parameter 'activaton' for models 'mlp' \(did you mean: activation\?\)"),
        ("model: {name: mlp, activation: rleu}\ndata: digits\n", [], RegistryError, r"model\.activation: unknown activations 'rleu' \(did you mean: relu"),
        ("data: digits\n", [], RecipeError, r"missing required key 'model'"),
        ("model: mlp\ndata: digits\nseed: [1\n", [], RecipeError, r"r\.yaml:\d+:\d+: not valid YAML"),
        ("- just\n- a list\n", [], RecipeError, "must be a YAML mapping"),
        ("base: nowhere.yaml\n", [], RecipeError, r"base: recipe nowhere\.yaml not found"),
        ("model: mlp\ndata: digits\n", ["trainer.fast_dev_runn=1"], RecipeError, r"not a Lightning Trainer argument \(did you mean: fast_dev_run\?\)"),
    ],
)
def test_malformed_recipes_say_file_key_and_problem(tmp_path, text, overrides, error, pattern):
    recipe = write(tmp_path / "r.yaml", text)
    with pytest.raises(error, match=pattern):
        load(recipe, overrides)


def test_inheritance_loop_is_reported(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(RecipeError, match="in a loop"):
        load(tmp_path / "a.yaml")


def test_other_trainer_arguments_pass_through(tmp_path):
    recipe = write(tmp_path / "r.yaml", "model: mlp\ndata: digits\ntrainer: {limit_train_batches: 2}\n")
    assert load(recipe).to_dict()["trainer"]["limit_train_batches"] == 2


def test_unknown_recipe_name_suggests_shipped_ones():
    with pytest.raises(ZooError, match="did you mean: mlp-digits"):
        load("mlp-digit")


def test_resolved_recipe_round_trips(tmp_path):
    r = load("mlp-digits")
    again = write(tmp_path / "again.yaml", r.to_yaml())
    assert load(again).to_dict() == r.to_dict()


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("model: mlp\ndata: digits\noptimizer:\n  name: sgd\n  lr: 0.1\n  lr: 0.2\n",
         r"r\.yaml:6:3: not valid YAML: duplicate key 'lr' \(first at line 5\)"),
        ("model: mlp\ndata: digits\nseed: 1\nseed: 2\n", r"r\.yaml:4:1: not valid YAML: duplicate key 'seed' \(first at line 3\)"),
        ("model: {name: mlp, width: 8, width: 9}\ndata: digits\n", r"r\.yaml:1:30: not valid YAML: duplicate key 'width'"),
    ],
    ids=["nested", "top-level", "flow-mapping"],
)
def test_a_key_given_twice_is_refused_with_file_line_and_key(tmp_path, text, pattern):
    with pytest.raises(RecipeError, match=pattern):
        load(write(tmp_path / "r.yaml", text))


def test_keys_merged_in_by_an_alias_may_be_overridden(tmp_path):
    recipe = write(tmp_path / "r.yaml", "model: mlp\ndata: digits\nx-opt: &opt {name: sgd, lr: 0.1}\n"
                   "optimizer:\n  <<: *opt\n  lr: 0.3\n")
    with pytest.raises(RecipeError, match="unknown key 'x-opt'"):  # the merge itself is fine; the key is not
        load(recipe)
    recipe.write_text("model: mlp\ndata: digits\noptimizer:\n  <<: {name: sgd, lr: 0.1}\n  lr: 0.3\n")
    assert load(recipe).optimizer["lr"] == 0.3


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("trainer.max_epochs=true", r"trainer\.max_epochs: .*valid integer, got True"),
        ("trainer.max_epochs=2.0", r"trainer\.max_epochs: .*valid integer, got 2\.0"),
        ("seed='3'", r"seed: .*valid integer, got '3'"),
        ("tta.flip=1", r"tta\.flip: .*valid boolean, got 1"),
        ("regularization.l2=false", r"regularization\.l2: .*valid number, got False"),
        ("checkpoint.on_signal='yes'", r"checkpoint\.on_signal: .*valid boolean, got 'yes'"),
        ("model.width=true", r"model\.width: .*valid integer, got True"),
        ("model.dropout=true", r"model\.dropout: .*valid number, got True"),
        ("data.batch_size=64.0", r"data\.batch_size: .*valid integer, got 64\.0"),
        ("optimizer.lr='0.1'", r"optimizer\.lr: .*valid number, got '0\.1'"),
        ("augment=[{name: crop, padding: true}]", r"augment\[0\]\.padding: .*valid integer, got True"),
    ],
)
def test_no_silent_coercion_of_booleans_numbers_and_strings(override, pattern):
    with pytest.raises(ZooError, match=pattern):
        load("mlp-digits", [override])


def test_an_int_still_stands_for_a_float_and_tuples_take_lists():
    r = load("mlp-digits", ["regularization.l2=1", "optimizer.lr=1", "augment=[{name: affine, scale: [1, 2]}]"])
    assert r.regularization.l2 == 1.0 and r.optimizer["lr"] == 1
    assert r.augment[0]["scale"] == [1.0, 2.0]
    # YAML 1.1 reads 1e-3 (no dot) as a string, which strict validation would refuse: it is read as a number
    assert load("mlp-digits", ["optimizer.lr=1e-3", "regularization.l2=2E+1"]).optimizer["lr"] == 0.001


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("trainer.max_steps=0", r"trainer\.max_steps: 0 steps would leave the network untrained"),
        ("trainer.max_steps=-2", r"trainer\.max_steps: .*greater than or equal to -1"),
        ("trainer.limit_train_batches=0", r"trainer\.limit_train_batches: 0 batches would leave the network untrained"),
        ("trainer.limit_train_batches=0.0", r"trainer\.limit_train_batches: 0 batches"),
    ],
)
def test_settings_that_train_nothing_are_refused(override, pattern):
    with pytest.raises(RecipeError, match=pattern):
        load("mlp-digits", [override])
