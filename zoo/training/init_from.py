"""``init_from``: a new run's network starts from another zoo run's trained weights."""

from __future__ import annotations

from pathlib import Path

import torch

from zoo.core.build import head_module
from zoo.core.errors import ZooError


def source_checkpoint(source: str) -> Path:
    """The file ``init_from`` names: itself, or a run folder's checkpoint as ``zoo eval`` picks it; the run
    records this file, so what it started from stays named when the source run goes on."""
    from zoo.training.evaluation import find_checkpoint

    try:
        return find_checkpoint(Path(source).expanduser()).resolve()
    except ZooError as exc:
        raise ZooError(f"init_from: {exc}") from None


def with_weights_files(recipe):
    """The recipe with the weights it starts from named by absolute path: ``init_from`` as the checkpoint file
    itself, ``model.pretrained_file`` (read again by a resumed run, from whatever folder it runs in)."""
    changes: dict = {}
    if recipe.init_from is not None:
        changes["init_from"] = str(source_checkpoint(recipe.init_from))
    file = recipe.model.get("pretrained_file")
    if isinstance(file, str):
        changes["model"] = {**recipe.model, "pretrained_file": str(Path(file).expanduser().resolve())}
    return recipe.model_copy(update=changes) if changes else recipe


def source_model(source: str):
    """The run's model as ``zoo eval`` loads it, with the same provenance checks."""
    from zoo.core import discovery
    from zoo.training.ensemble_model import Ensemble
    from zoo.training.evaluation import load_model

    file = source_checkpoint(source)
    try:
        # a plugin the source names is imported only if this run loaded it too (its recipe's plugins or
        # --plugin)
        model = load_model(file, discovery.loaded_by_name())
    except ZooError as exc:
        raise ZooError(f"init_from: {exc}") from None
    if isinstance(model, Ensemble):
        raise ZooError(
            f"init_from: {source} is an ensemble, whose members hold different weights; name one member's "
            f"run folder instead ({file.parent / 'members' / 'm0'} is the first)"
        )
    return model


@torch.no_grad()
def load_weights(module, source: str) -> str:
    """Copy the source's weights into ``module``'s network (and, for the same input shape, the statistics they
    were trained with); returns the line that says what was loaded. Shapes that differ outside the head are
    refused, naming them."""
    trained = source_model(source)
    target, given = module.net.state_dict(), trained.net.state_dict()
    head = head_module(module.net)
    head_keys = {f"{name}.{key}" for name, m in module.net.named_modules() if m is head
                 for key in m.state_dict()}
    loaded, new_head, wrong = {}, [], []
    for key, value in given.items():
        if key not in target:
            continue
        if value.shape == target[key].shape:
            loaded[key] = value
        elif key in head_keys:
            new_head.append(key)
        else:
            wrong.append(f"{key} {tuple(value.shape)} in the source, {tuple(target[key].shape)} here")
    if wrong:
        raise ZooError(
            f"init_from: {source}: its weights do not fit this model outside the head: {'; '.join(wrong[:3])}"
            f"{f' (and {len(wrong) - 3} more)' if len(wrong) > 3 else ''}"
        )
    ignored = sorted(set(given) - set(target))
    kept = sorted(set(target) - set(given) - set(new_head))
    module.net.load_state_dict(loaded, strict=False)
    if tuple(trained.input_mean.shape) == tuple(module.input_mean.shape):
        # the weights expect inputs standardized the way they were trained
        module.set_input_stats(trained.input_mean, trained.input_std)
    head_note = f"head: {', '.join(new_head)}" if new_head else "head kept"
    line = (f"init_from {source}: loaded {len(loaded)} tensors, re-initialized {len(new_head)} "
            f"({head_note}), ignored {len(ignored)} ({', '.join(ignored[:3]) or 'none'})")
    if kept:
        line += f"; {len(kept)} not in the source kept as initialized ({', '.join(kept[:3])})"
    return line
