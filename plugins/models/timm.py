"""Any architecture from timm (PyTorch Image Models), built from scratch with zoo's activations and norms, or
started from trained weights (timm's hub, or a local file) through timm's own loading."""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import nn

import zoo
from zoo import ActivationSpec, InitSpec, NormSpec, models
from zoo.core.errors import RegistryError, ZooError


class TimmModel(nn.Module):
    """A timm network plus the ``initialize`` hook every zoo model has."""

    def __init__(
        self, net: nn.Module, arch: str, init, activation, weights: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.net = net
        self.arch = arch
        self.init_spec = init
        self.activation_spec = activation
        # Trained weights expect their own input statistics: the classifier standardizes by these instead of
        # the data's (zoo.training.classifier.Classifier.set_input_stats). None: built from scratch.
        self.input_stats = None if weights is None else (weights["mean"], weights["std"])
        self.weights_config = weights
        head = net.get_classifier() if hasattr(net, "get_classifier") else None
        if isinstance(head, nn.Linear):
            head.zoo_nonlinearity = "linear"  # logits: no activation follows, so no ReLU gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def stages(self) -> list[list[str]]:
        """Parameter names of the stem, then of each stage, as timm's coarse group_matcher groups them (a
        ViT's stages are its blocks); the head in none (finetune.freeze_stages)."""
        from timm.models import group_parameters

        if not hasattr(self.net, "group_matcher"):
            return []
        head = self.net.get_classifier() if hasattr(self.net, "get_classifier") else None
        in_head = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
        params = dict(self.net.named_parameters())
        groups = group_parameters(self.net, self.net.group_matcher(coarse=True))
        stages = [[f"net.{n}" for n in names if id(params[n]) not in in_head]
                  for _, names in sorted(groups.items())]
        return [names for names in stages if names]

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
    pretrained: bool = False,
    pretrained_file: str | None = None,
    **kwargs: Any,
) -> TimmModel:
    """Any timm architecture (``arch``: resnet18, convnext_atto, vit_tiny_patch16_224, ...), new or trained.

    Wraps ``timm.create_model`` (Ross Wightman, PyTorch Image Models, github.com/huggingface/
    pytorch-image-models); ``in_chans`` and ``num_classes`` come from the data, and for architectures
    with a fixed input size (ViTs) the data's image size is passed as ``img_size``. Extra parameters go
    to timm unchanged.

    ``pretrained: true`` starts from timm's weights for ``arch`` (downloaded from its hub once, then
    cached; offline, download them elsewhere and pass ``pretrained_file``). ``pretrained_file``: a local
    weights file as timm saves them (.safetensors, or a .pth/.bin state dict), loaded by timm: its head is
    replaced by a new one when the class count differs, its first conv adapted to the data's channels.
    Inputs are then standardized by the weights' own mean and std (timm's pretrained_cfg), not the data's;
    a data image size other than the weights' is warned about. Trained weights refuse ``activation``,
    ``norm`` and ``init``, which would replace what was trained.

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
    reserved_keys = (
        "pretrained_cfg", "pretrained_cfg_overlay", "num_classes", "in_chans", "act_layer", "norm_layer"
    )
    for reserved in reserved_keys:
        if reserved in kwargs:
            raise RegistryError(
                f"model 'timm': '{reserved}' is set by zoo (weights come from 'pretrained' or "
                "'pretrained_file'; classes and channels come from the data; use 'activation' and 'norm' "
                "for the layers)"
            )
    trained = pretrained or pretrained_file is not None
    if trained:
        given = (("activation", activation), ("norm", norm), ("init", init))
        overrides = [key for key, value in given if value is not None]
        if overrides:
            source = "pretrained_file" if pretrained_file is not None else "pretrained"
            raise RegistryError(
                f"model 'timm': '{overrides[0]}' with {source} would replace layers or values the weights "
                f"were trained with; leave '{overrides[0]}' unset to start from trained weights"
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
    auto_img_size = "img_size" not in kwargs
    if pretrained_file is not None:
        net = _from_file(timm_lib, arch, args, num_classes, input_shape[0], auto_img_size, pretrained_file)
    elif pretrained:
        net = _from_hub(timm_lib, arch, args, num_classes, input_shape[0], auto_img_size)
    else:
        net = _create(timm_lib, arch, args, num_classes, input_shape[0], auto_img_size)

    for key, what in (("act_layer", "activation"), ("norm_layer", "norm")):
        if key in args and used[key] == 0:
            raise RegistryError(
                f"model 'timm': architecture '{arch}' accepted a custom {what} but never built one; "
                f"it does not take a custom {what}, leave '{what}' unset"
            )
    if activation is not None or norm is not None:
        _try_forward(net, arch, input_shape)
    weights = _weights_config(net, arch, input_shape) if trained else None
    return TimmModel(net, arch, init, activation, weights)


def _weights_config(net: nn.Module, arch: str, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """What the weights were trained on (timm's pretrained_cfg), as the classifier and ``zoo show`` use it."""
    import warnings

    from zoo.core.errors import PluginWarning

    cfg = dict(getattr(net, "pretrained_cfg", None) or {})
    channels = input_shape[0]
    mean = torch.tensor(cfg.get("mean") or (0.0,) * channels, dtype=torch.float32)
    std = torch.tensor(cfg.get("std") or (1.0,) * channels, dtype=torch.float32)
    if len(mean) != channels:
        # timm folds the first conv's colour channels into the data's (adapt_input_conv): the statistics too
        mean, std = mean.mean().expand(channels).clone(), std.mean().expand(channels).clone()
    size = tuple(cfg.get("input_size") or ())[1:]
    if size and size != tuple(input_shape[1:]):
        warnings.warn(
            f"model 'timm': the {arch} weights were trained on {size[0]}x{size[1]} images and the data's "
            f"are {input_shape[1]}x{input_shape[2]}: features transfer less well the further the sizes are "
            "apart; resize the images to match if accuracy falls short",
            PluginWarning,
            stacklevel=2,
        )
    # per channel, shaped to broadcast over an image
    return {"mean": mean.view(-1, 1, 1), "std": std.view(-1, 1, 1),
            "input_size": tuple(cfg.get("input_size") or ()), "crop_pct": cfg.get("crop_pct"),
            "interpolation": cfg.get("interpolation")}


def _head_size(timm_lib, arch: str, state: dict[str, torch.Tensor]) -> int:
    """The classes the weights' head was trained for (0: the file has no head)."""
    cfg = timm_lib.models.get_pretrained_cfg(arch)
    names = getattr(cfg, "classifier", None) or "fc"
    for name in (names,) if isinstance(names, str) else names:
        weight = state.get(f"{name}.weight")
        if weight is not None:
            return int(weight.shape[0])
    return 0


def _from_file(
    timm_lib, arch: str, args: dict[str, Any], num_classes: int, in_chans: int, auto_img_size: bool, file: str
) -> nn.Module:
    """The network with the weights of ``file``, loaded strictly by timm; a new head for other classes."""
    from pathlib import Path

    path = Path(file).expanduser()
    if not path.is_file():
        raise RegistryError(f"model.pretrained_file: {file}: no such file")
    try:
        state = timm_lib.models.load_state_dict(str(path))  # safetensors, or torch.load with weights_only
    except Exception as exc:  # noqa: BLE001 - not a weights file: safetensors, pickle and zip errors alike
        first = (str(exc).splitlines() or [""])[0]
        raise RegistryError(
            f"model.pretrained_file: {file}: not a weights file timm reads ({type(exc).__name__}: {first})"
        ) from None
    trained_classes = _head_size(timm_lib, arch, state)
    # loaded with the file's own class count, so timm loads every tensor strictly, head included; the head
    # is then replaced when the data has other classes (timm's reset_classifier)
    overlay = {"state_dict": state, "num_classes": trained_classes}
    try:
        net = _create(timm_lib, arch, args, trained_classes, in_chans, auto_img_size,
                      pretrained=True, pretrained_cfg_overlay=overlay)
    except RegistryError as exc:
        raise RegistryError(f"model.pretrained_file: {file}: {_mismatch(str(exc), arch)}") from None
    if trained_classes != num_classes:
        net.reset_classifier(num_classes)
    return net


def _mismatch(message: str, arch: str) -> str:
    """torch's load_state_dict complaint cut to the first keys of each kind."""
    parts = []
    listed = re.findall(r"(Missing|Unexpected) key\(s\) in state_dict: ((?:\"[^\"]+\",? ?)+)", message)
    for kind, segment in listed:
        keys = re.findall(r'"([^"]+)"', segment)[:3]
        parts.append(f"{kind.lower()} {', '.join(keys)}")
    sizes = re.findall(r"size mismatch for (\S+?): copying a param with shape torch\.Size\(\[([^\]]*)\]\) "
                       r"from checkpoint, the shape in current model is torch\.Size\(\[([^\]]*)\]\)", message)
    if sizes:
        shapes = [f"{key} ({a}) in the file, ({b}) in the model" for key, a, b in sizes[:3]]
        parts.append("shape " + ", ".join(shapes))
    if parts:
        return f"does not fit {arch} ({'; '.join(parts)})"
    return message.split(": ", 1)[-1][:300]


# what a download that cannot reach the hub raises (huggingface_hub, requests and urllib errors)
_OFFLINE_NAMES = ("OfflineModeIsEnabled", "LocalEntryNotFoundError", "ConnectionError", "ConnectTimeout",
                  "URLError", "Timeout", "gaierror", "MaxRetryError", "NameResolutionError")


def _from_hub(
    timm_lib, arch: str, args: dict[str, Any], num_classes: int, in_chans: int, auto_img_size: bool
) -> nn.Module:
    """The network with timm's trained weights for ``arch``, downloaded by timm (or found in its cache)."""
    import os

    try:
        return _create(timm_lib, arch, args, num_classes, in_chans, auto_img_size, pretrained=True)
    except RegistryError as exc:
        cause = exc.__cause__ or exc.__context__
        kinds = {type(e).__name__ for e in _chain(cause)}
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        if offline or kinds & set(_OFFLINE_NAMES):
            raise RegistryError(
                f"model.pretrained: the {arch} weights could not be downloaded (no connection to timm's hub"
                f"{', HF_HUB_OFFLINE is set' if offline else ''}); download them where there is one and pass "
                "model.pretrained_file=PATH"
            ) from None
        raise


def _chain(exc: BaseException | None):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


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
    timm_lib, arch: str, args: dict[str, Any], num_classes: int, in_chans: int, auto_img_size: bool,
    **weights: Any,
) -> nn.Module:
    """``weights``: timm's ``pretrained`` and ``pretrained_cfg_overlay``; none builds from scratch."""
    while True:
        try:
            return timm_lib.create_model(
                arch, num_classes=num_classes, in_chans=in_chans, **{"pretrained": False, **weights}, **args
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
