"""Built-in weight initializers.

Each factory returns an :class:`Initializer`; ``apply(model, activation=..., sample=...)`` sets the
weight and bias of every nn.Linear and nn.Conv1d/2d/3d in the model, in place. The gain follows the
model's activation spec, except on a layer that carries ``zoo_nonlinearity`` (a classifier head
marked "linear", say), whose own nonlinearity wins.

The gain is what the activation declares: the ``gain`` attribute of the module its factory returns
(zoo.plugins.activations documents the built-ins' values), so a plugin's activation is initialized
as it says. An activation that declares none gets ReLU's sqrt(2), the usual guess for a ReLU
variant, with a one-time warning. Names that are not registered activations but that
torch.nn.init.calculate_gain knows ("linear", "conv2d", "selu", ...) get torch's gain.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from zoo import activations, initializers
from zoo.core.errors import PluginWarning, RegistryError
from zoo.core.registry import InitSpec, Spec, split_spec

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
Bias = Annotated[float, Field(description="the value every bias is set to")]

# Names torch.nn.init.calculate_gain takes that are not activations (a classifier head's "linear").
_TORCH_ONLY = {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "selu"}
# Glorot's fan average suits saturating and linear units (his paper's setting); He's fan_in the rest.
_GLOROT_FAMILY = {"tanh", "sigmoid", "identity", "linear"}


@dataclass(frozen=True)
class Nonlinearity:
    """An activation spec as initializers see it: its name and the gain it declares."""

    name: str  # as the recipe wrote it
    gain: float

    @property
    def glorot(self) -> bool:
        """Whether ``auto`` uses Glorot (fan average) rather than He (fan in) for the layer in front."""
        return self.name.rpartition(":")[2] in _GLOROT_FAMILY


@functools.cache
def _declared_gain(spec_key: str) -> float:
    import json

    spec = json.loads(spec_key)
    name, _ = split_spec(spec, "initializer activation")
    if name not in activations and name in _TORCH_ONLY:
        return nn.init.calculate_gain(name)
    module = activations.build(spec, "initializer activation")
    gain = getattr(module, "gain", None)
    if gain is None:
        warnings.warn(
            f"activation '{name}' declares no gain; initializers use ReLU's sqrt(2) for the layer in front of it "
            "(set `gain` on the module its factory returns)",
            PluginWarning,
            stacklevel=4,
        )
        return math.sqrt(2.0)
    return float(gain)


def nonlinearity(spec: Spec) -> Nonlinearity:
    """An activation spec (a name, or a mapping with 'name' and params) with the gain its activation declares."""
    import json

    name, _ = split_spec(spec, "initializer activation")
    return Nonlinearity(name, _declared_gain(json.dumps(spec, sort_keys=True)))


def fan_in(weight: torch.Tensor) -> int:
    """Inputs per output unit: in_features, or in_channels x kernel size."""
    return weight.shape[1] * math.prod(weight.shape[2:])


def layers(model: nn.Module) -> Iterator[nn.Module]:
    """The layers an initializer touches, in registration order."""
    for module in model.modules():
        if isinstance(module, LAYER_TYPES):
            yield module


class Initializer:
    """Shared loop: every layer's weight goes through :meth:`init_weight`, its bias is set to ``bias``."""

    def __init__(self, *, bias: float = 0.0) -> None:
        self.bias = bias

    def init_weight(self, weight: torch.Tensor, act: Nonlinearity) -> None:
        raise NotImplementedError

    def apply(
        self, model: nn.Module, *, activation: Spec = "relu", sample: torch.Tensor | None = None
    ) -> None:
        model_act = nonlinearity(activation)
        with torch.no_grad():
            for layer in layers(model):
                override = getattr(layer, "zoo_nonlinearity", None)
                act = model_act if override is None else nonlinearity(override)
                self.init_weight(layer.weight, act)
                if layer.bias is not None:
                    nn.init.constant_(layer.bias, self.bias)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Constant(Initializer):
    def __init__(self, value: float, *, bias: float = 0.0) -> None:
        super().__init__(bias=bias)
        self.value = value

    def init_weight(self, weight: torch.Tensor, act: Nonlinearity) -> None:
        nn.init.constant_(weight, self.value)


class Normal(Initializer):
    def __init__(self, std: float, *, bias: float = 0.0) -> None:
        super().__init__(bias=bias)
        self.std = std

    def init_weight(self, weight: torch.Tensor, act: Nonlinearity) -> None:
        nn.init.normal_(weight, mean=0.0, std=self.std)


class Xavier(Initializer):
    def __init__(self, *, uniform: bool, bias: float = 0.0) -> None:
        super().__init__(bias=bias)
        self.uniform = uniform

    def init_weight(self, weight: torch.Tensor, act: Nonlinearity) -> None:
        fn = nn.init.xavier_uniform_ if self.uniform else nn.init.xavier_normal_
        fn(weight, gain=act.gain)


def kaiming_(weight: torch.Tensor, gain: float, uniform: bool = False) -> None:
    """He init with an explicit gain: std = gain / sqrt(fan_in).

    torch's kaiming_normal_/kaiming_uniform_ take a nonlinearity name rather than a gain; this draws the
    same numbers from the same generator call (normal_(0, std), uniform_(-sqrt(3) std, sqrt(3) std)), so
    an activation whose declared gain equals torch's gets bit for bit the weights torch would give it.
    """
    std = gain / math.sqrt(fan_in(weight))
    if uniform:
        bound = math.sqrt(3.0) * std
        weight.uniform_(-bound, bound)
    else:
        weight.normal_(0, std)


class Kaiming(Initializer):
    def __init__(self, *, uniform: bool, bias: float = 0.0) -> None:
        super().__init__(bias=bias)
        self.uniform = uniform

    def init_weight(self, weight: torch.Tensor, act: Nonlinearity) -> None:
        kaiming_(weight, act.gain, self.uniform)


class Orthogonal(Initializer):
    def init_weight(self, weight: torch.Tensor, act: Nonlinearity) -> None:
        nn.init.orthogonal_(weight, gain=act.gain)


class Auto(Initializer):
    """Glorot with the activation's gain for tanh, sigmoid and linear units; He with its gain for the rest."""

    def init_weight(self, weight: torch.Tensor, act: Nonlinearity) -> None:
        if act.glorot:
            nn.init.xavier_normal_(weight, gain=act.gain)
        else:
            kaiming_(weight, act.gain)


class _Reached(Exception):
    """Raised from a hook to stop the forward pass once the layer being measured has run."""


def _require_sample(name: str, sample: torch.Tensor | None, measured: str) -> None:
    """Data-dependent initializers measure on a batch of inputs: say so when none was given."""
    if sample is None:
        raise RegistryError(
            f"initializer '{name}' needs a sample batch to measure {measured} on: "
            "call apply(model, sample=a batch of inputs), or choose another initializer"
        )


class LSUV(Orthogonal):
    """Orthogonal init, then each layer rescaled in forward order until its output variance is ~1."""

    def __init__(self, *, tol: float = 0.05, max_iters: int = 10, bias: float = 0.0) -> None:
        super().__init__(bias=bias)
        self.tol = tol
        self.max_iters = max_iters

    def apply(
        self, model: nn.Module, *, activation: Spec = "relu", sample: torch.Tensor | None = None
    ) -> None:
        _require_sample("lsuv", sample, "layer outputs")
        super().apply(model, activation=activation)
        # eval(): dropout would make the variance noisy and batch norm would move its running stats.
        modes = {m: m.training for m in model.modules()}
        model.eval()
        try:
            with torch.no_grad():
                for layer in self._forward_order(model, sample):
                    self._rescale(model, layer, sample)
        finally:
            for module, training in modes.items():
                module.training = training

    def _forward_order(self, model: nn.Module, sample: torch.Tensor) -> list[nn.Module]:
        # Registration order need not match the order layers run in, and the paper goes by the latter.
        order: list[nn.Module] = []

        def record(module, inputs, output):
            if module not in order:
                order.append(module)

        handles = [layer.register_forward_hook(record) for layer in layers(model)]
        try:
            model(sample)
        finally:
            for handle in handles:
                handle.remove()
        return order

    def _output_variance(self, model: nn.Module, layer: nn.Module, sample: torch.Tensor) -> float:
        captured: list[torch.Tensor] = []

        def grab(module, inputs, output):
            captured.append(output)
            raise _Reached  # the rest of the network cannot change this layer's output

        handle = layer.register_forward_hook(grab)
        try:
            model(sample)
        except _Reached:
            pass
        finally:
            handle.remove()
        return captured[0].float().var().item()

    def _rescale(self, model: nn.Module, layer: nn.Module, sample: torch.Tensor) -> None:
        for _ in range(self.max_iters):
            var = self._output_variance(model, layer, sample)
            if not math.isfinite(var) or var < 1e-12:
                return  # a dead or broken layer cannot be rescaled to unit variance
            if abs(var - 1.0) < self.tol:
                return
            layer.weight.div_(math.sqrt(var))


class Whitening(Initializer):
    """Every layer from ``rest``, then the first conv the input meets set to whiten its input patches."""

    # Patches are gathered this many images at a time: unfold copies each pixel k*k times, so doing
    # the whole sample at once would make memory grow with the sample size for no gain in accuracy.
    CHUNK = 64

    def __init__(
        self, rest: Initializer, *, eps: float = 5e-4, freeze: bool = True, bias: float = 0.0
    ) -> None:
        super().__init__(bias=bias)
        self.rest = rest
        self.eps = eps
        self.freeze = freeze

    def apply(
        self, model: nn.Module, *, activation: Spec = "relu", sample: torch.Tensor | None = None
    ) -> None:
        _require_sample("whitening", sample, "patch statistics")
        if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
            raise RegistryError(
                f"initializer 'whitening' whitens the first nn.Conv2d, and the model "
                f"({type(model).__name__}) has none: choose another initializer for it"
            )
        # `rest` may be data-dependent too (lsuv), so it gets the sample as well.
        self.rest.apply(model, activation=activation, sample=sample)
        conv, inputs = self._first_conv(model, sample)
        if conv.groups != 1:
            raise RegistryError(
                f"initializer 'whitening': the first conv has groups={conv.groups}; whitening mixes "
                "every input channel in each filter, so it needs groups=1"
            )
        filters = self._whitening_filters(conv, inputs)
        with torch.no_grad():
            n = min(len(filters), conv.out_channels)
            conv.weight[:n].copy_(filters[:n].to(conv.weight))
            if conv.bias is not None:
                nn.init.constant_(conv.bias, self.bias)
        # The whitened filters are fixed features of the data; airbench keeps them out of training.
        conv.weight.requires_grad_(not self.freeze)

    def _first_conv(self, model: nn.Module, sample: torch.Tensor) -> tuple[nn.Conv2d, torch.Tensor]:
        """The nn.Conv2d that runs first on ``sample`` and the input it received."""
        found: list[tuple[nn.Conv2d, torch.Tensor]] = []

        def grab(module, inputs):
            found.append((module, inputs[0].detach()))
            raise _Reached  # nothing after the first conv matters here

        # Registration order need not be the order layers run in, so the forward pass decides.
        handles = [m.register_forward_pre_hook(grab) for m in model.modules() if isinstance(m, nn.Conv2d)]
        # eval(), as in lsuv: layers before the conv (dropout, batch norm) must neither add noise nor
        # move their running statistics.
        modes = {m: m.training for m in model.modules()}
        model.eval()
        try:
            with torch.no_grad():
                model(sample)
        except _Reached:
            pass
        finally:
            for handle in handles:
                handle.remove()
            for module, training in modes.items():
                module.training = training
        if not found:
            raise RegistryError(
                "initializer 'whitening': no nn.Conv2d ran on the sample batch, so there is no "
                "first conv to whiten"
            )
        return found[0]

    def _whitening_filters(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """2d filters, largest-variance directions first, as +/- pairs; d = in_channels * kernel area."""
        kernel = conv.kernel_size
        if x.shape[-2] < kernel[0] or x.shape[-1] < kernel[1]:
            raise RegistryError(
                f"initializer 'whitening': the sample reaching the first conv is {tuple(x.shape[-2:])} "
                f"pixels, smaller than its {tuple(kernel)} kernel"
            )
        # float64 on the CPU: the covariance below is a difference of large sums, and its smallest
        # eigenvalues (comparable to eps) set the scale of the weakest filters; float32 would blur them.
        # The CPU also has float64 everywhere (MPS does not), and the work is small.
        x = x.to("cpu", torch.float64)
        d = conv.in_channels * kernel[0] * kernel[1]
        total = torch.zeros(d, dtype=torch.float64)
        outer = torch.zeros(d, d, dtype=torch.float64)
        count = 0
        for chunk in x.split(self.CHUNK):
            # stride 1 and no padding: every patch the kernel can see, and no made-up zero borders
            patches = F.unfold(chunk, kernel, dilation=conv.dilation).transpose(1, 2).reshape(-1, d)
            total += patches.sum(0)
            outer += patches.T @ patches
            count += len(patches)
        if count < 2:
            raise RegistryError("initializer 'whitening': the sample gives fewer than 2 patches to measure")
        mean = total / count
        cov = (outer - count * torch.outer(mean, mean)) / (count - 1)
        values, vectors = torch.linalg.eigh(cov)  # ascending
        values, vectors = values.flip(0).clamp_min(0.0), vectors.flip(1)  # rounding can leave -1e-17s
        scaled = (vectors / torch.sqrt(values + self.eps)).T  # row i: direction i, unit variance out
        # Both signs of each direction: a ReLU after the conv would otherwise drop half of every one.
        pairs = torch.stack([scaled, -scaled], dim=1).reshape(2 * d, d)
        return pairs.reshape(2 * d, conv.in_channels, *kernel)


# --- registry entries ------------------------------------------------------------------------------


@initializers.register("zeros")
def zeros(*, bias: Bias = 0.0) -> Initializer:
    """All weights zero: every unit in a layer stays identical, so the net cannot learn (a demonstration).

    Symmetric units get identical gradients, so no amount of training tells them apart.
    """
    return Constant(0.0, bias=bias)


@initializers.register("constant")
def constant(*, value: float = 0.0, bias: Bias = 0.0) -> Initializer:
    """All weights one constant: as symmetric as zeros, whatever the value (a demonstration)."""
    return Constant(value, bias=bias)


@initializers.register("normal")
def normal(*, std: Annotated[float, Field(ge=0)] = 0.01, bias: Bias = 0.0) -> Initializer:
    """Weights drawn from N(0, std^2) with a fixed std, ignoring layer width.

    The pre-2010 default; in deep nets the signal shrinks (or grows) layer by layer.
    """
    return Normal(std, bias=bias)


@initializers.register("xavier_uniform")
def xavier_uniform(*, bias: Bias = 0.0) -> Initializer:
    """Glorot uniform: Var(W) = gain^2 * 2 / (fan_in + fan_out), gain from the activation.

    Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward neural networks".
    """
    return Xavier(uniform=True, bias=bias)


@initializers.register("xavier_normal")
def xavier_normal(*, bias: Bias = 0.0) -> Initializer:
    """Glorot normal: Var(W) = gain^2 * 2 / (fan_in + fan_out), gain from the activation.

    Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward neural networks".
    """
    return Xavier(uniform=False, bias=bias)


@initializers.register("kaiming_normal")
def kaiming_normal(*, bias: Bias = 0.0) -> Initializer:
    """He normal: Var(W) = gain^2 / fan_in (2 / fan_in for ReLU), keeping forward variance steady.

    He et al. 2015, "Delving Deep into Rectifiers".
    """
    return Kaiming(uniform=False, bias=bias)


@initializers.register("kaiming_uniform")
def kaiming_uniform(*, bias: Bias = 0.0) -> Initializer:
    """He uniform: Var(W) = gain^2 / fan_in (2 / fan_in for ReLU), keeping forward variance steady.

    He et al. 2015, "Delving Deep into Rectifiers".
    """
    return Kaiming(uniform=True, bias=bias)


class TorchDefault(Initializer):
    """Each layer's own ``reset_parameters``: what a freshly built PyTorch layer already holds."""

    def __init__(self) -> None:
        super().__init__()

    def apply(
        self, model: nn.Module, *, activation: Spec = "relu", sample: torch.Tensor | None = None
    ) -> None:
        for layer in layers(model):
            layer.reset_parameters()


@initializers.register("torch_default")
def torch_default() -> Initializer:
    """PyTorch's layer defaults: weights U(-b, b) with b = 1/sqrt(fan_in), biases alike (gain ignored).

    ``nn.Linear``/``nn.Conv*`` use He uniform with a = sqrt(5), i.e. Var(W) = 1 / (3 fan_in): a third
    of the LeCun variance. Recipes tuned on these weights (airbench's, for one) need them, since
    under batch norm the weights' scale sets the effective learning rate.
    """
    return TorchDefault()


@initializers.register("orthogonal")
def orthogonal(*, bias: Bias = 0.0) -> Initializer:
    """Random orthogonal weights (rows or columns orthonormal) times the activation's gain.

    Saxe, McClelland & Ganguli 2013, "Exact solutions to the nonlinear dynamics of learning in deep
    linear neural networks".
    """
    return Orthogonal(bias=bias)


@initializers.register("lsuv")
def lsuv(
    *, tol: Annotated[float, Field(gt=0)] = 0.05, max_iters: Annotated[int, Field(ge=1)] = 10, bias: Bias = 0.0
) -> Initializer:
    """Layer-sequential unit variance: orthogonal, then each layer rescaled to unit output variance.

    Needs a sample batch. Layer by layer in forward order, the batch is run through the model and
    the layer's weight divided by the std of its output until the variance is within ``tol`` of 1
    (at most ``max_iters`` tries). Mishkin & Matas 2015, "All you need is a good init".
    """
    if tol <= 0 or max_iters < 1:
        raise RegistryError(f"initializer 'lsuv': tol must be > 0 and max_iters >= 1, got {tol}, {max_iters}")
    return LSUV(tol=tol, max_iters=max_iters, bias=bias)


@initializers.register("auto")
def auto(*, bias: Bias = 0.0) -> Initializer:
    """The default: Glorot normal for tanh, sigmoid and identity/linear, He normal for every other activation.

    Both scale by the gain the activation declares (its module's ``gain``: sqrt(2) for ReLU, 1 for
    maxout with k=2, ...). He: Var(W) = gain^2 / fan_in; Glorot: gain^2 * 2 / (fan_in + fan_out).
    """
    return Auto(bias=bias)


@initializers.register("whitening")
def whitening(
    *,
    rest: InitSpec = "auto",
    eps: Annotated[float, Field(gt=0)] = 5e-4,
    freeze: bool = True,
    bias: Bias = 0.0,
) -> Initializer:
    """First conv whitens its input patches (Coates & Ng 2011; frozen, as in airbench); others from ``rest``.

    Needs a sample batch. Every layer is first initialized by ``rest``; then the first nn.Conv2d the
    sample runs through gets, as filters 2i and 2i+1, the i-th eigenvector of the covariance of its
    input patches (stride 1, no padding) over sqrt(eigenvalue + ``eps``) and its negative, largest
    eigenvalues first, so the directions' outputs start uncorrelated with one another, with variance
    eigenvalue / (eigenvalue + eps), about 1. The patch covariance is centred (the mean patch
    removed). A conv with more output channels than twice its patch size (in channels x kernel
    area) keeps ``rest``'s weights in the channels left over.
    ``freeze`` takes that conv's weight out of training (its bias, set to ``bias``, still trains).
    Patch whitening: Coates & Ng 2011, "The importance of encoding versus training with sparse
    coding and vector quantization"; as a frozen first layer: Keller Jordan's airbench (2024), after
    tysam-code's hlb-cifar10.
    """
    rest_init = initializers.build(rest, "whitening.rest")  # now, so a bad spec fails before any data loads
    return Whitening(rest_init, eps=eps, freeze=freeze, bias=bias)
