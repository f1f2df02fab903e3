"""The model an export holds: raw images in, class probabilities out.

It does what zoo's evaluation does to a batch (zoo.training.classifier.Classifier.probabilities): pixels
to floats on the [0, 1] scale, the run's standardization, the network, softmax, and with test-time
augmentation the mean over the recipe's views; an ensemble averages its members' probabilities
(zoo.training.ensemble_model). Everything runs in float32, whatever precision the run trained in.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.core.errors import ZooError
from zoo.data.tta import views
from zoo.training.classifier import Classifier
from zoo.training.ensemble_model import Ensemble

NO_TTA = {"flip": False, "crops": 0}


def members_of(model: Classifier | Ensemble) -> list[Classifier]:
    """The classifiers whose probabilities the model averages (itself alone for a single model)."""
    if isinstance(model, Ensemble):
        if not model.gives_probabilities:
            raise ZooError(
                "a combine: vote ensemble cannot be exported: it gives votes, not probabilities, and its "
                "ties are broken outside any graph; export a combine: mean ensemble, or its members one at a "
                "time"
            )
        return list(model.members)
    return [model]


def set_tta(model: Classifier | Ensemble, enabled: bool) -> None:
    """Keep or drop the recipe's test-time views, in zoo's own evaluation path as in the exported graph."""
    if not enabled:
        for member in members_of(model):
            member.tta = {**member.tta, **NO_TTA}


def view_count(member: Classifier) -> int:
    tta = member.tta
    return (1 + tta["crops"]) * (2 if tta["flip"] else 1)


class MemberGraph(nn.Module):
    """One classifier: preprocessing, its views, the network, softmax."""

    def __init__(self, member: Classifier, from_uint8: bool) -> None:
        super().__init__()
        self.net = member.net.float().eval()
        # standardization statistics as the run measured them on its training split, on the [0, 1] scale
        self.register_buffer("mean", member.input_mean.detach().float().clone())
        self.register_buffer("std", member.input_std.detach().float().clone())
        self.from_uint8 = from_uint8
        self.tta = {key: member.tta[key] for key in ("flip", "crops", "shift")}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32)
        if self.from_uint8:
            x = x / 255
        if not (self.tta["flip"] or self.tta["crops"]):
            return self.net((x - self.mean) / self.std).softmax(-1)
        # every view through the network in one batch: one copy of the network in the graph, not one per view
        batch = torch.cat(views(x, **self.tta))
        probs = self.net((batch - self.mean) / self.std).softmax(-1)
        return probs.view(-1, x.shape[0], probs.shape[-1]).mean(0)


class ExportGraph(nn.Module):
    """The members' mean probability; a single model is an ensemble of one, its output its own."""

    def __init__(self, members: list[Classifier], from_uint8: bool) -> None:
        super().__init__()
        self.members = nn.ModuleList(MemberGraph(m, from_uint8) for m in members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        probs = [member(images) for member in self.members]
        return probs[0] if len(probs) == 1 else torch.stack(probs).mean(0)


def build_graph(model: Classifier | Ensemble, input_dtype: torch.dtype) -> ExportGraph:
    """The graph of ``model`` (with the test-time views its members keep: see set_tta), in eval mode."""
    return ExportGraph(members_of(model), from_uint8=input_dtype == torch.uint8).eval()


def flops_per_image(graph: ExportGraph, input_shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """FLOPs of one image through the whole graph, every view and member included, as zoo show --stats counts
    them: torch.utils.flop_counter over a batch of two, halved (a multiply-add is two)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        graph(torch.zeros((2, *input_shape), dtype=dtype))
    return counter.get_total_flops() // 2
