"""The small VGG-like network of the CIFAR-10 speed runs: a whitening stem and three conv groups."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import nn

import zoo
from zoo import ActivationSpec, InitSpec, NormSpec, models
from zoo.core.errors import RegistryError

Width = Annotated[int, Field(ge=1)]


class ConvGroup(nn.Module):
    """conv 3x3 -> max-pool 2 -> norm -> act -> conv 3x3 -> norm -> act: halves the resolution."""

    def __init__(self, channels_in: int, channels_out: int, act, norm) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding="same", bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = norm(channels_out)
        self.act1 = act()
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding="same", bias=False)
        self.norm2 = norm(channels_out)
        self.act2 = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.norm1(self.pool(self.conv1(x))))
        return self.act2(self.norm2(self.conv2(x)))


class SpeedrunCNN(nn.Module):
    """Stem conv (kernel 2, no padding) and activation, conv groups, global max-pool, scaled linear head."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        widths: list[int],
        stem_kernel: int,
        *,
        activation,
        norm,
        norm_scale: bool,
        init,
        dirac: bool,
        logit_scale: float,
    ) -> None:
        super().__init__()
        self.activation_spec, self.init_spec, self.dirac = activation, init, dirac

        def act() -> nn.Module:
            return zoo.activations.build(activation, "speedrun_cnn.activation")

        def make_norm(channels: int) -> nn.Module:
            layer = zoo.normalizers.build(norm, "speedrun_cnn.norm", num_features=channels, dim=2)
            weight = getattr(layer, "weight", None)
            if weight is not None and not norm_scale:
                # the scale stays at 1: with a norm after every conv it only duplicates the conv's own scale
                weight.requires_grad_(False)
            return layer

        # Twice the patch dimension: the whitening initializer fills it with +/- pairs of eigen-filters.
        stem_width = 2 * in_channels * stem_kernel**2
        self.stem = nn.Conv2d(in_channels, stem_width, stem_kernel, padding=0, bias=True)
        self.stem_act = act()
        groups, channels = [], stem_width
        for width in widths:
            groups.append(ConvGroup(channels, width, act, make_norm))
            channels = width
        self.groups = nn.Sequential(*groups)
        self.head = nn.Linear(channels, num_classes, bias=False)
        self.head.zoo_nonlinearity = "linear"  # logits: no activation follows
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.groups(self.stem_act(self.stem(x)))
        h = torch.amax(h, dim=(2, 3))  # global max-pool: the strongest response of each channel
        return self.head(h) * self.logit_scale

    def initialize(self, sample: torch.Tensor | None = None) -> None:
        zoo.initializers.build(self.init_spec, "model.init").apply(
            self, activation=self.activation_spec, sample=sample
        )
        if self.dirac:
            # Each group's convs start as (partly) the identity: its first in_channels filters pass their
            # input channel through, so the untrained net already carries the stem's whitened features.
            with torch.no_grad():
                for group in self.groups:
                    for conv in (group.conv1, group.conv2):
                        n = min(conv.in_channels, conv.out_channels)
                        nn.init.dirac_(conv.weight[:n])


@models.register("speedrun_cnn")
def speedrun_cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    widths: list[Width] = [64, 256, 256],  # noqa: B006 (pydantic copies defaults)
    stem_kernel: Annotated[int, Field(ge=1)] = 2,
    activation: ActivationSpec = "gelu",
    norm: NormSpec = {"name": "batch", "momentum": 0.4, "eps": 1e-12},  # noqa: B006
    norm_scale: bool = False,
    init: InitSpec = {"name": "whitening", "rest": "torch_default"},  # noqa: B006
    dirac: bool = True,
    logit_scale: Annotated[float, Field(gt=0)] = 1 / 9,
) -> SpeedrunCNN:
    """The CIFAR-10 speed-run network (Page 2018; Jordan 2024, airbench94): whitened stem, 3 conv groups.

    Page, "How to Train Your ResNet" (2018), and Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single
    GPU" (2024). A ``stem_kernel`` x ``stem_kernel`` stem conv whose filters are fixed +/- eigenvectors
    of the training images' patch covariance (``init``'s default: the ``whitening`` initializer, torch's
    defaults for the rest), then one group per entry of ``widths``: conv 3x3, max-pool 2, norm,
    activation, conv 3x3, norm, activation. A global max-pool and a bias-free linear head scaled by
    ``logit_scale`` give the logits. Norm scales are frozen at 1 unless ``norm_scale``; ``dirac`` starts
    each conv group as a partial identity. The defaults are airbench94's network:
    1.97 M parameters, 0.24 GFLOPs per 32x32 image (forward, as torch.utils.flop_counter counts).
    """
    if len(input_shape) != 3:
        raise RegistryError(
            f"speedrun_cnn: needs image inputs shaped (channels, height, width), got input_shape {tuple(input_shape)}"
        )
    if not widths:
        raise RegistryError("speedrun_cnn.widths: give at least one conv group width")
    side = min(input_shape[1:]) - stem_kernel + 1
    if side < 2 ** len(widths):
        raise RegistryError(
            f"speedrun_cnn: {len(widths)} conv groups halve the resolution {len(widths)} times, but the "
            f"stem leaves {side}x{side} pixels of the {input_shape[1]}x{input_shape[2]} input; use fewer widths"
        )
    return SpeedrunCNN(
        input_shape[0], num_classes, list(widths), stem_kernel,
        activation=activation, norm=norm, norm_scale=norm_scale, init=init, dirac=dirac, logit_scale=logit_scale,
    )
