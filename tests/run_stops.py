"""Helpers for tests that stop runs and resume them: identical arithmetic in every process, and a callback
in every Trainer zoo makes (where a test stops the run)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

import zoo.training.fit as training


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """One torch thread here and in the subprocesses started meanwhile: in-process runs and subprocesses
    must sum in the same order to give identical figures, whatever thread count earlier tests left behind."""
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp


def with_callback(monkeypatch, callback) -> None:
    """Every Trainer zoo makes while ``monkeypatch`` holds gets ``callback`` too."""
    make = training.make_trainer

    def patched(*args, **kwargs):
        kwargs["extra_callbacks"] = [*(kwargs.get("extra_callbacks") or []), callback]
        return make(*args, **kwargs)

    monkeypatch.setattr(training, "make_trainer", patched)
