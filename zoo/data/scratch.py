"""What AugmentPipeline lends the compiled CPU kernels of zoo.data.augment_cpu while it runs.

Scratch: batch-sized buffers kept from one batch to the next, lent (through LENDING) for results that only
the pipeline's next step reads; anywhere else, batch_buffer gives a fresh tensor. KERNEL_THREADS: the
threads the kernels may use while the pipeline keeps torch's own ops on one.
"""

from __future__ import annotations

from contextvars import ContextVar

import torch


class Scratch:
    """CPU buffers a pipeline lends the kernels of its steps, kept from batch to batch, for results that only
    the pipeline's next step reads.

    A batch-sized buffer allocated afresh comes from the system page by page on every batch (glibc gives freed
    blocks of a few MB back), and on the 2-core CPU those page faults cost more than the kernel that fills the
    buffer: 750 faults and 0.3-1.5 ms for a 256x3x32x32 float32 batch, against 0.2-0.6 ms of colour jitter.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[int, int], torch.Tensor] = {}
        self._stage = self._taken = 0

    def lend_for(self, stage: int) -> Scratch:
        self._stage, self._taken = stage, 0
        return self

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        key = (self._stage, self._taken)  # one buffer per result of each stage
        self._taken += 1
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape != tuple(shape) or buffer.dtype != dtype:
            buffer = self._buffers[key] = torch.empty(shape, dtype=dtype)
        return buffer

    def holds(self, x: torch.Tensor) -> bool:
        memory = x.untyped_storage().data_ptr()
        return any(b.untyped_storage().data_ptr() == memory for b in self._buffers.values())


LENDING: ContextVar[Scratch | None] = ContextVar("zoo_augment_scratch", default=None)
KERNEL_THREADS: ContextVar[int | None] = ContextVar("zoo_augment_kernel_threads", default=None)


def batch_buffer(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized CPU tensor for a kernel's result: the running pipeline's scratch when only its next
    step reads the result, else a fresh one."""
    scratch = LENDING.get()
    return torch.empty(shape, dtype=dtype) if scratch is None else scratch.take(shape, dtype)
