"""What each registry asks of its components, checked when they register and when they are built.

At registration (:func:`signature_problems`): the factory takes every context parameter its registry
hands it (a normalizer gets ``num_features`` and ``dim``, a model ``input_shape`` and ``num_classes``),
and every parameter a recipe may set has a type annotation, so that recipes are validated against it.
An entry with problems is kept and listed, and refused with those problems named when it is used.

When built (the ``contract`` of each registry in zoo.core.catalog): what the factory returned is of
the kind its registry promises to the code that uses it. Each check returns None when all is well, or
the end of a sentence saying what is wrong ("returned None, not an nn.Module ...").

The checks that need a sample batch live where the sample is: a model's output in zoo.core.build
(:func:`model_output_problem`), an augmentation's in zoo.data.augment. docs/plugins.md states the
same contracts in prose, and zoo.testing checks far more of them.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zoo.core.registry import Registry


def signature_problems(registry: Registry, obj: Any) -> list[str]:
    """How ``obj``'s signature breaks what ``registry`` will call it with ([] when it does not)."""
    if not callable(obj):
        return [f"it is a {type(obj).__name__}, not a function or class zoo can call"]
    try:
        signature = inspect.signature(obj, eval_str=True)
    except (TypeError, ValueError):
        return ["zoo cannot read its signature"]
    except Exception as exc:  # noqa: BLE001 - an annotation naming something that does not exist
        return [f"its annotations cannot be resolved ({type(exc).__name__}: {exc})"]
    params = signature.parameters.values()
    by_keyword = {
        p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    problems = []
    missing = [name for name in registry.context if name not in by_keyword and not takes_any]
    if missing:
        names = " and ".join(f"'{name}'" for name in missing)
        context = ", ".join(registry.context)
        problems.append(
            f"its factory does not take {names}, which zoo passes by keyword to every {registry.name} factory "
            f"(the context: {context})"
        )
    positional = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_ONLY and p.default is p.empty]
    if positional:
        problems.append(f"its factory has positional-only parameters zoo cannot pass: {', '.join(positional)}")
    untyped = [
        p.name
        for p in params
        if p.name in by_keyword and p.name not in registry.context and p.annotation is inspect.Parameter.empty
    ]
    if untyped:
        problems.append(
            f"parameter{'s' if len(untyped) > 1 else ''} {', '.join(repr(n) for n in untyped)} "
            "ha" + ("ve" if len(untyped) > 1 else "s") + " no type annotation, so a recipe's value could not "
            "be validated (annotate it, e.g. `slope: float = 0.1`)"
        )
    return problems


def _kind(obj: Any) -> str:
    if obj is None:
        return "None"
    text = repr(obj) if isinstance(obj, (str, int, float)) else ""
    kind = f"a {type(obj).__module__}.{type(obj).__qualname__}".replace("builtins.", "")
    return f"{kind} {text[:40]}".rstrip()


def module(obj: Any) -> str | None:
    """Activations, normalizers, models: an nn.Module (its forward is what the model calls)."""
    from torch import nn

    if isinstance(obj, nn.Module):
        return None
    hint = ""
    if callable(obj) and not isinstance(obj, type):
        hint = "; wrap a function in a module (nn.Tanh(), not torch.tanh)"
    elif isinstance(obj, type):
        hint = "; return an instance (nn.ReLU(), not nn.ReLU)"
    return f"returned {_kind(obj)}, not an nn.Module{hint}"


def activation(obj: Any) -> str | None:
    """An nn.Module; ``width_factor`` (a positive int) and ``gain`` (a positive number) when it sets them."""
    problem = module(obj)
    if problem:
        return problem
    factor = getattr(obj, "width_factor", 1)
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        return f"set width_factor={factor!r} on its module; it must be a positive integer"
    gain = getattr(obj, "gain", 1.0)
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not 0 < gain < float("inf"):
        return f"set gain={gain!r} on its module; it must be a positive number (the initializers' scale)"
    return None


def initializer(obj: Any) -> str | None:
    """An object with ``apply(model, *, activation, sample)``."""
    if callable(getattr(obj, "apply", None)):
        return None
    return f"returned {_kind(obj)}, which has no apply(model, *, activation, sample) method"


def augmentation(obj: Any) -> str | None:
    """Callable as ``aug(x, y, generator)``; what it returns is checked on a sample batch (zoo.data.augment)."""
    if obj is None or not callable(obj) or isinstance(obj, type):
        return f"returned {_kind(obj)}, not an augmentation callable as aug(x, y, generator)"
    only = getattr(obj, "images_only", True)
    if not isinstance(only, bool):
        return f"has images_only={only!r}; it must be True or False"
    return None


def optimizer(obj: Any) -> str | None:
    """A torch.optim.Optimizer over the parameters it was given."""
    import torch

    if isinstance(obj, torch.optim.Optimizer):
        return None
    return f"returned {_kind(obj)}, not a torch.optim.Optimizer"


def schedule(obj: Any) -> str | None:
    """A dict in Lightning's lr_scheduler form: ``{"scheduler": ..., "interval": "step" | "epoch", ...}``."""
    if not isinstance(obj, dict) or "scheduler" not in obj:
        return (
            f"returned {_kind(obj)}, not a dict in Lightning's lr_scheduler form "
            "({'scheduler': a torch LR scheduler, 'interval': 'step'})"
        )
    scheduler = obj["scheduler"]
    if not (callable(getattr(scheduler, "step", None)) and callable(getattr(scheduler, "state_dict", None))):
        return f"returned a dict whose 'scheduler' is {_kind(scheduler)}, not a torch LR scheduler"
    if obj.get("interval", "epoch") not in ("step", "epoch"):
        return f"returned interval={obj.get('interval')!r}; Lightning takes 'step' or 'epoch'"
    return None


def monitor(obj: Any) -> str | None:
    """A Lightning Callback."""
    from lightning.pytorch.callbacks import Callback

    if isinstance(obj, Callback):
        return None
    return f"returned {_kind(obj)}, not a lightning.pytorch.callbacks.Callback"


def dataset(obj: Any) -> str | None:
    """A zoo DataModule: train/val/test splits of (x, y) tensors, ``input_shape``, ``num_classes``, ``sample()``;
    or a streamed one (zoo.data.streaming.StreamingData), which offers ``split_size``, ``spread`` and
    ``batches`` in place of the splits."""
    from lightning.pytorch import LightningDataModule

    if not isinstance(obj, LightningDataModule):
        return f"returned {_kind(obj)}, not a LightningDataModule (build one with zoo.data.datamodule.DataModule)"
    streamed = ("split_size", "spread", "batches", "input_shape", "num_classes", "sample")
    if all(hasattr(obj, a) for a in streamed):
        return None
    missing = [a for a in ("train", "val", "test", "input_shape", "num_classes", "sample") if not hasattr(obj, a)]
    if missing:
        return (
            f"returned a {type(obj).__name__} without {', '.join(missing)}: zoo needs what "
            "zoo.data.datamodule.DataModule has (build one with DataModule.standardized)"
        )
    for part in ("train", "val", "test"):
        split = getattr(obj, part)
        if not (hasattr(split, "x") and hasattr(split, "y")):
            return f"returned a data set whose {part} split is {_kind(split)}, not a Split of inputs x and labels y"
    return None


def split_size(dm: Any, name: str) -> int:
    """Samples in a data module's split ``name``, held in memory (``dm.<name>``) or streamed (``dm.split_size``)."""
    return dm.split_size(name) if hasattr(dm, "split_size") else len(getattr(dm, name))


def model_output_problem(net: Any, input_shape: tuple[int, ...], num_classes: int) -> str | None:
    """Run ``net`` on a batch of 2 random inputs: None if it gives (2, num_classes) finite logits.

    The batch comes from a generator of its own, and the global random state is put back afterwards, so
    the check never changes what a seeded run does; the network runs in eval mode without gradients.
    """
    import torch

    from zoo.core.errors import raised_at

    sample = torch.rand((2, *input_shape), generator=torch.Generator().manual_seed(0))
    modes = {m: m.training for m in net.modules()}
    net.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            out = net(sample)
    except Exception as exc:  # noqa: BLE001 - whatever the network raises is the plugin's to fix
        return (
            f"failed on a sample batch of 2 inputs of shape {tuple(input_shape)}: "
            f"{type(exc).__name__}: {exc}{raised_at(exc)}"
        )
    finally:
        for m, training in modes.items():
            m.training = training
    if not isinstance(out, torch.Tensor):
        return (
            f"returned {_kind(out)} for a batch of 2 inputs of shape {tuple(input_shape)}; "
            f"a model's forward returns logits, a tensor of shape (batch, num_classes) = (2, {num_classes})"
        )
    if tuple(out.shape) != (2, num_classes):
        return (
            f"gave output of shape {tuple(out.shape)} for a batch of 2 inputs of shape {tuple(input_shape)}; "
            f"a model's forward returns logits of shape (batch, num_classes) = (2, {num_classes})"
        )
    if not out.is_floating_point():
        return f"gave {out.dtype} output; logits must be floating point"
    return None
