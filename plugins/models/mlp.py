"""Multi-layer perceptron: the inputs flattened, then hidden layers of linear -> norm -> activation -> dropout."""

from __future__ import annotations

from math import prod
from typing import Literal

import torch
from pydantic import Field
from torch import nn
from typing_extensions import Annotated

from zoo import ActivationSpec, InitSpec, NormSpec, activations, initializers, models, normalizers

Width = Annotated[int, Field(ge=1)]


class MLP(nn.Module):
    """Hidden layers built from registry components, then a linear classifier head."""

    def __init__(self, in_features, num_classes, widths, activation, norm, norm_position, dropout, init):
        super().__init__()
        self.activation_spec, self.init_spec = activation, init
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = in_features
        for width in widths:
            act = activations.build(activation, "model.activation")
            # An activation may fold several units into one (maxout): the linear layer feeds it all of them.
            width_pre = width * getattr(act, "width_factor", 1)
            norm_features = width_pre if norm_position == "before" else width
            norm_layer = normalizers.build(norm, "model.norm", num_features=norm_features, dim=0)
            has_norm = not isinstance(norm_layer, nn.Identity)
            # A norm right after the linear layer subtracts the mean, so a bias there would do nothing.
            layers.append(nn.Linear(width_in, width_pre, bias=not (has_norm and norm_position == "before")))
            layers += [norm_layer, act] if norm_position == "before" else [act, norm_layer]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width_in = width
        head = nn.Linear(width_in, num_classes)
        head.zoo_nonlinearity = "linear"  # no activation follows the logits
        layers.append(head)
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    def initialize(self, sample: torch.Tensor | None = None) -> None:
        initializers.build(self.init_spec, "model.init").apply(self, activation=self.activation_spec, sample=sample)


@models.register("mlp")
def mlp(
    input_shape,
    num_classes,
    *,
    depth: Annotated[int, Field(ge=0)] = 2,
    width: Width = 256,
    widths: list[Width] | None = None,
    activation: ActivationSpec = "relu",
    norm: NormSpec = "none",
    norm_position: Literal["before", "after"] = "before",
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0,
    init: InitSpec = "auto",
) -> MLP:
    """Multi-layer perceptron: ``depth`` hidden layers of ``width`` units (or explicit ``widths``), then a linear head.

    Each hidden layer is linear -> norm -> activation -> dropout (``norm_position: after`` puts the
    norm after the activation). ``widths``, when given, takes the place of ``depth`` and ``width``.
    ``init`` is the initializer its ``initialize`` hook applies, with the activation's gain.
    """
    hidden = widths if widths is not None else [width] * depth
    return MLP(prod(input_shape), num_classes, hidden, activation, norm, norm_position, dropout, init)
