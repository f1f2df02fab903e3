"""What a recipe's model costs: parameters, FLOPs per image and the memory of one training step.

Everything is measured on the model the recipe builds (through the Classifier, so plugin models
count the same way), on the CPU, with random inputs of the data's shape:

- parameters: every parameter of the network, trainable or frozen (a whitened first conv is frozen);
  an ensemble's are its members' together.
- FLOPs per image: one forward pass in eval mode, counted by ``torch.utils.flop_counter.FlopCounterMode``
  over a batch of two and halved. It counts matrix multiplications and convolutions (a multiply-add is
  two FLOPs), not elementwise work (activations, normalization), which is small beside them. An
  ensemble's are its members' together; ``flops_per_prediction`` multiplies by the test-time views
  (``tta``) that ``zoo eval`` averages over.
- memory of one training step at the recipe's batch size: the bytes of the parameters, their gradients
  and the optimizer's state after one real step, the EMA copy when the recipe keeps one, and the
  activations: every tensor autograd saves for the backward pass (``torch.autograd.graph.saved_tensors_hooks``,
  each storage once, parameters left out), under the recipe's mixed precision when it has one. Their sum
  is what a step holds at the end of its forward pass; the transient buffers of the backward pass and
  the allocator's slack come on top (on a GPU, ``torch.cuda.max_memory_allocated`` measures those too).
  An ensemble trains one member at a time: the largest member's step is reported.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from zoo.core.build import build_data, build_optimizer
from zoo.core.errors import ZooError
from zoo.core.recipe import Recipe, derive
from zoo.core.contracts import split_size
from zoo.training.classifier import Classifier

# The trainer.precision values under which a step runs in a lower-precision autocast region.
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@dataclass
class TrainingMemory:
    """Bytes one training step holds, by kind (see the module docstring for how each is measured)."""

    batch_size: int
    precision: str
    parameters: int
    gradients: int
    optimizer_state: int
    ema: int
    activations: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer_state + self.ema + self.activations


@dataclass
class ModelStats:
    input_shape: tuple[int, ...]
    num_classes: int
    members: int
    parameters: int
    trainable_parameters: int
    flops_per_image: int
    views: int  # test-time views averaged per prediction
    memory: TrainingMemory
    notes: list[str] = field(default_factory=list)

    @property
    def flops_per_prediction(self) -> int:
        return self.flops_per_image * self.views

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_shape"] = list(self.input_shape)
        out["flops_per_prediction"] = self.flops_per_prediction
        out["memory"]["total"] = self.memory.total
        return out


def data_shape(recipe: Recipe) -> tuple[tuple[int, ...], int, int]:
    """(input shape, classes, training samples) of the recipe's data, read as training would read it."""
    dm = build_data(recipe.data, recipe.seed)
    return tuple(dm.input_shape), int(dm.num_classes), split_size(dm, "train")


def member_recipes_of(recipe: Recipe, train_samples: int | None) -> list[Recipe]:
    """The recipes of the models a recipe trains: itself, an ensemble's members, or one per snapshot."""
    if recipe.ensemble is None:
        return [recipe]
    if not recipe.ensemble.snapshot:
        from zoo.training.ensemble_training import member_recipes

        return member_recipes(recipe)
    from zoo.core.catalog import schedules

    single = derive(recipe, [], ensemble=None)
    per_epoch = max(1, -(-(train_samples or 1) // int(recipe.data.get("batch_size", 1))))
    ends = schedules.get(recipe.schedule["name"]).obj.cycle_ends(
        recipe.schedule, total_steps=per_epoch * int(recipe.trainer.max_epochs), steps_per_epoch=per_epoch
    )
    return [single] * len(ends)


def _module(recipe: Recipe, input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    module = Classifier(recipe.to_dict(), input_shape, num_classes)
    g = torch.Generator().manual_seed(0)
    # data-dependent initializers (whitening, LSUV) need a sample; they also decide what is frozen
    module.initialize(torch.rand(64, *input_shape, generator=g))
    return module


def forward_flops(module: Classifier) -> int:
    """FLOPs of one forward pass for one image (see the module docstring)."""
    from torch.utils.flop_counter import FlopCounterMode

    module.eval()
    x = torch.rand(2, *module.input_shape)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(module.standardize(x))
    return counter.get_total_flops() // 2


def training_memory(module: Classifier, recipe: Recipe) -> TrainingMemory:
    """The bytes of one real training step at the recipe's batch size (see the module docstring)."""
    batch = int(recipe.data.get("batch_size", 1))
    precision = str(recipe.trainer.precision or "32-true")
    params = list(module.net.parameters())
    param_storages = {p.untyped_storage().data_ptr() for p in params}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in param_storages:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    optimizer = build_optimizer(recipe.optimizer, module.net, module.reg["decay_norm_and_bias"])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *module.input_shape, generator=g)
    y = torch.randint(0, module.num_classes, (batch,), generator=g)
    dtype = AUTOCAST.get(precision)
    autocast = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    module.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        loss = module.step_loss(x, y)
    loss.backward()
    optimizer.step()
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.ndim > 0]
    param_bytes = sum(p.nbytes for p in params)
    return TrainingMemory(
        batch_size=batch,
        precision=precision,
        parameters=param_bytes,
        gradients=sum(p.grad.nbytes for p in params if p.grad is not None),
        optimizer_state=sum(t.nbytes for t in state),
        ema=param_bytes if recipe.ema is not None else 0,
        activations=sum(saved.values()),
    )


def recipe_stats(
    recipe: Recipe, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None
) -> ModelStats:
    """Parameters, FLOPs per image and training-step memory of a resolved recipe's model(s).

    Without ``input_shape`` and ``num_classes`` the recipe's data is read for them, as training reads it.
    """
    notes = []
    train_samples = None
    if input_shape is None or num_classes is None:
        shape, classes, train_samples = data_shape(recipe)
        input_shape = input_shape or shape
        num_classes = num_classes or classes
    elif recipe.ensemble is not None and recipe.ensemble.snapshot:
        notes.append("snapshot members counted from whole epochs (no data read for the steps per epoch)")
    members = member_recipes_of(recipe, train_samples)
    if not members:
        raise ZooError(f"{recipe.source}: the run ends before its first warm-restart cycle: no snapshot members")
    total = trainable = flops = 0
    memory: TrainingMemory | None = None
    built: dict[str, tuple[int, int, int, TrainingMemory]] = {}
    for member in members:
        key = repr(member.model) + repr(member.optimizer) + repr(member.data) + repr(member.trainer)
        if key not in built:  # snapshot members and seed-only members are the same model
            module = _module(member, tuple(input_shape), num_classes)
            built[key] = (
                sum(p.numel() for p in module.net.parameters()),
                sum(p.numel() for p in module.net.parameters() if p.requires_grad),
                forward_flops(module),
                training_memory(module, member),
            )
        n, n_trainable, f, m = built[key]
        total, trainable, flops = total + n, trainable + n_trainable, flops + f
        memory = m if memory is None or m.total > memory.total else memory
    views = (1 + int(recipe.tta.crops)) * (2 if recipe.tta.flip else 1)  # as zoo.data.tta.views makes them
    return ModelStats(tuple(input_shape), num_classes, len(members), total, trainable, flops, views, memory, notes)


def human(n: float, unit: str = "", base: int = 1000) -> str:
    """3 significant figures with a decimal (base 1000) or binary (1024) prefix: 1.23 MFLOPs, 45.6 KiB."""
    prefixes = ("", "k", "M", "G", "T") if base == 1000 else ("", "Ki", "Mi", "Gi", "Ti")
    for prefix in prefixes:
        if abs(n) < base or prefix == prefixes[-1]:
            text = f"{n:.3g}" if prefix else f"{n:,.0f}"
            return f"{text} {prefix}{unit}".rstrip()
        n /= base
    raise AssertionError("unreachable")


def stats_text(stats: ModelStats, source: str) -> str:
    """What ``zoo show RECIPE --stats`` prints."""
    m = stats.memory
    shape = "x".join(str(d) for d in stats.input_shape)
    members = f", {stats.members} members" if stats.members > 1 else ""
    frozen = stats.parameters - stats.trainable_parameters
    lines = [
        f"# {source}: input {shape}, {stats.num_classes} classes{members}",
        f"parameters:           {stats.parameters:,}" + (f" ({frozen:,} frozen)" if frozen else ""),
        f"FLOPs per image:      {human(stats.flops_per_image, 'FLOPs')}  (one forward pass"
        + (", all members" if stats.members > 1 else "") + "; torch.utils.flop_counter, a multiply-add = 2)",
    ]
    if stats.views > 1:
        lines.append(f"FLOPs per prediction: {human(stats.flops_per_prediction, 'FLOPs')}  "
                     f"(x{stats.views} test-time views)")
    lines += [
        f"memory of one training step, batch {m.batch_size}, {m.precision}"
        + (" (the largest member)" if stats.members > 1 else "") + ":",
        f"  parameters          {human(m.parameters, 'B', 1024)}",
        f"  gradients           {human(m.gradients, 'B', 1024)}",
        f"  optimizer state     {human(m.optimizer_state, 'B', 1024)}  (after one step)",
    ]
    if m.ema:
        lines.append(f"  EMA weights         {human(m.ema, 'B', 1024)}")
    lines += [
        f"  activations         {human(m.activations, 'B', 1024)}  (tensors saved for backward, measured)",
        f"  total               {human(m.total, 'B', 1024)}  (plus transient backward buffers)",
    ]
    lines += [f"note: {n}" for n in stats.notes]
    return "\n".join(lines) + "\n"
