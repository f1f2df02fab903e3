"""Residual networks (He et al. 2016) in the CIFAR and ImageNet layouts, post- or pre-activation, with a
small-image stem or the ImageNet one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

import zoo
from zoo import ActivationSpec, InitSpec, NormSpec, models
from zoo.core.errors import RegistryError

# ImageNet-style depths: (bottleneck?, blocks per stage).
IMAGENET_DEPTHS: dict[int, tuple[bool, tuple[int, ...]]] = {
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
}
BOTTLENECK_EXPANSION = 4


class PadShortcut(nn.Module):
    """Option A of the paper: subsample, then append zero channels. Parameter-free."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.extra = out_channels - in_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


class ResidualBlock(nn.Module):
    """A basic (two 3x3) or bottleneck (1x1, 3x3, 1x1) residual block, post- or pre-activation.

    Channel bookkeeping with a widening activation (factor k): every conv produces k times its
    nominal width, so whatever activation eventually consumes it gets the k-fold input it needs.
    Post-activation, the block's input and output are the activated (nominal-width) tensors and the
    sum before the last activation is k-fold; pre-activation, the residual stream itself is k-fold
    and the activations sit inside the branch, so identity shortcuts stay identities.
    """

    def __init__(
        self,
        in_channels: int,
        widths: list[int],
        kernels: list[int],
        stride: int,
        *,
        preact: bool,
        shortcut: str,
        act: Callable[[], nn.Module],
        norm: Callable[[int], nn.Module],
        factor: int,
        bias: bool,
    ) -> None:
        super().__init__()
        self.preact = preact
        out = widths[-1]
        # The stride goes on the 3x3 conv of a bottleneck, as in torchvision ("v1.5"): a strided 1x1
        # would simply skip three quarters of its input.
        strided = kernels.index(3)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.acts = nn.ModuleList()
        prev = in_channels
        for i, (width, k) in enumerate(zip(widths, kernels)):
            if preact:
                self.norms.append(norm(prev * factor))
                self.acts.append(act())
            s = stride if i == strided else 1
            self.convs.append(nn.Conv2d(prev, width * factor, k, stride=s, padding=k // 2, bias=bias))
            if not preact:
                self.norms.append(norm(width * factor))
                self.acts.append(act())
            prev = width

        identity_fits = in_channels == (out if preact else out * factor)
        if stride == 1 and identity_fits:
            self.shortcut = None
        elif shortcut == "pad":
            self.shortcut = PadShortcut(in_channels, out * factor, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out * factor, 1, stride=stride, bias=bias), norm(out * factor)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            h = self.acts[0](self.norms[0](x))
            # A changed shape means the stream is rebuilt anyway; taking the activated input (as the
            # reference pre-activation code does) lets the shortcut see the same features as the branch.
            skip = x if self.shortcut is None else self.shortcut(h)
            h = self.convs[0](h)
            for conv, norm, act in zip(self.convs[1:], self.norms[1:], self.acts[1:]):
                h = conv(act(norm(h)))
            return h + skip
        skip = x if self.shortcut is None else self.shortcut(x)
        h = x
        last = len(self.convs) - 1
        for i, (conv, norm, act) in enumerate(zip(self.convs, self.norms, self.acts)):
            h = norm(conv(h))
            if i < last:
                h = act(h)
        return self.acts[last](h + skip)

    def zero_init_last(self) -> None:
        """Make the residual branch start as zero, so the block starts as its shortcut."""
        if self.preact:
            # Nothing normalizes the last conv's output here, so the conv itself is what can be zeroed.
            nn.init.zeros_(self.convs[-1].weight)
            if self.convs[-1].bias is not None:
                nn.init.zeros_(self.convs[-1].bias)
        else:
            weight = getattr(self.norms[-1], "weight", None)
            if weight is not None:
                nn.init.zeros_(weight)
            else:  # a norm without an affine scale (or none at all): zero the conv instead
                nn.init.zeros_(self.convs[-1].weight)


class ResNet(nn.Module):
    """Stem, residual stages, (pre-activation: final norm+act), global average pool, dropout, linear head."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        stages: list[tuple[int, int]],
        bottleneck: bool,
        width: int,
        *,
        preact: bool,
        shortcut: str,
        stem: str,
        activation,
        norm,
        init,
        zero_init_residual: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        self.activation_spec = activation
        self.init_spec = init
        self.zero_init_residual = zero_init_residual

        def act() -> nn.Module:
            return zoo.activations.build(activation, "resnet.activation")

        def make_norm(channels: int) -> nn.Module:
            return zoo.normalizers.build(norm, "resnet.norm", num_features=channels, dim=2)

        factor = int(getattr(act(), "width_factor", 1))
        # A conv feeding a norm needs no bias (the norm's shift replaces it); without a norm it does.
        bias = isinstance(make_norm(width * factor), nn.Identity)

        kernel, stride = (7, 2) if stem == "imagenet" else (3, 1)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width * factor, kernel, stride=stride, padding=kernel // 2, bias=bias)
        )
        if not preact:  # pre-activation: the first block's own norm and activation follow the stem
            self.stem.append(make_norm(width * factor))
            self.stem.append(act())
        if stem == "imagenet":  # with the strided conv: 224x224 images reach the first stage at 56x56
            self.stem.append(nn.MaxPool2d(3, stride=2, padding=1))

        blocks = []
        channels = width
        self.stage_sizes = [count for _, count in stages]  # blocks per stage, for stages()
        for stage, (stage_width, count) in enumerate(stages):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                if bottleneck:
                    widths = [stage_width, stage_width, stage_width * BOTTLENECK_EXPANSION]
                    kernels = [1, 3, 1]
                else:
                    widths, kernels = [stage_width, stage_width], [3, 3]
                blocks.append(
                    ResidualBlock(
                        channels, widths, kernels, stride, preact=preact, shortcut=shortcut,
                        act=act, norm=make_norm, factor=factor, bias=bias,
                    )
                )
                channels = widths[-1]
        self.blocks = nn.Sequential(*blocks)
        # Pre-activation blocks end on an addition, so the stream still needs its norm and activation.
        self.final = nn.Sequential(make_norm(channels * factor), act()) if preact else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(channels, num_classes)
        self.head.zoo_nonlinearity = "linear"  # logits: no activation follows, so no ReLU gain

    def stages(self) -> list[list[str]]:
        """Parameter names of the stem, then of each stage (finetune.freeze_stages); the head in none."""
        names = [name for name, _ in self.named_parameters()]
        groups, first = [[n for n in names if n.startswith("stem.")]], 0
        for count in self.stage_sizes:
            blocks = {f"blocks.{i}." for i in range(first, first + count)}
            groups.append([n for n in names if any(n.startswith(b) for b in blocks)])
            first += count
        return groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.final(self.blocks(self.stem(x)))
        h = torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)
        return self.head(self.dropout(h))

    def initialize(self, sample: torch.Tensor | None = None) -> None:
        zoo.initializers.build(self.init_spec, "model.init").apply(
            self, activation=self.activation_spec, sample=sample
        )
        if self.zero_init_residual:
            for block in self.blocks:
                block.zero_init_last()


def _cifar_depths() -> str:
    return ", ".join(str(6 * n + 2) for n in (1, 2, 3, 5, 7, 9, 18)) + ", ..."


def _layout(depth: int, layout: str) -> tuple[str, bool, tuple[int, ...]]:
    cifar_ok = depth >= 8 and (depth - 2) % 6 == 0
    if layout == "auto":
        layout = "imagenet" if depth in IMAGENET_DEPTHS else "cifar" if cifar_ok else "?"
    if layout == "imagenet" and depth in IMAGENET_DEPTHS:
        bottleneck, counts = IMAGENET_DEPTHS[depth]
        return layout, bottleneck, counts
    if layout == "cifar" and cifar_ok:
        return layout, False, ((depth - 2) // 6,) * 3
    raise RegistryError(
        f"resnet: depth {depth} is not valid{'' if layout == '?' else f' for the {layout} layout'}; "
        f"the CIFAR layout takes depth 6n+2 ({_cifar_depths()}), "
        f"the ImageNet layout takes {', '.join(map(str, IMAGENET_DEPTHS))}"
    )


@models.register("resnet")
def resnet(
    input_shape: tuple[int, ...],
    num_classes: int,
    depth: int = 20,
    width: Annotated[int, Field(ge=1)] | None = None,
    layout: Literal["auto", "cifar", "imagenet"] = "auto",
    preact: bool = False,
    shortcut: Literal["auto", "pad", "conv"] = "auto",
    stem: Literal["auto", "small", "imagenet"] = "auto",
    activation: ActivationSpec = "relu",
    norm: NormSpec = "batch",
    init: InitSpec = "auto",
    zero_init_residual: bool = False,
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0,
) -> ResNet:
    """Residual network: CIFAR-style ResNet-20/32/56/110 or ImageNet-style 18/34/50, small or ImageNet stem.

    He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition" (CVPR 2016): stacks of
    residual blocks that learn a correction to their input, added back through a shortcut.

    The CIFAR layout (section 4.2 of that paper) takes depth 6n+2: a 3x3 stem conv, three stages of
    n basic blocks with widths w, 2w, 4w (w = 16 by default), stride 2 at stages 2 and 3, global
    average pooling and a linear head. Its default shortcut is option A ("pad": subsample and
    zero-pad channels, no parameters). The ImageNet layout takes depths 18 and 34 (basic blocks) and
    50, 101, 152 (bottleneck blocks, expansion 4) with widths w..8w (w = 64), default shortcut
    option B ("conv": 1x1 conv and norm where the shape changes). ``layout`` picks between them when
    a depth fits both (50: "auto" means ImageNet there).

    ``stem`` is the first layer: "small" (and "auto") is a 3x3 conv of stride 1 with no max-pool, so
    32x32 and even 8x8 inputs keep their resolution; "imagenet" is the paper's stem for 224x224
    images, a 7x7 conv of stride 2, norm, activation and a 3x3 max-pool of stride 2 (a quarter of the
    resolution in all), as torchvision's resnet has it: ResNet-18 and -50 with this stem on 1000
    classes have torchvision's 11,689,512 and 25,557,032 parameters. Pre-activation, the stem's norm
    and activation are left to the first block, as in timm's ResNetV2.

    ``preact`` gives the pre-activation variant of He et al., "Identity Mappings in Deep Residual
    Networks" (ECCV 2016): norm-act-conv ordering inside blocks, clean identity shortcuts, and a
    final norm+act before pooling. ``zero_init_residual`` starts each residual branch at zero (the
    last norm's scale; pre-activation: the last conv), as in Goyal et al. 2017. ``dropout`` is
    applied to the pooled features before the head. ``width`` overrides the first stage's width w,
    and ``init`` is the initializer its ``initialize`` hook applies.
    """
    if len(input_shape) != 3:
        raise RegistryError(
            "resnet: needs image inputs shaped (channels, height, width), "
            f"got input_shape {tuple(input_shape)}"
        )
    layout, bottleneck, counts = _layout(depth, layout)
    base = width if width is not None else (16 if layout == "cifar" else 64)
    if shortcut == "auto":
        shortcut = "pad" if layout == "cifar" else "conv"
    stages = [(base * 2**i, n) for i, n in enumerate(counts)]
    return ResNet(
        input_shape[0], num_classes, stages, bottleneck, base,
        preact=preact, shortcut=shortcut, stem="imagenet" if stem == "imagenet" else "small",
        activation=activation, norm=norm, init=init,
        zero_init_residual=zero_init_residual, dropout=dropout,
    )
