"""The checks, one function per check, each asking of a component what its registry's contract says.

Each ``check_<name>(case)`` returns a short note on success, raises AssertionError saying what is
wrong, Skipped when the component declines the settings (a ZooError: a data set whose files are not
here), or NotApplicable when the check means nothing for its registry (an augmentation keeps no
state to checkpoint). Everything runs on small synthetic inputs on the CPU, and again on CUDA when
a GPU is present. What the contracts are: docs/plugins.md.
"""

from __future__ import annotations

import inspect
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.core.errors import ComponentError, ZooError

# The inputs the checks build and run components on: small, so the whole kit runs in seconds.
IMAGE_SHAPE = (3, 16, 16)
NUM_CLASSES = 5
FEATURES = 6
# The layouts a normalizer is built for: every dim the contract names (0: feature vectors, 1: sequences,
# 2: images) with several channel counts, so one whose parameters fit only some counts (a fixed number of
# groups) is still exercised on those; it declines the others with a ZooError.
NORM_DIMS = (0, 1, 2)
NORM_FEATURES = (6, 8, 32)
BATCH = 8
SCHEDULE_STEPS, SCHEDULE_EPOCH = 20, 5


class Skipped(Exception):
    """The component declined these settings (it raised a ZooError): not a failure, not a pass."""


class NotApplicable(Exception):
    """The check asks nothing of this registry's components."""


def cuda_devices() -> list[torch.device]:
    return [torch.device("cuda")] if torch.cuda.is_available() else []


# --- building -----------------------------------------------------------------------------------------


def _registry(case):
    from zoo.core.registry import REGISTRIES

    return REGISTRIES[case.registry]


def _missing_params(case) -> list[str]:
    entry = case.entry
    return [p.name for p in entry.params if p.default is inspect.Parameter.empty and p.name not in case.params]


def build(case, **context: Any) -> Any:
    """The component built from ``case`` with ``context``; Skipped when it declines (a ZooError)."""
    missing = _missing_params(case)
    if missing:
        raise AssertionError(
            f"needs parameter{'s' if len(missing) > 1 else ''} {', '.join(missing)} to build: register it with "
            f"examples=[{{{', '.join(f'{m!r}: ...' for m in missing)}}}] or pass them to check_component"
        )
    try:
        return _registry(case).build(case.spec, str(case), **context)
    except ComponentError:
        raise
    except ZooError as exc:
        raise Skipped(f"declined to build: {exc}") from None


def tiny_net(features: int = FEATURES, classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(features, 16), nn.Tanh(), nn.Linear(16, classes))


def conv_net(activation: nn.Module | None = None) -> nn.Sequential:
    act = activation if activation is not None else nn.ReLU()
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), act, nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 16), nn.ReLU(),
        nn.Linear(16, NUM_CLASSES),
    )


def images(n: int = BATCH, shape: tuple[int, ...] = IMAGE_SHAPE, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


def normal(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def labels(n: int = BATCH, classes: int = NUM_CLASSES) -> torch.Tensor:
    return torch.arange(n) % classes


def layout_name(layout: tuple[int, int]) -> str:
    return f"dim {layout[0]}, {layout[1]} features"


def normalizer(case, layout: tuple[int, int]) -> nn.Module:
    """The normalizer built for ``layout`` (dim, num_features)."""
    try:
        return build(case, num_features=layout[1], dim=layout[0])
    except ComponentError as exc:
        raise AssertionError(f"{layout_name(layout)}: {exc}") from None


def built_normalizers(case) -> dict[tuple[int, int], nn.Module]:
    """The normalizer for each layout (dim, num_features) of NORM_DIMS x NORM_FEATURES it accepts; at least one."""
    out, reasons = {}, []
    for layout in ((dim, features) for dim in NORM_DIMS for features in NORM_FEATURES):
        try:
            out[layout] = normalizer(case, layout)
        except Skipped as exc:
            reasons.append(f"{layout_name(layout)}: {exc}")
    if not out:
        raise Skipped(f"declined all {len(reasons)} layouts, e.g. {reasons[0]}")
    return out


def norm_input(layout: tuple[int, int], seed: int = 0) -> torch.Tensor:
    dim, features = layout
    return normal(BATCH, features, *([5] * dim), seed=seed) * 3 + 1


def activation_net(case) -> nn.Module:
    act = build(case)
    factor = getattr(act, "width_factor", 1)
    return nn.Sequential(nn.Linear(FEATURES, 8 * factor), act, nn.Linear(8, 3))


def model(case, shape: tuple[int, ...] = IMAGE_SHAPE, seed: int = 0) -> nn.Module:
    """The model built and initialized (its ``initialize(sample)`` hook, if any) under ``seed``."""
    torch.manual_seed(seed)
    net = build(case, input_shape=shape, num_classes=NUM_CLASSES)
    if any(isinstance(m, nn.modules.lazy.LazyModuleMixin) for m in net.modules()):
        with torch.no_grad():
            net.eval()(images(2, shape))  # lazy layers take their shapes, as zoo's build-time check does
        net.train()
    init = getattr(net, "initialize", None)
    if init is not None:
        init(images(32, shape, seed=1))
    return net


def optimizer_over(case, net: nn.Module):
    return build(case, params=[{"params": [p for p in net.parameters()]}])


def schedule_over(case, lr: float = 0.1):
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=lr)
    return opt, build(case, optimizer=opt, total_steps=SCHEDULE_STEPS, steps_per_epoch=SCHEDULE_EPOCH)


def run_schedule(opt, schedule: dict, steps: int) -> list[float]:
    """The learning rate at each of ``steps`` steps, stepping the scheduler as Lightning would."""
    scheduler = schedule["scheduler"]
    per_epoch = schedule.get("interval", "epoch") == "epoch"
    rates = []
    for step in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        if not per_epoch or (step + 1) % SCHEDULE_EPOCH == 0:
            scheduler.step()
    return rates


def dataset(case):
    return build(case)


def augmentation_input(aug, shape: tuple[int, ...] = IMAGE_SHAPE, dtype=torch.float32, device="cpu"):
    x = images(BATCH, shape).to(device=device, dtype=dtype)
    y = torch.nn.functional.one_hot(labels(), NUM_CLASSES).to(device=device, dtype=dtype)
    return x, y


def augmentation_shapes(aug) -> list[tuple[int, ...]]:
    """Image batches always; flat feature vectors too for one that says images_only = False."""
    return [IMAGE_SHAPE] + ([(FEATURES,)] if not getattr(aug, "images_only", True) else [])


# --- comparing -----------------------------------------------------------------------------------------


def finite(t: torch.Tensor, what: str) -> None:
    assert torch.isfinite(t).all(), f"{what} has non-finite values"


def same_state(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), f"{what}: different keys ({sorted(set(a) ^ set(b))[:5]})"
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), f"{what}: '{key}' differs"


def params_of(net: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def changed(before: list[torch.Tensor], net: nn.Module) -> bool:
    return any(not torch.equal(b, p.detach()) for b, p in zip(before, net.parameters()))


def unchanged(before: list[torch.Tensor], net: nn.Module) -> list[str]:
    """The trainable parameters that training left as they were."""
    return [
        name for b, (name, p) in zip(before, net.named_parameters()) if p.requires_grad and torch.equal(b, p.detach())
    ]


def round_trip(state: Any) -> Any:
    """``state`` written as zoo writes checkpoints and read back as zoo reads them: weights_only=True."""
    from zoo.core.io import atomic_torch_save
    from zoo.training.evaluation import safe_load

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "check.ckpt"
        atomic_torch_save(state, path)
        return safe_load(path)


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 3, opt=None) -> list[float]:
    """``steps`` of SGD on cross-entropy; the losses."""
    opt = opt or torch.optim.SGD(net.parameters(), lr=0.05)
    net.train()
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def trained(net: nn.Module, x: torch.Tensor, y: torch.Tensor, opt=None, every: bool = True) -> str:
    """Three training steps: finite losses, and every trainable parameter moved (``every=False``: any)."""
    before = params_of(net)
    losses = train(net, x, y, opt=opt)
    assert all(math.isfinite(v) for v in losses), f"training losses {losses} are not finite"
    assert changed(before, net), "three training steps left every parameter unchanged"
    stuck = unchanged(before, net)
    if every:
        assert not stuck, f"three training steps left {', '.join(stuck[:5])} unchanged (no gradient reaches them?)"
    return f"losses {losses[0]:.3g} -> {losses[-1]:.3g}"


# --- the checks ----------------------------------------------------------------------------------------


def check_signature(case) -> str:
    problems = case.entry.problems
    assert not problems, "; ".join(problems)
    return ""


def check_documented(case) -> str:
    entry = case.entry
    doc = inspect.getdoc(entry.obj) or ""
    assert entry.summary, "no docstring: its first line is what `zoo list` and the docs show"
    undocumented = [
        p.name for p in entry.params if not re.search(rf"(?<!\w){re.escape(p.name)}(?!\w)", doc) and not _described(p.annotation)
    ]
    assert not undocumented, (
        f"parameter{'s' if len(undocumented) > 1 else ''} {', '.join(undocumented)} not mentioned in the docstring "
        "(or given a Field(description=...))"
    )
    return ""


def _described(annotation: Any) -> bool:
    for meta in getattr(annotation, "__metadata__", ()):
        if getattr(meta, "description", None):
            return True
    return False


def check_builds(case) -> str:
    try:
        return _builds(case)
    except Skipped as exc:
        # every other check needs the component built: a component the kit never built is not checked at all
        raise AssertionError(
            f"nothing could be checked: it declined every setting the kit tried ({exc})"
        ) from None


def _builds(case) -> str:
    kind = case.registry
    if kind == "normalizers":
        built = built_normalizers(case)
        dims = sorted({d for d, _ in built})
        return f"{len(built)} layouts (dims {dims}, features {sorted({f for _, f in built})})"
    if kind == "models":
        model(case)
        return f"input {IMAGE_SHAPE}"
    if kind == "optimizers":
        optimizer_over(case, tiny_net())
    elif kind == "schedules":
        schedule_over(case)
    else:
        build(case)
    return ""


def check_output(case) -> str:
    return OUTPUT[case.registry](case)


def _per_registry(table: dict, case, why_not: str):
    """The registry's own version of a check, or NotApplicable saying why it has none."""
    check = table.get(case.registry)
    if check is None:
        raise NotApplicable(why_not.format(case.registry))
    return check


def check_deterministic(case) -> str:
    return _per_registry(DETERMINISTIC, case, "nothing random in what {} return")(case)


def check_device_dtype(case) -> str:
    check = _per_registry(DEVICE_DTYPE, case, "{} hold no tensors")
    done = check(case, "cpu", torch.float64)
    for device in cuda_devices():
        check(case, device, torch.float32)
        done += f"; {device}"
    return done or "float64"


def check_checkpoint(case) -> str:
    return _per_registry(CHECKPOINT, case, "{} keep no state between steps")(case)


def check_train_step(case) -> str:
    return _per_registry(TRAIN_STEP, case, "{} take no training step of their own")(case)


# --- per registry: output --------------------------------------------------------------------------------


def _activation_output(case) -> str:
    act = build(case)
    factor = getattr(act, "width_factor", 1)
    for shape in ((BATCH, 8 * factor), (BATCH, 4 * factor, 5, 5)):
        x = normal(*shape)
        with torch.no_grad():
            out = act(x)
        assert isinstance(out, torch.Tensor), f"returned {type(out).__name__} for a tensor input, not a tensor"
        want = (shape[0], shape[1] // factor, *shape[2:])
        assert tuple(out.shape) == want, (
            f"maps an input of shape {shape} to {tuple(out.shape)}; expected {want}"
            + (f" (width_factor {factor})" if factor > 1 else "")
        )
        assert out.dtype == x.dtype, f"turned {x.dtype} into {out.dtype}"
        finite(out, "its output")
    gain = getattr(act, "gain", None)
    return f"gain {gain:.4g}" if gain is not None else "declares no gain (initializers assume ReLU's)"


def _normalizer_output(case) -> str:
    for layout, norm in built_normalizers(case).items():
        where = layout_name(layout)
        assert isinstance(norm, nn.Module), f"{where}: returned {type(norm).__name__}, not an nn.Module"
        x = norm_input(layout)
        for mode in ("train", "eval"):
            norm.train(mode == "train")
            with torch.no_grad():
                out = norm(x)
            assert isinstance(out, torch.Tensor) and out.shape == x.shape, (
                f"{where}, {mode} mode: maps shape {tuple(x.shape)} to "
                f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}; it must keep it"
            )
            finite(out, f"{where}, {mode} mode output")
    return ""


def _initializer_output(case) -> str:
    init = build(case)
    net = conv_net()
    before = params_of(net)
    torch.manual_seed(0)
    result = init.apply(net, activation="relu", sample=images(32))
    assert result is None or result is net, "apply() should initialize in place (and return None)"
    for name, p in net.named_parameters():
        finite(p, f"parameter {name} after apply()")
    assert changed(before, net), "apply() changed no weight of a conv net"
    with torch.no_grad():
        finite(net(images()), "the initialized net's output")
    return ""


def _augmentation_output(case) -> str:
    from zoo.data.augment import contract_problem

    aug = build(case)
    for shape in augmentation_shapes(aug):
        problem = contract_problem(aug, shape, NUM_CLASSES, batch=BATCH)
        assert problem is None, problem
    return f"images_only={getattr(aug, 'images_only', True)}"


def _optimizer_output(case) -> str:
    net = tiny_net()
    opt = optimizer_over(case, net)
    assert isinstance(opt, torch.optim.Optimizer), f"returned {type(opt).__name__}, not a torch.optim.Optimizer"
    held = {id(p) for group in opt.param_groups for p in group["params"]}
    assert held == {id(p) for p in net.parameters()}, "does not hold exactly the parameters it was given"
    return ""


def _schedule_output(case) -> str:
    from zoo.core.contracts import schedule

    opt, sched = schedule_over(case)
    problem = schedule(sched)
    assert problem is None, problem
    rates = run_schedule(opt, sched, SCHEDULE_STEPS)
    assert all(math.isfinite(r) and r >= 0 for r in rates), f"learning rates {rates} are not all finite and >= 0"
    return f"lr {rates[0]:.3g} -> {rates[-1]:.3g} over {SCHEDULE_STEPS} steps"


def _model_output(case) -> str:
    from zoo.core.contracts import model_output_problem

    net = model(case)
    problem = model_output_problem(net, IMAGE_SHAPE, NUM_CLASSES)
    assert problem is None, problem
    net.train()
    out = net(images())
    assert tuple(out.shape) == (BATCH, NUM_CLASSES), f"train mode: output shape {tuple(out.shape)}"
    finite(out, "its train-mode output")
    return f"{sum(p.numel() for p in net.parameters())} parameters"


def _monitor_output(case) -> str:
    from zoo.core.contracts import monitor

    problem = monitor(build(case))
    assert problem is None, problem
    return ""


def _part(dm, name: str):
    """A data module's split ``name``; of a streamed data set (zoo.data.streaming), its first batch."""
    from zoo.data.datamodule import Split

    return getattr(dm, name) if hasattr(dm, name) else Split(*next(iter(dm.batches(name))))


def _dataset_output(case) -> str:
    from zoo.core.contracts import dataset as contract
    from zoo.core.contracts import split_size

    dm = dataset(case)
    problem = contract(dm)
    assert problem is None, problem
    shape, classes = tuple(dm.input_shape), dm.num_classes
    assert isinstance(classes, int) and classes >= 2, f"num_classes is {classes!r}; needs an int >= 2"
    for part in ("train", "val", "test"):
        split = _part(dm, part)
        assert tuple(split.x.shape[1:]) == shape, f"{part} inputs have shape {tuple(split.x.shape[1:])}, not {shape}"
        assert len(split.x) == len(split.y), f"{part} has {len(split.x)} inputs but {len(split.y)} labels"
        assert split.y.dtype == torch.long, f"{part} labels are {split.y.dtype}, not torch.long class indices"
        assert len(split.y) == 0 or 0 <= int(split.y.min()) <= int(split.y.max()) < classes, (
            f"{part} labels fall outside 0..{classes - 1}"
        )
    x, y = next(iter(dm.train_dataloader()))
    assert tuple(x.shape[1:]) == shape and len(x) == len(y), f"a training batch has shapes {tuple(x.shape)}, {tuple(y.shape)}"
    sample = dm.sample()
    assert tuple(sample.shape[1:]) == shape, f"sample() gives shape {tuple(sample.shape)}"
    sizes = {part: split_size(dm, part) for part in ("train", "val", "test")}
    return f"input {shape}, {classes} classes, {sizes}"


OUTPUT = {
    "activations": _activation_output,
    "normalizers": _normalizer_output,
    "initializers": _initializer_output,
    "augmentations": _augmentation_output,
    "optimizers": _optimizer_output,
    "schedules": _schedule_output,
    "models": _model_output,
    "monitors": _monitor_output,
    "datasets": _dataset_output,
}


# --- per registry: determinism -------------------------------------------------------------------------


def _module_determinism(make, x: torch.Tensor) -> None:
    torch.manual_seed(0)
    a = make()
    torch.manual_seed(0)
    b = make()
    same_state(a.state_dict(), b.state_dict(), "two builds under one seed")
    a.eval()
    with torch.no_grad():
        assert torch.equal(a(x), a(x)), "two eval-mode forward passes on one input differ"


def _activation_determinism(case) -> str:
    _module_determinism(lambda: activation_net(case), normal(BATCH, FEATURES))
    return ""


def _normalizer_determinism(case) -> str:
    for layout in built_normalizers(case):
        _module_determinism(lambda layout=layout: normalizer(case, layout), norm_input(layout))
    return ""


def _initializer_determinism(case) -> str:
    init = build(case)
    states = []
    for _ in range(2):
        net = conv_net()
        torch.manual_seed(0)
        init.apply(net, activation="relu", sample=images(32))
        states.append(net.state_dict())
    same_state(*states, "apply() twice under one seed")
    return ""


def _augmentation_determinism(case) -> str:
    aug = build(case)
    outs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        x, y = augmentation_input(aug)
        state = torch.get_rng_state()
        outs.append(aug(x, y, torch.Generator().manual_seed(5)))
        assert torch.equal(state, torch.get_rng_state()), (
            "drew from torch's global random generator; draw only from the generator it is given"
        )
    (x1, y1), (x2, y2) = outs
    assert torch.equal(x1, x2) and torch.equal(y1, y2), "the same generator state gave different outputs"
    return ""


def _optimizer_determinism(case) -> str:
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        net = tiny_net()
        train(net, normal(BATCH, FEATURES), labels(BATCH, 3), opt=optimizer_over(case, net))
        runs.append(net.state_dict())
    same_state(*runs, "two runs under one seed")
    return ""


def _schedule_determinism(case) -> str:
    runs = [run_schedule(*schedule_over(case), SCHEDULE_STEPS) for _ in range(2)]
    assert runs[0] == runs[1], "two runs gave different learning rates"
    return ""


def _model_determinism(case) -> str:
    a, b = model(case), model(case)
    same_state(a.state_dict(), b.state_dict(), "two builds (and initializations) under one seed")
    a.eval()
    x = images()
    with torch.no_grad():
        assert torch.equal(a(x), a(x)), "two eval-mode forward passes on one input differ"
    return ""


def _dataset_determinism(case) -> str:
    a, b = dataset(case), dataset(case)
    for part in ("train", "val", "test"):
        sa, sb = _part(a, part), _part(b, part)
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y), f"two builds give different {part} splits"
    return ""


DETERMINISTIC = {
    "activations": _activation_determinism,
    "normalizers": _normalizer_determinism,
    "initializers": _initializer_determinism,
    "augmentations": _augmentation_determinism,
    "optimizers": _optimizer_determinism,
    "schedules": _schedule_determinism,
    "models": _model_determinism,
    "datasets": _dataset_determinism,
}


# --- per registry: devices and dtypes ------------------------------------------------------------------


def _module_on(net: nn.Module, x: torch.Tensor, device, dtype, what: str) -> None:
    net = net.to(device=device, dtype=dtype).eval()
    with torch.no_grad():
        out = net(x.to(device=device, dtype=dtype))
    assert out.dtype == dtype, f"{what}: gave {out.dtype} output for {dtype} input on {device}"
    assert out.device.type == torch.device(device).type, f"{what}: output landed on {out.device}, not {device}"
    finite(out, f"{what} on {device} in {dtype}")


def _activation_on(case, device, dtype) -> str:
    _module_on(activation_net(case), normal(BATCH, FEATURES), device, dtype, "the activation")
    return "float64"


def _normalizer_on(case, device, dtype) -> str:
    for layout, norm in built_normalizers(case).items():
        _module_on(norm, norm_input(layout), device, dtype, layout_name(layout))
    return "float64"


def _initializer_on(case, device, dtype) -> str:
    net = conv_net().to(device=device, dtype=dtype)
    build(case).apply(net, activation="relu", sample=images(32).to(device=device, dtype=dtype))
    for name, p in net.named_parameters():
        assert p.dtype == dtype and p.device.type == torch.device(device).type, f"{name} became {p.dtype} on {p.device}"
        finite(p, f"{name} on {device} in {dtype}")
    return "float64"


def _augmentation_on(case, device, dtype) -> str:
    aug = build(case)
    for shape in augmentation_shapes(aug):
        x, y = augmentation_input(aug, shape, dtype, device)
        out_x, out_y = aug(x, y, torch.Generator(device=device).manual_seed(0))
        for label, t in (("x", out_x), ("y", out_y)):
            assert t.dtype == dtype and t.device.type == torch.device(device).type, (
                f"{label} came back as {t.dtype} on {t.device} for {dtype} input on {device}"
            )
            finite(t, f"{label} on {device}")
    return "float64"


def _optimizer_on(case, device, dtype) -> str:
    net = tiny_net().to(device=device, dtype=dtype)
    x, y = normal(BATCH, FEATURES).to(device=device, dtype=dtype), labels(BATCH, 3).to(device)
    train(net, x, y, opt=optimizer_over(case, net))
    for name, p in net.named_parameters():
        assert p.dtype == dtype, f"{name} became {p.dtype}"
        finite(p, f"{name} after steps on {device} in {dtype}")
    return "float64"


def _model_on(case, device, dtype) -> str:
    net = model(case)
    x = images()
    net.eval()
    with torch.no_grad():
        reference = net(x)
    _module_on(net, x, device, dtype, "the model")
    with torch.no_grad():
        out = net(x.to(device=device, dtype=dtype)).to("cpu", torch.float32)
    assert torch.allclose(out, reference, atol=1e-3, rtol=1e-3), (
        f"on {device} in {dtype} the output differs from float32 on the CPU by {(out - reference).abs().max():.3g}"
    )
    return "float64"


DEVICE_DTYPE = {
    "activations": _activation_on,
    "normalizers": _normalizer_on,
    "initializers": _initializer_on,
    "augmentations": _augmentation_on,
    "optimizers": _optimizer_on,
    "models": _model_on,
}


# --- per registry: checkpoints -------------------------------------------------------------------------


def _module_round_trip(make, x: torch.Tensor, warm=None) -> str:
    torch.manual_seed(0)
    a = make()
    if warm is not None:
        warm(a)
    state = round_trip(a.state_dict())
    torch.manual_seed(1)
    b = make()
    b.load_state_dict(state)
    a.eval()
    b.eval()
    with torch.no_grad():
        assert torch.equal(a(x), b(x)), "a module loaded from the checkpoint computes something else"
    return f"{len(state)} tensors"


def _normalizer_round_trip(case) -> str:
    # every layout's state goes through one checkpoint file: writing one is most of this check's time
    layouts = list(built_normalizers(case))
    torch.manual_seed(0)
    originals = {layout: normalizer(case, layout) for layout in layouts}
    for layout, norm in originals.items():  # move any running statistics away from their initial values
        norm.train()
        with torch.no_grad():
            norm(norm_input(layout, seed=3))
    saved = round_trip({str(layout): norm.state_dict() for layout, norm in originals.items()})
    torch.manual_seed(1)
    for layout, norm in originals.items():
        loaded = normalizer(case, layout)
        loaded.load_state_dict(saved[str(layout)])
        norm.eval()
        loaded.eval()
        with torch.no_grad():
            assert torch.equal(norm(norm_input(layout)), loaded(norm_input(layout))), (
                f"{layout_name(layout)}: a module loaded from the checkpoint computes something else"
            )
    return ""


def _optimizer_round_trip(case) -> str:
    x, y = normal(BATCH, FEATURES), labels(BATCH, 3)
    torch.manual_seed(0)
    net = tiny_net()
    opt = optimizer_over(case, net)
    train(net, x, y, opt=opt)
    saved = round_trip({"net": net.state_dict(), "opt": opt.state_dict()})
    resumed = tiny_net()
    resumed.load_state_dict(saved["net"])
    resumed_opt = optimizer_over(case, resumed)
    resumed_opt.load_state_dict(saved["opt"])
    train(net, x, y, opt=opt)
    train(resumed, x, y, opt=resumed_opt)
    same_state(net.state_dict(), resumed.state_dict(), "training on from the checkpoint")
    return ""


def _schedule_round_trip(case) -> str:
    opt, sched = schedule_over(case)
    run_schedule(opt, sched, 7)
    saved = round_trip({"opt": opt.state_dict(), "schedule": sched["scheduler"].state_dict()})
    opt2, sched2 = schedule_over(case)
    opt2.load_state_dict(saved["opt"])
    sched2["scheduler"].load_state_dict(saved["schedule"])
    rest = SCHEDULE_STEPS - 7
    assert run_schedule(opt, sched, rest) == run_schedule(opt2, sched2, rest), (
        "the schedule loaded from the checkpoint gives other learning rates"
    )
    return ""


def _monitor_round_trip(case) -> str:
    monitor = build(case)
    state = round_trip(monitor.state_dict())
    build(case).load_state_dict(state)
    return ""


CHECKPOINT = {
    "activations": lambda case: _module_round_trip(lambda: activation_net(case), normal(BATCH, FEATURES)),
    "normalizers": _normalizer_round_trip,
    "optimizers": _optimizer_round_trip,
    "schedules": _schedule_round_trip,
    "models": lambda case: _module_round_trip(lambda: model(case), images()),
    "monitors": _monitor_round_trip,
}


# --- per registry: a training step ---------------------------------------------------------------------


def _normalizer_train(case) -> str:
    for layout in built_normalizers(case):
        net = nn.Sequential(normalizer(case, layout), nn.Flatten(), nn.LazyLinear(3))
        x = norm_input(layout)
        with torch.no_grad():
            net(x)  # materializes the lazy head
        trained(net, x, labels(BATCH, 3))
    return ""


def _initializer_train(case) -> str:
    net = conv_net()
    torch.manual_seed(0)
    build(case).apply(net, activation="relu", sample=images(32))
    # any, not every: an initializer may freeze layers (whitening) or start symmetric on purpose (zeros)
    return trained(net, images(), labels(), every=False)


def _optimizer_train(case) -> str:
    torch.manual_seed(0)
    net = tiny_net()
    return trained(net, normal(BATCH, FEATURES), labels(BATCH, 3), opt=optimizer_over(case, net))


def _monitor_train(case) -> str:
    """A few steps of a real Lightning fit with the monitor among its callbacks."""
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = tiny_net()

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    data = torch.utils.data.TensorDataset(normal(32, FEATURES), labels(32, 3))
    module = Tiny()
    before = params_of(module)
    trainer = L.Trainer(
        max_steps=4, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[build(case)],
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=8))
    assert changed(before, module), "four steps with the monitor changed no parameter"
    return ""


TRAIN_STEP = {
    "activations": lambda case: trained(activation_net(case), normal(BATCH, FEATURES), labels(BATCH, 3)),
    "normalizers": _normalizer_train,
    "initializers": _initializer_train,
    "optimizers": _optimizer_train,
    "schedules": lambda case: _schedule_output(case),
    "models": lambda case: trained(model(case), images(), labels()),
    "monitors": _monitor_train,
}
