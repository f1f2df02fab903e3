"""Lightning callbacks that watch training the way the babysitting advice says to.

- :class:`ActivationStats`: per-layer activation mean/std, saturation (tanh, sigmoid) and dead units (ReLU family).
- :class:`UpdateRatio`: per-layer gradient norm and update/weight norm ratio (healthy: about 1e-3), with a warning
  when a layer stays outside a band.
- :class:`DivergenceGuard`: stops a run whose loss turns NaN/inf or climbs past a multiple of the initial loss.

Every monitor does its work on check steps only (every N optimizer steps). Between checks the cost is a
Python comparison per hook call; on a check step the numbers stay on the device until one transfer
brings them all to the host, so a GPU is synchronized once per check rather than once per number.
Metrics are logged through ``pl_module.log`` (on step, not on epoch), so they land wherever the
run's logger writes; each monitor also keeps its latest numbers in ``last`` for code and tests.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from lightning.pytorch import Callback
from torch import nn


class MonitorWarning(UserWarning):
    """Base class of the monitors' warnings, so they can be filtered or turned into errors together."""


class UpdateRatioWarning(MonitorWarning):
    """A layer's update/weight ratio stayed outside its band."""


class DivergenceWarning(MonitorWarning):
    """Training was stopped because the loss diverged."""


def _warn(message: str, category: type[Warning]) -> None:
    # On rank 0 only: every DDP process sees the same numbers and would say the same thing.
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:
        warnings.warn(message, category, stacklevel=3)


def _check_every(n: int, what: str) -> int:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"{what}: every_n_steps must be a positive integer, got {n!r}")
    return n


# --- activation statistics ---------------------------------------------------------------------------

_TANH_LIKE = (nn.Tanh, nn.Hardtanh, nn.Softsign)
_SIGMOID_LIKE = (nn.Sigmoid, nn.Hardsigmoid)
_RELU_LIKE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish)


def activation_types() -> tuple[type, ...]:
    """The module classes the activations registry builds (each entry with its default parameters).

    nn.Identity is left out: models also use it as a stand-in for "no norm" or "no dropout".
    An entry that cannot be built without parameters contributes nothing.
    """
    from zoo.core.catalog import activations

    found: list[type] = []
    for entry in activations:
        try:
            module = entry.obj()
        except Exception:  # noqa: BLE001 - a plugin factory that needs arguments
            continue
        kind = type(module)
        if isinstance(module, nn.Module) and kind is not nn.Identity and kind not in found:
            found.append(kind)
    return tuple(found)


class ActivationStats(Callback):
    """Logs, every ``every_n_steps`` training steps, statistics of each activation module's output.

    Which modules: those whose class is one the activations registry builds (so plugin activations
    count, and a model's activations are found wherever they sit), or the classes in ``types`` when
    given. Per module, under ``{prefix}/{module name}/``:

    - ``mean``, ``std`` of the output over the batch;
    - ``saturated`` (tanh-like and sigmoid-like modules): fraction of outputs within ``1 - threshold``
      of an asymptote, i.e. |a| > threshold for tanh, a < 1 - threshold or a > threshold for sigmoid,
      where the local gradient is nearly zero;
    - ``dead`` (ReLU family): fraction of units, along dim 1 (features, or conv channels), that output
      exactly zero for every sample of the batch (and every position): they pass no gradient at all.

    A module called more than once in one forward pass is measured on its first call. Only training
    batches are measured. The latest numbers are also kept in ``last`` ({module name: {stat: value}}).

    Args:
        every_n_steps: measure on optimizer steps that are multiples of this (step 0 included).
        threshold: saturation threshold (default 0.99).
        prefix: first part of the logged metric names.
        types: module classes to watch instead of the registry's activations.
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        threshold: float = 0.99,
        prefix: str = "activations",
        types: tuple[type, ...] | None = None,
    ) -> None:
        self.every_n_steps = _check_every(every_n_steps, "ActivationStats")
        if not 0.5 < threshold < 1:
            raise ValueError(f"ActivationStats: threshold must be between 0.5 and 1, got {threshold}")
        self.threshold = threshold
        self.prefix = prefix
        self.types = types
        self.last: dict[str, dict[str, float]] = {}
        self._handles: list[Any] = []
        self._armed = False
        self._armed_step = -1
        self._pending: dict[str, tuple[list[str], torch.Tensor]] = {}

    def _stats(self, module: nn.Module, output: torch.Tensor) -> tuple[list[str], torch.Tensor]:
        a = output.detach().float()
        names, values = ["mean", "std"], [a.mean(), a.std() if a.numel() > 1 else a.new_zeros(())]
        if isinstance(module, _TANH_LIKE):
            names.append("saturated")
            values.append((a.abs() > self.threshold).float().mean())
        elif isinstance(module, _SIGMOID_LIKE):
            names.append("saturated")
            values.append(((a < 1 - self.threshold) | (a > self.threshold)).float().mean())
        elif isinstance(module, _RELU_LIKE) and a.ndim >= 2:
            names.append("dead")
            per_unit = a.transpose(0, 1).reshape(a.shape[1], -1)
            values.append((per_unit == 0).all(dim=1).float().mean())
        return names, torch.stack(values)

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if not self._armed or name in self._pending or not isinstance(output, torch.Tensor):
                return
            with torch.no_grad():
                self._pending[name] = self._stats(module, output)

        return hook

    def on_fit_start(self, trainer, pl_module) -> None:
        types = self.types if self.types is not None else activation_types()
        self._remove()
        for name, module in pl_module.named_modules():
            if types and isinstance(module, types):
                self._handles.append(module.register_forward_hook(self._hook(name)))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        self._armed = step % self.every_n_steps == 0 and step != self._armed_step
        if self._armed:
            self._armed_step = step
            self._pending = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._armed:
            return
        self._armed = False
        if not self._pending:
            return
        names = list(self._pending)
        flat = torch.cat([self._pending[n][1] for n in names]).tolist()  # the check's one host transfer
        self.last, i = {}, 0
        for name in names:
            stats = {}
            for stat in self._pending[name][0]:
                stats[stat] = flat[i]
                i += 1
            self.last[name] = stats
        self._pending = {}
        for name, stats in self.last.items():
            for stat, value in stats.items():
                pl_module.log(f"{self.prefix}/{name}/{stat}", value, on_step=True, on_epoch=False, batch_size=1)

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._armed = False

    def on_fit_end(self, trainer, pl_module) -> None:
        self._remove()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._remove()


# --- update / weight ratio ---------------------------------------------------------------------------


class UpdateRatio(Callback):
    """Logs each layer's gradient norm and the ratio of its update's norm to its weight's norm.

    Layers are the weight matrices and kernels (parameters with 2 or more dimensions); biases and norm
    scales are left out, since a ratio against a bias that starts at zero says nothing. On a check
    step the weights are copied just before the optimizer step and compared just after it, so the
    ratio is ||w_after - w_before|| / ||w_before|| of one real step, whatever the optimizer, momentum
    and weight decay did; the copy lives only across that one step. Parameters without a gradient at
    that step (frozen, unused) are skipped.

    Logged under ``{prefix}/{name}`` and ``grad_norm/{name}``. When a layer's ratio is outside
    ``band`` for ``patience`` checks in a row, an :class:`UpdateRatioWarning` names the layer, the
    ratio and whether the learning rate looks too high or too low; it warns again only after the
    layer has been back inside the band. ``last`` holds the latest {name: ratio}, ``last_grad_norm``
    the latest {name: gradient norm}, and ``warned`` every (step, name, ratio) warned about.

    Args:
        every_n_steps: check on optimizer steps that are multiples of this (step 0 included).
        band: (low, high) healthy ratios; the usual advice is about 1e-3.
        patience: consecutive out-of-band checks before warning.
        prefix: first part of the logged ratio names.
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        band: tuple[float, float] = (1e-4, 1e-2),
        patience: int = 3,
        prefix: str = "update_ratio",
    ) -> None:
        self.every_n_steps = _check_every(every_n_steps, "UpdateRatio")
        low, high = (float(b) for b in band)
        if not 0 <= low < high:
            raise ValueError(f"UpdateRatio: band must be (low, high) with 0 <= low < high, got {band!r}")
        if patience < 1:
            raise ValueError(f"UpdateRatio: patience must be at least 1, got {patience}")
        self.band = (low, high)
        self.patience = patience
        self.prefix = prefix
        self.last: dict[str, float] = {}
        self.last_grad_norm: dict[str, float] = {}
        self.warned: list[tuple[int, str, float]] = []
        self._streak: dict[str, int] = {}
        self._armed_step = -1
        self._before: dict[str, tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._before:
            # armed on an earlier step of the same training step (steps_per_execution): the weights now
            # are that step's result
            self._measure(trainer, pl_module, step=self._armed_step)
        step = trainer.global_step
        if step % self.every_n_steps or step == self._armed_step:
            return
        self._armed_step = step
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        with torch.no_grad():
            for name, p in pl_module.named_parameters():
                if p.ndim >= 2 and p.grad is not None and id(p) in in_optimizer:
                    self._before[name] = (p, p.detach().clone(), p.grad.detach().norm())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._before:
            self._measure(trainer, pl_module, step=self._armed_step)

    def _measure(self, trainer, pl_module, step: int) -> None:
        """The update of the armed step, ``step``: the weights now against the copy made before it."""
        names = list(self._before)
        with torch.no_grad():
            numbers = []
            for name in names:
                p, old, grad_norm = self._before[name]
                # An all-zero weight has no scale: any update to it counts as huge, which it is.
                ratio = (p.detach() - old).norm() / old.norm().clamp_min(1e-12)
                numbers += [ratio, grad_norm]
            flat = torch.stack(numbers).float().tolist()  # the check's one host transfer
        self._before = {}
        self.last = {n: flat[2 * i] for i, n in enumerate(names)}
        self.last_grad_norm = {n: flat[2 * i + 1] for i, n in enumerate(names)}
        low, high = self.band
        for name in names:
            ratio = self.last[name]
            pl_module.log(f"{self.prefix}/{name}", ratio, on_step=True, on_epoch=False, batch_size=1)
            pl_module.log(
                f"grad_norm/{name}", self.last_grad_norm[name], on_step=True, on_epoch=False, batch_size=1
            )
            outside = not (low <= ratio <= high) or not math.isfinite(ratio)
            self._streak[name] = self._streak.get(name, 0) + 1 if outside else 0
            if self._streak[name] == self.patience:
                direction = "high" if not ratio <= high else "low"
                self.warned.append((step, name, ratio))
                _warn(
                    f"UpdateRatio: layer {name}: update/weight ratio {ratio:.3g} has been outside "
                    f"[{low:g}, {high:g}] for {self.patience} check{'s' if self.patience > 1 else ''} in a row "
                    f"(step {step}); "
                    f"the learning rate looks too {direction} for it (healthy: about 1e-3)",
                    UpdateRatioWarning,
                )

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._before = {}


# --- divergence guard --------------------------------------------------------------------------------


class DivergenceGuard(Callback):
    """Stops training cleanly when the training loss becomes NaN/inf or exceeds ``factor`` x the initial loss.

    The initial loss is the loss of the first training step. Losses are collected on the device as
    they are computed (no synchronization) and examined every ``check_every_n_steps`` steps, and
    always on the last batch of an epoch and the last step of the run, so a divergence is seen before
    the epoch's checkpoint is written. The examination runs just before the optimizer step: when the
    current step's own loss is the bad one, its gradients are dropped (with ``skip_bad_step``) so
    that update never reaches the weights. Then ``trainer.should_stop`` is set; Lightning finishes
    the epoch's bookkeeping (validation; ModelCheckpoint saves only if the monitored metric
    improved) and returns from ``fit`` normally. A :class:`DivergenceWarning` says why and at which
    step; ``reason``, ``stopped_step`` (0-based global step of the bad loss) and ``initial_loss`` keep it.

    With gradient accumulation the losses seen are Lightning's per-batch losses divided by the number
    of accumulated batches; the comparison with the initial loss is unaffected. The initial loss is
    saved in checkpoints (callback state), so a resumed run keeps measuring against the original one.

    The default checks every step: one scalar transfer per step, which keeps the stop immediate; raise
    ``check_every_n_steps`` on a GPU-bound run where that sync shows in the step time (a late stop
    lets up to that many bad updates through).

    Args:
        factor: stop when the loss exceeds this multiple of the initial loss (the advice: 3).
        check_every_n_steps: how often the collected losses are examined.
        detect_anomaly: run with ``torch.autograd`` anomaly detection, which makes the backward pass
            raise at the first operation producing NaN and names it (with the forward traceback).
            It slows training considerably; use it to debug a run this guard stopped.
        skip_bad_step: drop the gradients of a step whose own loss is the bad one.
    """

    def __init__(
        self,
        factor: float = 3.0,
        check_every_n_steps: int = 1,
        detect_anomaly: bool = False,
        skip_bad_step: bool = True,
    ) -> None:
        if not factor > 1:
            raise ValueError(f"DivergenceGuard: factor must be above 1, got {factor}")
        self.factor = float(factor)
        self.check_every_n_steps = _check_every(check_every_n_steps, "DivergenceGuard")
        self.detect_anomaly = detect_anomaly
        self.skip_bad_step = skip_bad_step
        self.initial_loss: float | None = None
        self.reason: str | None = None
        self.stopped_step: int | None = None
        self._pending: list[tuple[int, torch.Tensor]] = []
        self._anomaly_before: bool | None = None

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    def state_dict(self) -> dict[str, Any]:
        return {"initial_loss": self.initial_loss}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.initial_loss = state_dict.get("initial_loss")

    # Anomaly detection for the span of training only. Not on_fit_start: Lightning enters its own
    # set_detect_anomaly(Trainer(detect_anomaly=...)) context after that hook, which would undo it.
    def on_train_start(self, trainer, pl_module) -> None:
        if self.detect_anomaly:
            self._anomaly_before = torch.is_anomaly_enabled()
            torch.autograd.set_detect_anomaly(True)

    def _restore_anomaly(self) -> None:
        if self._anomaly_before is not None:
            torch.autograd.set_detect_anomaly(self._anomaly_before)
            self._anomaly_before = None

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore_anomaly()

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self.detect_anomaly and "nan" in str(exception).lower():
            _warn(
                f"DivergenceGuard: autograd anomaly detection stopped the run at step {trainer.global_step}: "
                f"{str(exception).splitlines()[0]} (the forward call that created it is in the traceback above)",
                DivergenceWarning,
            )
        self._restore_anomaly()

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        if not self.stopped:
            self._pending.append((trainer.global_step, loss.detach().float().reshape(())))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.stopped or not self._pending:
            return
        step = trainer.global_step
        last_batch = bool(getattr(trainer.fit_loop.epoch_loop.batch_progress, "is_last_batch", False))
        last_step = trainer.max_steps is not None and 0 < trainer.max_steps <= step + 1
        if step % self.check_every_n_steps and not (last_batch or last_step):
            return
        bad = self._examine()
        if bad is None:
            return
        bad_step, value = bad
        if self.skip_bad_step and bad_step == step:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None  # optimizers skip parameters without a gradient: no update at all
        self._stop(trainer, bad_step, value, skipped=self.skip_bad_step and bad_step == step)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Losses a skipped check left behind (an epoch that ended off the check grid).
        if not self.stopped and self._pending:
            bad = self._examine()
            if bad is not None:
                self._stop(trainer, *bad, skipped=False)

    def _examine(self) -> tuple[int, float] | None:
        steps = [s for s, _ in self._pending]
        values = torch.stack([v for _, v in self._pending]).tolist()  # the check's one host transfer
        self._pending = []
        for step, value in zip(steps, values):
            if self.initial_loss is None:
                self.initial_loss = value
            # A non-positive initial loss (a custom objective) gives no scale: only NaN/inf count then.
            scale = self.initial_loss if math.isfinite(self.initial_loss) and self.initial_loss > 0 else math.inf
            if not math.isfinite(value) or value > self.factor * scale:
                return step, value
        return None

    def _stop(self, trainer, step: int, value: float, *, skipped: bool) -> None:
        if not math.isfinite(value):
            why = f"the training loss is {value}"
        else:
            why = (
                f"the training loss {value:.4g} exceeds {self.factor:g} x the initial loss "
                f"{self.initial_loss:.4g} (limit {self.factor * self.initial_loss:.4g})"
            )
        self.reason = why
        self.stopped_step = step
        trainer.should_stop = True
        note = "; that step's update was not applied" if skipped else ""
        advice = "lower the learning rate"
        if not math.isfinite(value):
            advice += ", or rerun with detect_anomaly to find the operation that produces it"
        _warn(
            f"DivergenceGuard: stopping training at step {step} (epoch {trainer.current_epoch}): "
            f"{why}{note}; {advice}",
            DivergenceWarning,
        )
