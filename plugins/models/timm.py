"""Any architecture from timm (PyTorch Image Models), built from scratch with zoo's activations and norms."""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import nn

import zoo
from zoo import ActivationSpec, InitSpec, NormSpec, models
from zoo.core.errors import RegistryError, ZooError


class TimmModel(nn.Module):
    """A timm network plus the ``initialize`` hook every zoo model has."""

    def __init__(self, net: nn.Module, arch: str, init, activation) -> None:
        super().__init__()
        self.net = net
        self.arch = arch
        self.init_spec = init
        self.activation_spec = activation
        head = net.get_classifier() if hasattr(net, "get_classifier") else None
        if isinstance(head, nn.Linear):
            head.zoo_nonlinearity = "linear"  # logits: no activation follows, so no ReLU gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def initialize(self, sample: torch.Tensor | None = None) -> None:
        if self.init_spec is None:
            return  # timm's own per-architecture init (truncated normal for ViTs, ...) already ran
        # every initializer gets apply(model, *, activation, sample), as docs/plugins.md promises
        activation = self.activation_spec if self.activation_spec is not None else timm_activation(self.net)
        init = zoo.initializers.build(self.init_spec, "model.init")
        init.apply(self.net, activation=activation, sample=sample)


# torch's activation modules and the zoo activations of the same function, for a network timm built with
# its own activation
TORCH_ACTIVATIONS = {
    nn.ReLU: "relu", nn.ReLU6: "relu", nn.GELU: "gelu", nn.SiLU: "silu", nn.ELU: "elu",
    nn.LeakyReLU: "leaky_relu", nn.PReLU: "prelu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid",
}


def timm_activation(net: nn.Module) -> str:
    """The zoo activation matching the first activation module in ``net`` (timm's own choice for the
    architecture); relu, what initializers assume, when there is none they know."""
    for module in net.modules():
        name = TORCH_ACTIVATIONS.get(type(module))
        if name is not None:
            return name
    return "relu"


def _unknown_arch(arch: str, timm_module) -> RegistryError:
    # Names sharing the family prefix ("vit_tiny" -> vit_tiny_patch16_224) come first: edit distance
    # alone prefers short unrelated names (gcvit_tiny); then the closest of all names fill up.
    stem = arch.rstrip("0123456789_")
    family = timm_module.list_models(f"{stem}*") if len(stem) >= 3 else []
    close = difflib.get_close_matches(arch, family, n=5, cutoff=0.0)
    anywhere = difflib.get_close_matches(arch, timm_module.list_models(), n=5, cutoff=0.6)
    close += [n for n in anywhere if n not in close]
    hint = f" (did you mean: {', '.join(close[:5])}?)" if close else ""
    return RegistryError(
        f"model 'timm': unknown timm architecture '{arch}'{hint}; "
        "list them with python -c \"import timm; print(timm.list_models('pattern*'))\""
    )


# test_resnet: timm's own tiny test architecture, so the conformance kit builds something small
@models.register("timm", examples=[{"arch": "test_resnet"}])
def timm(
    input_shape: tuple[int, ...],
    num_classes: int,
    arch: str,
    activation: ActivationSpec | None = None,
    norm: NormSpec | None = None,
    init: InitSpec | None = None,
    drop_rate: Annotated[float, Field(ge=0, lt=1)] = 0.0,
    norm_dim: Literal[0, 1, 2] = 2,
    **kwargs: Any,
) -> TimmModel:
    """Any timm architecture by name (``arch``: resnet18, convnext_atto, vit_tiny_patch16_224, ...), from scratch.

    Wraps ``timm.create_model`` (Ross Wightman, PyTorch Image Models, github.com/huggingface/
    pytorch-image-models) with ``pretrained=False``, so nothing is ever downloaded; ``in_chans`` and
    ``num_classes`` come from the data, and for architectures with a fixed input size (ViTs) the
    data's image size is passed as ``img_size``. Extra parameters go to timm unchanged.

    ``activation`` and ``norm`` swap in zoo's registered layers as timm's ``act_layer`` /
    ``norm_layer``, for architectures that take them; None keeps the architecture's own.
    ``norm_dim`` is the layout the norm sees: 2 for conv nets (B, C, H, W), 0 for transformers,
    whose norms act on the last dimension. ``init`` re-initializes Linear and Conv weights with a zoo
    initializer; None keeps timm's own initialization. ``drop_rate`` is dropout before the head.
    """
    import timm as timm_lib  # late: timm takes a while to import and most runs never use it

    if len(input_shape) != 3:
        raise RegistryError(
            f"model 'timm': timm architectures take images shaped (channels, height, width), "
            f"got input_shape {tuple(input_shape)}"
        )
    if not timm_lib.is_model(arch):
        raise _unknown_arch(arch, timm_lib)
    for reserved in ("pretrained", "num_classes", "in_chans", "act_layer", "norm_layer"):
        if reserved in kwargs:
            raise RegistryError(
                f"model 'timm': '{reserved}' is set by zoo (weights are never downloaded; classes and "
                "channels come from the data; use 'activation' and 'norm' for the layers)"
            )

    args: dict[str, Any] = dict(kwargs)
    args["drop_rate"] = drop_rate
    used = {"act_layer": 0, "norm_layer": 0}

    if activation is not None:
        probe = zoo.activations.build(activation, "timm.activation")
        if getattr(probe, "width_factor", 1) != 1:
            raise RegistryError(
                "model 'timm': activations that change the width (maxout) need the layer in front "
                "widened, which timm architectures do not do; pick another activation"
            )

        # timm calls act_layer(inplace=True), act_layer() or, rarely, with a channel count; zoo's
        # activations take none of these, and in-place is only a memory saving.
        def act_layer(*_args: Any, **_kwargs: Any) -> nn.Module:
            used["act_layer"] += 1
            return zoo.activations.build(activation, "timm.activation")

        args["act_layer"] = act_layer

    if norm is not None:

        def norm_layer(num_features: int, *_args: Any, **extra: Any) -> nn.Module:
            if {"apply_act", "act_layer", "inplace"} & extra.keys():
                # timm treats a plain function as a fused norm+activation layer in these nets; building
                # only the norm would silently drop their activations.
                raise RegistryError(
                    f"model 'timm': architecture '{arch}' fuses its norms with activations (timm "
                    "norm_act layers) and does not take a custom norm; leave 'norm' unset"
                )
            used["norm_layer"] += 1
            # eps, momentum, affine and device arguments are timm's tuning of its own norms; zoo's
            # norm carries its own settings from the recipe.
            return zoo.normalizers.build(norm, "timm.norm", num_features=num_features, dim=norm_dim)

        args["norm_layer"] = norm_layer

    if "img_size" not in kwargs:
        args["img_size"] = tuple(input_shape[1:])
    net = _create(timm_lib, arch, args, num_classes, input_shape[0], auto_img_size="img_size" not in kwargs)

    for key, what in (("act_layer", "activation"), ("norm_layer", "norm")):
        if key in args and used[key] == 0:
            raise RegistryError(
                f"model 'timm': architecture '{arch}' accepted a custom {what} but never built one; "
                f"it does not take a custom {what}, leave '{what}' unset"
            )
    if activation is not None or norm is not None:
        _try_forward(net, arch, input_shape)
    return TimmModel(net, arch, init, activation)


def _try_forward(net: nn.Module, arch: str, input_shape: tuple[int, ...]) -> None:
    """One tiny batch, so that a swapped-in layer that does not fit fails here, not mid-training."""
    modes = {m: m.training for m in net.modules()}
    net.eval()  # keeps batch-norm running statistics untouched
    try:
        with torch.no_grad():
            net(torch.zeros(1, *input_shape))
    except Exception as exc:  # shape and dim mismatches surface as RuntimeError, ValueError, ...
        raise RegistryError(
            f"model 'timm': architecture '{arch}' fails with the custom activation/norm on inputs of shape "
            f"{tuple(input_shape)}: {str(exc).splitlines()[0]}; if its norms act on the last dimension "
            "(transformers, channels-last blocks) set norm_dim: 0, else leave 'norm' unset"
        ) from None
    finally:
        for module, training in modes.items():
            module.training = training


def _create(
    timm_lib, arch: str, args: dict[str, Any], num_classes: int, in_chans: int, auto_img_size: bool
) -> nn.Module:
    while True:
        try:
            return timm_lib.create_model(
                arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **args
            )
        except TypeError as exc:
            message = str(exc)
            # Conv nets take any image size and reject the argument; only ViT-like nets need it.
            if auto_img_size and "img_size" in args and "img_size" in message:
                del args["img_size"]
                continue
            for key, what in (("act_layer", "activation"), ("norm_layer", "norm")):
                if key in message:
                    raise RegistryError(
                        f"model 'timm': architecture '{arch}' does not take a custom {what} "
                        f"(timm: {message}); leave '{what}' unset"
                    ) from None
            raise RegistryError(
                f"model 'timm': architecture '{arch}' rejected its arguments: {message}"
            ) from None
        except ZooError:
            raise  # ours, raised from inside timm by a layer factory; it already says what is wrong
        except Exception as exc:  # timm checks some argument combinations with assert or ValueError
            raise RegistryError(
                f"model 'timm': timm could not build '{arch}' with these arguments: "
                f"{type(exc).__name__}: {str(exc) or '(no message)'}"
            ) from None
