"""Ensembles: several trained classifiers combined by averaging probabilities or by majority vote.

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
from zoo.training.classifier import Classifier

FORMAT = "zoo-ensemble-v1"


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

    @torch.no_grad()
    def combine_probabilities(self, probs: torch.Tensor) -> torch.Tensor:
        if self.combine == "mean":
            return probs.mean(0)
        votes = nn.functional.one_hot(probs.argmax(-1), self.num_classes).to(probs.dtype).mean(0)
        # ties go to the class with the higher mean probability: a tiny tie-breaker below one vote
        return votes + 1e-6 * probs.mean(0)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
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
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)  # atomic: a crash never leaves half an ensemble behind

    @classmethod
    def load(
        cls, path: str | Path, map_location: str | torch.device = "cpu", trusted_plugins: Iterable[str] = ()
    ) -> Ensemble:
        """An ensemble file's members; plugins their recipes name load only if in ``trusted_plugins``."""
        payload = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ZooError(f"{path}: not a zoo ensemble file")
        members = []
        for entry in payload["members"]:
            from zoo.core.recipe import from_dict

            from_dict(entry["recipe"], str(path), trusted_plugins=list(trusted_plugins))
            member = Classifier(entry["recipe"], tuple(entry["input_shape"]), entry["num_classes"])
            member.load_state_dict(entry["state_dict"])
            members.append(member.eval())
        return cls(members, payload["combine"]).eval()

    @classmethod
    def from_checkpoints(cls, paths: list[str | Path], combine: str = "mean") -> Ensemble:
        members = [Classifier.load_from_checkpoint(p, map_location="cpu", weights_only=True).eval() for p in paths]
        return cls(members, combine).eval()
