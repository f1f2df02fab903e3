"""torch's process-wide settings, read before a plugin is imported and put back after it.

A plugin that calls ``torch.set_default_dtype(torch.float64)`` or ``torch.set_num_threads(1)`` when it is
imported would change every run of the process, runs that never use it included (float64 checkpoints
from a recipe that says nothing of it). zoo.core.discovery wraps each plugin import in ``guarded``: what
the import changed is put back, and the caller is told which settings, to warn naming the plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _settings() -> dict[str, tuple[Callable[[], Any], Callable[[Any], None]]]:
    """Each setting: how to read it, and how to put a value back."""
    import torch

    cudnn = torch.backends.cudnn
    return {
        "default dtype": (torch.get_default_dtype, torch.set_default_dtype),
        "default device": (torch.get_default_device, torch.set_default_device),
        "threads": (torch.get_num_threads, torch.set_num_threads),
        # torch takes this once per process: a plugin that set it cannot be undone (putting it back raises)
        "interop threads": (torch.get_num_interop_threads, torch.set_num_interop_threads),
        "grad mode": (torch.is_grad_enabled, torch.set_grad_enabled),
        "deterministic algorithms": (
            lambda: (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()),
            lambda value: torch.use_deterministic_algorithms(value[0], warn_only=value[1]),
        ),
        "float32 matmul precision": (torch.get_float32_matmul_precision, torch.set_float32_matmul_precision),
        "anomaly detection": (torch.is_anomaly_enabled, torch.autograd.set_detect_anomaly),
        "cudnn.benchmark": (lambda: cudnn.benchmark, lambda value: setattr(cudnn, "benchmark", value)),
        "cudnn.deterministic": (lambda: cudnn.deterministic, lambda value: setattr(cudnn, "deterministic", value)),
    }


def snapshot(randomness: bool = True) -> dict[str, Any]:
    """The current value of every setting, and (with ``randomness``) the CPU random generator's state:
    building a component draws from it by design, so builds leave it out."""
    import torch

    state = {name: read() for name, (read, _) in _settings().items()}
    if randomness:
        state["random state"] = torch.get_rng_state()
    return state


def restore(before: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Put back every setting that differs from ``before``: (the settings changed, those torch would not
    let go back). The random generator's state is put back without a word: a plugin that builds a module
    when imported draws from it, which is harmless, and runs seed it anyway."""
    import torch

    changed, stuck = [], []
    for name, (read, write) in _settings().items():
        now = read()
        if now == before[name]:
            continue
        changed.append(f"{name} {_shown(before[name])} -> {_shown(now)}")
        try:
            write(before[name])
        except RuntimeError:
            stuck.append(name)
    if "random state" in before and not torch.equal(torch.get_rng_state(), before["random state"]):
        torch.set_rng_state(before["random state"])
    return changed, stuck


def _shown(value: Any) -> str:
    if isinstance(value, tuple):  # deterministic algorithms: (enabled, warn only)
        return "on (warn only)" if value == (True, True) else ("on" if value[0] else "off")
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value).removeprefix("torch.")
