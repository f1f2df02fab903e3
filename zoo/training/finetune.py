"""The recipe's ``finetune`` section: which parameters are frozen, until when; batch-norm statistics held."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

import lightning as L
from torch import nn

from zoo.core.build import THAWS_LATER, head_module
from zoo.core.errors import ZooError


def frozen_by_pattern(net: nn.Module, patterns: list[str]) -> dict[str, list[str]]:
    """The parameter names each ``finetune.freeze`` pattern matches; a pattern matching none is refused."""
    names = [name for name, _ in net.named_parameters()]
    matched = {}
    for i, pattern in enumerate(patterns):
        hits = [name for name in names if fnmatchcase(name, pattern)]
        if not hits:
            examples = ", ".join(dict.fromkeys(name.rsplit(".", 1)[0] + ".*" for name in names))
            raise ZooError(
                f"finetune.freeze[{i}]: '{pattern}' matches no parameter of the model; its parameters are "
                f"named {examples[:200]}{'...' if len(examples) > 200 else ''}"
            )
        matched[pattern] = hits
    return matched


def frozen_stages(net: nn.Module, count: int | None) -> list[str]:
    """The parameter names of the stem and the first ``count`` stages (``finetune.freeze_stages``)."""
    if count is None:
        return []
    stages = net.stages() if hasattr(net, "stages") else []
    if not stages:
        raise ZooError(
            f"finetune.freeze_stages: the model ({type(net).__name__}) does not name its stages; "
            "freeze its parameters by name with finetune.freeze"
        )
    if count > len(stages) - 1:
        raise ZooError(
            f"finetune.freeze_stages: {count} asked for, but the model has a stem and {len(stages) - 1} "
            "stages"
        )
    return [name for stage in stages[: count + 1] for name in stage]


def frozen_names(net: nn.Module, section: dict[str, Any]) -> dict[str, list[str]]:
    """What the section freezes, by what names it (each pattern, and the stages)."""
    frozen = frozen_by_pattern(net, section.get("freeze", []))
    stages = frozen_stages(net, section.get("freeze_stages"))
    if stages:
        frozen[f"stem and {section['freeze_stages']} stages"] = stages
    return frozen


def freeze(net: nn.Module, section: dict[str, Any]) -> None:
    """Hold the parameters ``section['freeze']`` and ``['freeze_stages']`` name still: no gradient, so the
    optimizer leaves them alone.

    They stay in the optimizer's groups (zoo.core.build.THAWS_LATER), so :class:`Unfreeze` can let them train
    from an epoch on without changing the optimizer, and a resumed run's optimizer state still fits.
    """
    frozen = {name for hits in frozen_names(net, section).values() for name in hits}
    for name, param in net.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
            setattr(param, THAWS_LATER, True)


class Unfreeze(L.Callback):
    """Frozen parameters until ``unfreeze_at_epoch`` (never when None), batch norms in eval mode with
    ``freeze_bn_stats``; derived from the epoch alone, so a resumed run is in the state it stopped in."""

    def __init__(self, unfreeze_at_epoch: int | None, freeze_bn_stats: bool) -> None:
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.freeze_bn_stats = freeze_bn_stats

    def _apply(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        thawed = self.unfreeze_at_epoch is not None and trainer.current_epoch >= self.unfreeze_at_epoch
        for param in module.parameters():
            if getattr(param, THAWS_LATER, False):
                param.requires_grad_(thawed)
        if self.freeze_bn_stats:
            for norm in module.modules():
                if isinstance(norm, nn.modules.batchnorm._BatchNorm):
                    norm.eval()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply(trainer, pl_module)  # a resumed run starts inside an epoch, without its epoch start

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._apply(trainer, pl_module)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.freeze_bn_stats:  # Lightning puts the module back in training mode after each validation
            self._apply(trainer, pl_module)


def callbacks(recipe) -> list[L.Callback]:
    """The callback a recipe's finetune section needs, if any."""
    section = recipe.finetune
    frozen = bool(section.freeze) or section.freeze_stages is not None
    if not section.freeze_bn_stats and not (frozen and section.unfreeze_at_epoch is not None):
        return []
    return [Unfreeze(section.unfreeze_at_epoch if frozen else None, section.freeze_bn_stats)]


def check_world(recipe, trainer: L.Trainer) -> None:
    """Refuse unfreezing under DDP: DDP synchronizes the gradients of the parameters that trained when it
    wrapped the model, so the ones unfrozen later would train apart on every process."""
    if trainer.world_size > 1 and recipe.finetune.unfreeze_at_epoch is not None:
        raise ZooError(
            f"finetune.unfreeze_at_epoch: not under DDP ({trainer.world_size} processes here): parameters "
            "frozen when training starts are never synchronized across processes; freeze them for the whole "
            "run, or train them from the start"
        )


def trainable_summary(net: nn.Module, section: dict[str, Any]) -> list[str]:
    """What ``zoo show`` prints: what trains per learning-rate group, and what is frozen."""
    head = head_module(net)
    in_head = {id(p) for p in head.parameters()} if head is not None else set()
    frozen = frozen_names(net, section)
    held = {name for hits in frozen.values() for name in hits}
    groups: dict[str, list[nn.Parameter]] = {"head": [], "backbone": []}
    for name, param in net.named_parameters():
        if name not in held and param.requires_grad:
            groups["head" if id(param) in in_head else "backbone"].append(param)
    mult = section.get("backbone_lr_mult", 1.0)
    lines = []
    for group, params in groups.items():
        scale = 1.0 if group == "head" else mult
        values = sum(p.numel() for p in params)
        lines.append(f"trains {group}: {len(params)} tensors, {values:,} values, lr x {scale:g}")
    until = section.get("unfreeze_at_epoch")
    when = f"until epoch {until}" if until is not None else "for the whole run"
    params = dict(net.named_parameters())
    for pattern, hits in frozen.items():
        values = sum(params[name].numel() for name in hits)
        lines.append(f"frozen {when}: {pattern}: {len(hits)} tensors, {values:,} values")
    if section.get("freeze_bn_stats"):
        lines.append("batch-norm running statistics: held as loaded")
    return lines


def starts_from_weights(recipe) -> bool:
    """Whether the recipe fine-tunes: weights to start from, or a finetune section saying what trains."""
    model = recipe.model
    return bool(model.get("pretrained") or model.get("pretrained_file") or recipe.init_from
                or recipe.finetune != type(recipe.finetune)())


def trainable_lines(recipe) -> list[str]:
    """For ``zoo show``: the weights' input configuration and what trains, from the recipe's network."""
    from zoo.core.build import build_data
    from zoo.training.classifier import Classifier

    dm = build_data(recipe.data, seed=recipe.seed)
    module = Classifier(recipe.to_dict(), dm.input_shape, dm.num_classes)
    lines = []
    weights = getattr(module.net, "weights_config", None)
    if weights:
        size = "x".join(str(n) for n in weights["input_size"]) or "not given"
        lines.append(f"weights' input: size {size}, crop_pct {weights['crop_pct']}, mean "
                     f"{[round(v, 4) for v in weights['mean'].flatten().tolist()]}, std "
                     f"{[round(v, 4) for v in weights['std'].flatten().tolist()]} "
                     "(standardized by these, not the data's)")
    return lines + trainable_summary(module.net, recipe.finetune.model_dump())
