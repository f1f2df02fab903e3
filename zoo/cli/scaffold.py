"""What ``zoo new-plugin`` writes: a package with one working example component per kind, and its tests.

Each template is a string.Template ($module, $prefix, $name, ...), so the Python inside needs no brace
escaping. Every example passes zoo's conformance kit (tests/test_new_plugin.py installs a generated
package and runs its tests).
"""

from __future__ import annotations

from string import Template

# kind -> (module file, registry, example component name suffix, template)
KINDS: dict[str, tuple[str, str, str, str]] = {}


def kind(name: str, module: str, registry: str, component: str):
    def add(template: str) -> str:
        KINDS[name] = (module, registry, component, template)
        return template

    return add


kind("activation", "activations", "activations", "squareplus")('''\
"""$name's activations."""

from torch import nn

from zoo import activations
from zoo.plugins.activations import unit_gain


class Squareplus(nn.Module):
    """(x + sqrt(x^2 + b)) / 2: a smooth ReLU without exponentials (Barron 2021)."""

    def __init__(self, b: float) -> None:
        super().__init__()
        self.b = b
        # what zoo's initializers scale the layer in front by: g with E[(f(g z) - f(0))^2] = 1, z ~ N(0, 1)
        self.gain = unit_gain(self.forward)

    def forward(self, x):
        return (x + (x * x + self.b).sqrt()) / 2


@activations.register("${prefix}_squareplus")
def squareplus(*, b: float = 4.0) -> nn.Module:
    """Squareplus, (x + sqrt(x^2 + b)) / 2: a smooth ReLU without exponentials.

    ``b`` sets how round the bend at 0 is (b = 0 is ReLU).
    """
    return Squareplus(b)
''')

kind("normalizer", "normalizers", "normalizers", "rms")('''\
"""$name's normalizers: a factory gets num_features and dim (0: vectors, 1: sequences, 2: images)."""

import torch
from torch import nn

from zoo import normalizers
from zoo.core.errors import ZooError


class RMSNorm(nn.Module):
    """Each sample's features (and positions) divided by their root mean square, then a per-feature scale."""

    def __init__(self, num_features: int, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features, *([1] * dim)))

    def forward(self, x):
        dims = tuple(range(1, x.ndim))
        return x * torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + self.eps) * self.weight


@normalizers.register("${prefix}_rms")
def rms(num_features, dim, *, eps: float = 1e-6) -> nn.Module:
    """RMS norm (Zhang & Sennrich 2019): no mean subtraction, a learned scale per feature.

    ``eps`` is added to the mean square.
    """
    if dim not in (0, 1, 2):
        raise ZooError(f"normalizer '${prefix}_rms': dim must be 0, 1 or 2, got {dim}")
    return RMSNorm(num_features, dim, eps)
''')

kind("initializer", "initializers", "initializers", "truncated_he")('''\
"""$name's initializers: a factory returns an object with apply(model, *, activation, sample)."""

import math

from torch import nn

from zoo import initializers
from zoo.plugins.initializers import Initializer, Nonlinearity, fan_in


class TruncatedHe(Initializer):
    """He's scale, gain / sqrt(fan_in), from a normal truncated at two standard deviations."""

    def init_weight(self, weight, act: Nonlinearity) -> None:
        std = act.gain / math.sqrt(fan_in(weight))  # act.gain: what the activation declares
        # the truncation shrinks the spread by a factor 0.88; divide it back out
        std /= 0.8796
        nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


@initializers.register("${prefix}_truncated_he")
def truncated_he(*, bias: float = 0.0) -> Initializer:
    """He initialization from a truncated normal: no weight beyond two standard deviations.

    ``bias`` is the value every bias starts at.
    """
    return TruncatedHe(bias=bias)
''')

kind("augmentation", "augmentations", "augmentations", "invert")('''\
"""$name's augmentations: each draws its randomness only from the generator it is given."""

import torch
from pydantic import Field
from typing_extensions import Annotated

from zoo import augmentations
from zoo.data.augment import BatchAugmentation


class Invert(BatchAugmentation):
    images_only = False  # works on any (B, ...) batch of values in [0, 1]

    def __call__(self, x, y, generator):
        chosen = self.chosen(x.shape[0], generator, x.device)  # per-sample coin flips, from `generator`
        mask = chosen.view(-1, *[1] * (x.ndim - 1)).to(x.dtype)
        return torch.lerp(x, 1 - x, mask), y  # targets unchanged: inverting keeps the class


@augmentations.register("${prefix}_invert")
def invert(*, p: Annotated[float, Field(ge=0, le=1)] = 0.5) -> Invert:
    """Inverts each sample (1 - x) with probability ``p``."""
    return Invert(p)
''')

kind("optimizer", "optimizers", "optimizers", "signsgd")('''\
"""$name's optimizers: a factory gets params (the model's parameter groups) and returns an Optimizer."""

import torch
from pydantic import Field
from typing_extensions import Annotated

from zoo import optimizers


class SignSGD(torch.optim.Optimizer):
    """w -= lr * sign(grad): every weight moves by lr, whatever its gradient's size (Bernstein et al. 2018)."""

    def __init__(self, params, lr: float) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])
        return loss


@optimizers.register("${prefix}_signsgd")
def signsgd(params, *, lr: Annotated[float, Field(gt=0)] = 1e-3) -> torch.optim.Optimizer:
    """Sign SGD: each weight steps by ``lr`` against the sign of its gradient."""
    return SignSGD(params, lr)
''')

kind("schedule", "schedules", "schedules", "inverse_sqrt")('''\
"""$name's schedules: a factory gets optimizer, total_steps and steps_per_epoch, returns Lightning's dict."""

import math

from pydantic import Field
from torch.optim.lr_scheduler import LambdaLR
from typing_extensions import Annotated

from zoo import schedules


class InverseSqrt:
    """The multiplier at step s: linear warmup to 1, then sqrt(warmup / s). A class, not a lambda, so that
    the scheduler's state_dict keeps it and a checkpoint resumes it."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        return math.sqrt(self.warmup / (step + 1))


@schedules.register("${prefix}_inverse_sqrt")
def inverse_sqrt(optimizer, total_steps, steps_per_epoch, *, warmup_steps: Annotated[int, Field(ge=1)] = 10):
    """Inverse square-root decay after ``warmup_steps`` of linear warmup (the original Transformer's schedule)."""
    return {"scheduler": LambdaLR(optimizer, InverseSqrt(warmup_steps)), "interval": "step"}
''')

kind("model", "models", "models", "small_cnn")('''\
"""$name's models: a factory gets input_shape and num_classes and returns an nn.Module giving logits."""

import torch
from pydantic import Field
from torch import nn
from typing_extensions import Annotated

from zoo import ActivationSpec, InitSpec, NormSpec, activations, initializers, models, normalizers
from zoo.core.errors import ZooError


class SmallCNN(nn.Module):
    """Two conv-norm-activation blocks with 2x2 pooling, global average pooling, a linear head."""

    def __init__(self, channels: int, num_classes: int, width: int, activation, norm, init) -> None:
        super().__init__()
        self.activation_spec, self.init_spec = activation, init
        layers, prev = [], channels
        for i in range(2):
            act = activations.build(activation, "model.activation")
            out = width * 2**i
            factor = getattr(act, "width_factor", 1)  # maxout wants k times the channels in front of it
            layers += [
                nn.Conv2d(prev, out * factor, 3, padding=1),
                normalizers.build(norm, "model.norm", num_features=out * factor, dim=2),
                act,
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            prev = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(prev, num_classes)
        self.head.zoo_nonlinearity = "linear"  # logits: initializers give this layer gain 1

    def forward(self, x):
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))

    def initialize(self, sample=None) -> None:
        """Called by zoo once, before training, with a batch of standardized inputs."""
        initializers.build(self.init_spec, "model.init").apply(self, activation=self.activation_spec, sample=sample)


@models.register("${prefix}_small_cnn")
def small_cnn(
    input_shape,
    num_classes,
    *,
    width: Annotated[int, Field(ge=1)] = 16,
    activation: ActivationSpec = "relu",
    norm: NormSpec = "batch",
    init: InitSpec = "auto",
) -> SmallCNN:
    """A small CNN for small images: two blocks of ``width`` and 2 x ``width`` channels.

    ``activation``, ``norm`` and ``init`` are specs of zoo's registries, like the built-in models'.
    """
    if len(input_shape) != 3:
        raise ZooError(f"model '${prefix}_small_cnn' takes images (channels, height, width), got {tuple(input_shape)}")
    return SmallCNN(input_shape[0], num_classes, width, activation, norm, init)
''')

kind("monitor", "monitors", "monitors", "grad_norm")('''\
"""$name's monitors: a factory returns a Lightning Callback, switched on under a recipe's monitors:."""

import torch
from lightning.pytorch.callbacks import Callback
from pydantic import Field
from typing_extensions import Annotated

from zoo import monitors


class GradNorm(Callback):
    """Logs the global gradient norm as train/grad_norm every few steps."""

    def __init__(self, every_n_steps: int) -> None:
        self.every_n_steps = every_n_steps

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            grads = [p.grad.norm() for p in pl_module.parameters() if p.grad is not None]
            if grads:
                pl_module.log("train/grad_norm", torch.stack(grads).norm())


@monitors.register("${prefix}_grad_norm")
def grad_norm(*, every_n_steps: Annotated[int, Field(ge=1)] = 50) -> Callback:
    """Logs the norm of all gradients together every ``every_n_steps`` optimizer steps."""
    return GradNorm(every_n_steps)
''')

kind("dataset", "datasets", "datasets", "blobs")('''\
"""$name's data sets: a factory returns a zoo DataModule holding whole splits as tensors."""

import torch
from pydantic import Field
from typing_extensions import Annotated

from zoo import datasets
from zoo.data.datamodule import DataModule, Split

Count = Annotated[int, Field(ge=1)]


@datasets.register("${prefix}_blobs")
def blobs(
    *,
    num_classes: Annotated[int, Field(ge=2)] = 4,
    per_class: Count = 40,
    size: Count = 8,
    seed: int = 0,
    batch_size: Count = 32,
    eval_batch_size: Count = 256,
):
    """Gray size x size images of a bright blob whose position is the class; seeded, no download.

    ``num_classes`` positions along the diagonal, ``per_class`` images of each in train, half as many in
    val and test; every image drawn from ``seed``. ``batch_size`` and ``eval_batch_size`` are the
    training and evaluation batch sizes.
    """
    gen = torch.Generator().manual_seed(seed)
    grid = torch.arange(size, dtype=torch.float32)
    centres = torch.linspace(1, size - 2, num_classes)

    def draw(n: int) -> Split:
        y = torch.arange(num_classes).repeat_interleave(n)
        c = centres[y] + torch.randn(len(y), generator=gen) * 0.5
        dist = (grid.view(1, size, 1) - c.view(-1, 1, 1)) ** 2 + (grid.view(1, 1, size) - c.view(-1, 1, 1)) ** 2
        x = torch.exp(-dist / 4) + 0.1 * torch.rand(len(y), size, size, generator=gen)
        return Split((x.clamp(0, 1) * 255).round().to(torch.uint8).unsqueeze(1), y)

    return DataModule.standardized(
        draw(per_class), draw(max(1, per_class // 2)), draw(max(1, per_class // 2)),
        classes=[f"blob{i}" for i in range(num_classes)], standardize="channel",
        batch_size=batch_size, eval_batch_size=eval_batch_size,
    )
''')

PYPROJECT = Template('''\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "$name"
version = "0.1.0"
description = "zoo plugin: $components"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["zoo>=$zoo_version"]

[project.optional-dependencies]
test = ["pytest>=8"]

# How zoo finds the components: each module registers its own when imported.
[project.entry-points."zoo.plugins"]
$entry_points

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
''')

TEST = Template('''\
"""zoo's conformance kit over every component $name registers (one test per component and check), and
the example recipe trained for an epoch.

Run with `pytest` after `pip install -e .` (zoo finds the components through the entry points).
"""

import math
from pathlib import Path

import yaml

import zoo
from zoo.testing import parametrize_with_checks

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "example.yaml"


@parametrize_with_checks("$name")
def test_zoo_conformance(case, check):
    check(case)


def test_the_example_recipe_trains_and_records_this_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the run folder lands here
    monkeypatch.setenv("WANDB_MODE", "disabled")
    result = zoo.train(RECIPE, ["trainer.max_epochs=1"])
    assert math.isfinite(result.metrics["test_loss"])
    recorded = yaml.safe_load((Path(result.run_dir) / "recipe.yaml").read_text())["provenance"]
    assert any(origin.get("package") == "$name" for origin in recorded.values()), recorded
''')

README = Template('''\
# $name

A plugin for [zoo](https://github.com/) with these components (`zoo list` shows them once installed):

$table

## Use

```bash
pip install -e .             # registers the components through the zoo.plugins entry point
zoo plugins                  # $name $version, its components, and whether it loaded
zoo train recipes/example.yaml
```

In a recipe, name a component like a built-in one (`model: {name: ${prefix}_small_cnn, width: 32}`);
if another plugin registers the same name, write `$name:NAME`.

## Develop

```bash
pip install -e ".[test]"
pytest                       # zoo's conformance kit over every component (tests/test_components.py)
zoo check-plugin $name       # the same checks as a table
```

The contracts each kind of component follows (what a factory receives and returns, optional hooks,
randomness, what is checkpointed) are in zoo's docs/plugins.md.
''')
