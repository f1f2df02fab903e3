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
from zoo.core.errors import RecipeError, ZooError
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


def reference_vote(member_probs: list[list[list[float]]]) -> list[int]:
    """The vote winners computed independently: plain Python, exact sums (math.fsum), first index on full ties."""
    import math
    from collections import Counter

    winners = []
    for sample in zip(*member_probs):  # one sample's probabilities from each member
        k = len(sample[0])
        votes = Counter(max(range(k), key=lambda c: (row[c], -c)) for row in sample)
        summed = [math.fsum(row[c] for row in sample) for c in range(k)]
        winners.append(max(range(k), key=lambda c: (votes[c], summed[c], -c)))
    return winners


def near_uniform_ties(samples: int, members: int = 4, k: int = 10, seed: int = 0) -> torch.Tensor:
    """Members x samples x classes: members split 2-2 between two classes, probabilities all near 1/k.

    Each voted class gets a bump of 1e-4 in its voters; the two tied classes' summed probabilities differ
    by noise of 1e-6 or so, which decides the tie.
    """
    g = torch.Generator().manual_seed(seed)
    probs = torch.full((members, samples, k), 1 / k) + 1e-6 * torch.rand(members, samples, k, generator=g)
    for i in range(samples):
        a, b = torch.randperm(k, generator=g)[:2].tolist()
        probs[: members // 2, i, a] += 1e-4
        probs[members // 2 :, i, b] += 1e-4
    return probs / probs.sum(-1, keepdim=True)


def test_vote_ties_go_to_the_higher_summed_probability_however_small_the_gap():
    from zoo.training.ensemble_model import vote_counts, vote_winners

    probs = near_uniform_ties(200)
    votes = vote_counts(probs, 10)
    assert votes.dtype == torch.int64 and bool((votes.max(-1).values == 2).all())  # every sample a 2-2 tie
    assert vote_winners(probs).tolist() == reference_vote(probs.tolist())
    # the old rule, vote share + 1e-6 x mean probability in float32, loses these gaps: the cases are hard
    old = (torch.nn.functional.one_hot(probs.argmax(-1), 10).float().mean(0) + 1e-6 * probs.mean(0)).argmax(-1)
    assert (old != vote_winners(probs)).sum() > 20


def test_vote_majorities_and_shares_on_real_members():
    members = [tiny_member(s) for s in range(3)]
    x = torch.rand(40, 1, 8, 8)
    probs = torch.stack([m.predict_proba(x) for m in members])
    assert torch.allclose(Ensemble(members, "mean").predict_proba(x), probs.mean(0))
    voting = Ensemble(members, "vote")
    assert voting.predict(x).tolist() == reference_vote(probs.tolist())
    shares = voting.vote_shares(probs)
    assert torch.allclose(shares.sum(-1), torch.ones(40)) and set((shares * 3).round().unique().tolist()) <= {0, 1, 2, 3}
    with pytest.raises(ZooError, match="votes, not probabilities"):
        voting.predict_proba(x)  # what is no probability is not handed out as one


def test_vote_ensemble_reports_votes_and_no_probability_metrics():
    from collections import Counter

    from zoo.training.evaluation import evaluate, split_of

    members = [tiny_member(3), tiny_member(3), tiny_member(4), tiny_member(4)]  # pairs: unanimous or tied
    data = load(None).data
    voted = evaluate(Ensemble(members, "vote"), data)
    averaged = evaluate(Ensemble(members, "mean"), data)
    assert all(voted[key] is None for key in ("nll", "roc_auc", "pr_auc", "top5_acc"))
    assert all(isinstance(averaged[key], float) for key in ("nll", "roc_auc", "pr_auc", "top5_acc"))
    assert voted["members"] == averaged["members"] and len(voted["precision"]) == 10
    _, test = split_of(data, "test")
    picks = torch.stack([m.predict_proba(test.x).argmax(-1) for m in members]).T.tolist()
    counts = [sorted(Counter(row).values(), reverse=True) for row in picks]
    winners = reference_vote(torch.stack([m.predict_proba(test.x) for m in members]).tolist())
    assert voted["acc"] == pytest.approx(sum(w == t for w, t in zip(winners, test.y.tolist())) / len(winners))
    assert voted["vote"] == {
        "winning_share": pytest.approx(sum(c[0] for c in counts) / (4 * len(counts))),
        "unanimous": pytest.approx(sum(c[0] == 4 for c in counts) / len(counts)),
        "ties": sum(len(c) > 1 and c[0] == c[1] for c in counts),
    }
    assert voted["vote"]["ties"] > 0 and voted["vote"]["unanimous"] > 0  # both kinds occur: the counts are tested


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


def test_eval_and_predict_of_a_vote_ensemble_on_the_command_line(tmp_path):
    Ensemble([tiny_member(3), tiny_member(3), tiny_member(4)], "vote").save(tmp_path / "vote.ckpt")
    out = subprocess.run([sys.executable, "-m", "zoo", "eval", str(tmp_path / "vote.ckpt"), "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["nll"] is None and report["roc_auc"] is None and "votes, not probabilities" in out.stdout
    out = subprocess.run([sys.executable, "-m", "zoo", "predict", str(tmp_path / "vote.ckpt")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "index,prediction,vote_share,label" and len(lines) == 361
    assert {line.split(",")[2] for line in lines[1:]} <= {"0.3333", "0.6667", "1.0000"}
