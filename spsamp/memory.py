"""Peak memory of a batch, and telling an out-of-memory failure from any other.

On CUDA the peak is ``torch.cuda.max_memory_allocated`` of the target's device, reset before each
batch, so it is that batch's own peak (tensors allocated through PyTorch: weights, KV cache,
activations). A CPU process has no resettable counter: the peak is the process's resident
high-water mark (``getrusage``'s ``ru_maxrss``), which only grows over a job — it bounds every
batch decoded so far, including the model weights and anything earlier batches needed.
"""

from __future__ import annotations

import resource
import sys

import torch


def reset_peak(device: torch.device) -> None:
    """Start a new peak measurement on ``device`` (a no-op off CUDA: see the module docstring)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int:
    """Bytes at the peak since :func:`reset_peak` (CUDA) or the process's resident high-water mark."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # macOS reports bytes, Linux KiB


def is_out_of_memory(exc: BaseException) -> bool:
    """A failed allocation: CUDA's (or MPS's) out-of-memory error, or the CPU allocator's."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_cached(device: torch.device) -> None:
    """Give cached blocks back after an out-of-memory failure, so a smaller retry can allocate."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
