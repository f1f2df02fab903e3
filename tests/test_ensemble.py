"""Ensembles: member recipes, combining rules, saving and loading, and training one from a recipe."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

import zoo
from zoo.core.errors import RecipeError
from zoo.core.recipe import load
from zoo.training.classifier import Classifier
from zoo.training.ensemble_model import Ensemble
from zoo.training.ensemble_training import member_recipes
from zoo.training.evaluation import load_model


def tiny_member(seed: int) -> Classifier:
    torch.manual_seed(seed)
    recipe = load(None, ["model.width=8", "model.depth=1"]).to_dict()
    return Classifier(recipe, (1, 8, 8), 10).eval()


def test_member_recipes_get_their_own_seed_and_overrides():
    r = load(None, ["ensemble.members=3", "seed=7"])
    members = member_recipes(r)
    assert [m.seed for m in members] == [7, 8, 9]
    assert all(m.ensemble is None for m in members) and members[2].name == "mlp-digits-m2"
    r = load(None, ["ensemble.members=2", "ensemble.seeds=[3, 11]",
                    "ensemble.member_overrides=[['model.activation=gelu'], ['model={name: resnet, depth: 8}']]"])
    a, b = member_recipes(r)
    assert (a.seed, b.seed) == (3, 11)
    assert a.model["activation"]["name"] == "gelu" and b.model["name"] == "resnet" and b.model["depth"] == 8
    with pytest.raises(RecipeError, match="2 seeds for 3 members"):
        member_recipes(load(None, ["ensemble.members=3", "ensemble.seeds=[1, 2]"]))


def test_mean_averages_probabilities_and_vote_counts_argmaxes():
    members = [tiny_member(s) for s in range(3)]
    x = torch.rand(20, 1, 8, 8)
    probs = torch.stack([m.predict_proba(x) for m in members])
    assert torch.allclose(Ensemble(members, "mean").predict_proba(x), probs.mean(0))
    voted = Ensemble(members, "vote").predict_proba(x).argmax(-1)
    picks = probs.argmax(-1)
    for i in range(20):
        counts = torch.bincount(picks[:, i], minlength=10)
        assert counts[voted[i]] == counts.max()  # the majority (or a tied) class wins


def test_saved_ensemble_loads_safely_and_predicts_the_same(tmp_path):
    ens = Ensemble([tiny_member(s) for s in range(2)], "mean")
    ens.save(tmp_path / "e.ckpt")
    raw = torch.load(tmp_path / "e.ckpt", weights_only=True)  # plain containers and tensors only
    assert raw["format"] == "zoo-ensemble-v1" and len(raw["members"]) == 2
    again = load_model(tmp_path / "e.ckpt")
    x = torch.rand(5, 1, 8, 8)
    assert isinstance(again, Ensemble) and torch.allclose(again.predict_proba(x), ens.predict_proba(x))


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    evil = _Payload()
    evil.target = tmp_path / "pwned"
    with open(tmp_path / "evil.ckpt", "wb") as f:
        pickle.dump({"state_dict": evil}, f)
    out = subprocess.run([sys.executable, "-m", "zoo", "eval", str(tmp_path / "evil.ckpt")], capture_output=True, text=True)
    assert out.returncode == 2
    assert "refused to load" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "pwned").exists()


def test_ensemble_recipe_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = zoo.train(None, ["ensemble.members=3", "trainer.max_epochs=2", "model.width=64", "augment=[]"], progress=False)
    assert len(result.members) == 3 and {m["seed"] for m in result.members} == {0, 1, 2}
    assert result.ensemble_acc == result.test_acc and 0.8 < result.test_acc <= 1
    assert result.best_checkpoint.endswith("ensemble.ckpt")
    out = subprocess.run([sys.executable, "-m", "zoo", "eval", result.run_dir, "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["acc"] == pytest.approx(result.test_acc) and len(report["members"]) == 3
    assert report["members"] == pytest.approx([m["test_acc"] for m in result.members])


def test_snapshot_ensemble_keeps_one_member_per_cycle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = zoo.train(
        "mlp-digits-snapshot",
        ["trainer.max_epochs=6", "schedule.cycle_epochs=2", "schedule.warmup_epochs=0", "optimizer.lr=0.05",
         "model.width=64", "augment=[]"],
        progress=False,
    )
    assert [m["snapshot"].split("-step")[0] for m in result.members] == ["cycle-0", "cycle-1", "cycle-2"]
    steps = [int(m["snapshot"].split("step")[1].split(".")[0]) for m in result.members]
    assert steps[1] - steps[0] == steps[2] - steps[1] == steps[0]  # equal cycles, ending on cycle boundaries
    assert result.test_acc > 0.8


def test_members_trained_in_parallel_processes_match_sequential_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["ensemble.members=2", "trainer.max_epochs=2", "model.width=32", "augment=[]"]
    one_by_one = zoo.train(None, common, progress=False)
    together = zoo.train(None, [*common, "ensemble.parallel=2"], progress=False)
    assert [m["test_acc"] for m in together.members] == [m["test_acc"] for m in one_by_one.members]
    assert together.ensemble_acc == one_by_one.ensemble_acc
