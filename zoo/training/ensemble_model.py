"""Ensembles: several trained classifiers combined by averaging probabilities or by majority vote.

A ``mean`` ensemble is a classifier with probabilities like any other. A ``vote`` ensemble has votes:
each member's top class counts once, the class with most votes wins, and a tie goes to the tied class
with the highest summed member probability. Its output per class is a vote share (votes / members),
which is no probability: a 3-of-5 share says nothing about how likely the class is, so likelihood
and ranking metrics (NLL, ROC-AUC, PR-AUC, top-5) are not computed for it (see evaluation.evaluate).

An ensemble is saved as one file of plain containers and tensors (each member's resolved recipe,
input shape and state dict), so it loads with ``torch.load(weights_only=True)`` and needs no pickled code.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.core.errors import ZooError
from zoo.core.io import atomic_torch_save, torch_load
from zoo.training.classifier import Classifier

FORMAT = "zoo-ensemble-v1"


def vote_counts(probs: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, classes) int64: how many members' top class (of ``probs``, members x B x classes) each class is."""
    return nn.functional.one_hot(probs.argmax(-1), num_classes).sum(0)


def vote_winners(probs: torch.Tensor) -> torch.Tensor:
    """(B,) the class with most votes; among tied classes the one with the highest summed probability.

    Votes are integers and the tie-break a separate comparison, so neither can blur the other (adding a
    small multiple of the probability to the vote share, in float32, lost gaps below about 0.01). The
    sums are taken in float64, whose rounding (about 1e-16 of the sum) is far below the smallest gap
    float32 probabilities of a likely class can have (about 1e-8 at 0.2); classes tied on that too go to
    the lowest index.
    """
    votes = vote_counts(probs, probs.shape[-1])
    tied = votes == votes.max(-1, keepdim=True).values
    summed = probs.double().sum(0)
    return torch.where(tied, summed, torch.tensor(float("-inf"), dtype=summed.dtype)).argmax(-1)


class Ensemble(nn.Module):
    """Members that each standardize raw inputs their own way; combined by ``mean`` of probabilities or ``vote``."""

    def __init__(self, members: list[Classifier], combine: str = "mean") -> None:
        super().__init__()
        if not members:
            raise ZooError("an ensemble needs at least one member")
        if combine not in ("mean", "vote"):
            raise ZooError(f"ensemble combine must be 'mean' or 'vote', got {combine!r}")
        self.members = nn.ModuleList(members)
        self.combine = combine
        self.num_classes = members[0].num_classes
        self.recipe = members[0].recipe
        self.input_shape = members[0].input_shape

    @torch.no_grad()
    def member_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(members, B, classes) class probabilities of each member for raw inputs ``x``."""
        return torch.stack([m.predict_proba(x) for m in self.members])

    @property
    def gives_probabilities(self) -> bool:
        """Whether the combined output is a probability per class (``mean``) or a vote share (``vote``)."""
        return self.combine == "mean"

    @torch.no_grad()
    def combine_probabilities(self, probs: torch.Tensor) -> torch.Tensor:
        """The ensemble's class probabilities from its members' ``probs``: a mean ensemble's only."""
        if not self.gives_probabilities:
            raise ZooError(
                "a combine: vote ensemble gives votes, not probabilities: use its vote shares and decisions, "
                "or combine: mean for probabilities"
            )
        return probs.mean(0)

    @torch.no_grad()
    def vote_shares(self, probs: torch.Tensor) -> torch.Tensor:
        """(B, classes) share of the members whose top class each class is; each row sums to 1."""
        return vote_counts(probs, self.num_classes).to(probs.dtype) / len(self.members)

    @torch.no_grad()
    def decide(self, probs: torch.Tensor) -> torch.Tensor:
        """(B,) the ensemble's class from its members' ``probs``: by mean probability or by vote."""
        return probs.mean(0).argmax(-1) if self.gives_probabilities else vote_winners(probs)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's class for each raw input."""
        return self.decide(self.member_probabilities(x))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities of a mean ensemble (a vote ensemble has none: see vote_shares)."""
        return self.combine_probabilities(self.member_probabilities(x))

    def save(self, path: str | Path) -> None:
        payload: dict[str, Any] = {
            "format": FORMAT,
            "combine": self.combine,
            "members": [
                {
                    "recipe": m.recipe,
                    "input_shape": list(m.hparams["input_shape"]),
                    "num_classes": m.num_classes,
                    "state_dict": m.state_dict(),
                }
                for m in self.members
            ],
        }
        atomic_torch_save(payload, path)  # a crash or a full disk never leaves half an ensemble behind

    @classmethod
    def load(
        cls, path: str | Path, map_location: str | torch.device = "cpu", trusted_plugins: Iterable[str] = ()
    ) -> Ensemble:
        """An ensemble file's members; plugins their recipes name load only if in ``trusted_plugins``."""
        payload = torch_load(path, "ensemble file", map_location)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ZooError(f"{path}: not a zoo ensemble file")
        members = []
        for entry in payload["members"]:
            shape, classes = tuple(entry["input_shape"]), entry["num_classes"]
            trusted = list(trusted_plugins)
            member = Classifier.for_inference(entry["recipe"], shape, classes, str(path), trusted)
            member.load_state_dict(entry["state_dict"])
            members.append(member.eval())
        return cls(members, payload["combine"]).eval()

    @classmethod
    def from_checkpoints(cls, paths: list[str | Path], combine: str = "mean") -> Ensemble:
        members = [Classifier.load_from_checkpoint(p, map_location="cpu", weights_only=True).eval() for p in paths]
        return cls(members, combine).eval()
