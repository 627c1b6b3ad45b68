"""CPU matmul kernels for ``nn.Linear`` (``hardware.cpu_linear``).

- ``aten``: PyTorch's default ``F.linear`` (MKL ``sgemm`` on x86). MKL re-packs the weight on
  every call and takes slow generic paths on non-Intel CPUs: on the 2-core AMD EPYC this project
  is measured on, a 5-token SmolLM2 pass cost 1.6x a 1-token pass and its LM head ran at a fifth
  of the speed oneDNN reaches.
- ``onednn``: each weight is reordered once, at load, into oneDNN's blocked layout and every call
  goes to ``mkldnn._linear_pointwise`` — the kernels ``torch.compile`` (inductor, ``freezing``)
  emits for CPU linears, without the compile. A pass over k+1 tokens then costs about 1.15 passes
  over one (the memory-bound regime speculative decoding assumes), and a single-token pass is
  ~1.8x faster too. Logits differ from ``aten`` by float rounding (~1e-4), the same for every
  method, so methods stay comparable and greedy-exactness holds method against method.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from spsamp.config import CPU_LINEAR, ConfigError

log = logging.getLogger(__name__)

_PACKABLE = (torch.float32, torch.bfloat16)


class OneDNNLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` held only in oneDNN's reordered layout.

    The original weight is dropped (it would double the memory) unless it is shared with another
    module — a tied input embedding still needs it for lookups.
    """

    def __init__(self, linear: nn.Linear, keep_weight: bool):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # a plain attribute, not a buffer: .to()/state_dict cannot handle the opaque mkldnn layout
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)
        if keep_weight:
            self.weight = linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if not flat.is_contiguous():
            flat = flat.contiguous()
        y = torch.ops.mkldnn._linear_pointwise(flat, self.packed, self.bias, "none", [], "")
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, kernel=onednn"


def check_cpu_linear(kind: str) -> None:
    """Fail before loading when ``kind`` is unknown or this torch build lacks oneDNN."""
    if kind not in CPU_LINEAR:
        raise ConfigError(f"hardware.cpu_linear: must be one of {', '.join(CPU_LINEAR)}, got {kind!r} — use onednn (fast) or aten (stock PyTorch)")
    if kind == "onednn" and not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        raise ConfigError("hardware.cpu_linear: this torch build has no oneDNN linear kernels — set hardware.cpu_linear=aten")


def use_onednn_linears(model: Any) -> int:
    """Swap every float ``nn.Linear`` of a CPU model for :class:`OneDNNLinear`; returns how many.

    Quantized (int8_dynamic, bitsandbytes) and offloaded layers are not plain ``nn.Linear`` or not
    on the CPU, and are left alone.
    """
    emb = model.get_input_embeddings()
    shared = {id(getattr(emb, "weight", None))}
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear or child.weight.device.type != "cpu" or child.weight.dtype not in _PACKABLE:
                continue
            setattr(parent, name, OneDNNLinear(child, keep_weight=id(child.weight) in shared))
            swapped += 1
    log.debug("oneDNN linear kernels: %d layers reordered", swapped)
    return swapped
