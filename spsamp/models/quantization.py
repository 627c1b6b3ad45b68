"""Weight quantization per model (``model.target.quantization`` / ``model.draft.quantization``).

- ``int8_dynamic``: PyTorch dynamic quantization of every ``nn.Linear`` (int8 weights, activations
  quantized per call; Jacob et al., 2018, "Quantization and Training of Neural Networks for
  Efficient Integer-Arithmetic-Only Inference", eq. 1 ``r = S (q - Z)``). CPU only; the cheapest
  draft on a laptop.
- ``bnb8``: bitsandbytes LLM.int8() (Dettmers et al., 2022, "LLM.int8(): 8-bit Matrix
  Multiplication for Transformers at Scale": vector-wise absmax quantization, eq. 1-2, with fp16
  outlier columns kept apart, sec. 3.2).
- ``bnb4``: bitsandbytes 4-bit NormalFloat (Dettmers et al., 2023, "QLoRA", sec. 2, NF4 eq. 4)
  with ``bnb_4bit_compute_dtype`` = the model's dtype.

bitsandbytes quantizes while ``from_pretrained`` reads a safetensors checkpoint; transformers
refuses a quantization config together with a GGUF file, so GGUF models are quantized from their
cached safetensors conversion and ``tiny_random`` models from a saved copy (see loading.py).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

from spsamp.config import ConfigError

BNB = ("bnb8", "bnb4")



class _DropCastNotice(logging.Filter):
    # bitsandbytes' int8 matmul casts fp32/bf16 inputs to fp16 and logs a warning on *every* call
    # (thousands of lines per run); the cast is part of LLM.int8() itself, so it carries no news.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")


logging.getLogger("bitsandbytes.autograd._functions").addFilter(_DropCastNotice())


def bnb_config(kind: str, dtype: torch.dtype, cpu_offload: bool = False) -> Any:
    """The ``BitsAndBytesConfig`` for ``bnb8`` / ``bnb4``.

    cpu_offload: modules that accelerate places on the CPU stay unquantized fp32
    (``llm_int8_enable_fp32_cpu_offload``; only used with ``hardware.offload`` on a GPU).
    """
    from transformers import BitsAndBytesConfig

    if kind == "bnb8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_enable_fp32_cpu_offload=cpu_offload)
    if kind == "bnb4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            llm_int8_enable_fp32_cpu_offload=cpu_offload,
        )
    raise ValueError(f"not a bitsandbytes quantization: {kind!r}")


def int8_dynamic(model: Any, device: str) -> Any:
    """Dynamic int8 quantization of every Linear (weights int8, activations quantized on the fly).

    The quantized kernels take float32 activations, so the model is cast to float32 first: the
    non-Linear parts (embeddings, norms) run in float32 whatever the configured dtype.
    """
    if device != "cpu":
        raise ConfigError("model.*.quantization: int8_dynamic runs on the CPU only — use bnb8/bnb4 on cuda")
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notice; the kernels are still the CPU's fastest
        return quantize_dynamic(model.float(), {torch.nn.Linear}, dtype=torch.qint8)


def compute_dtype(quantization: str | None, dtype: str) -> str:
    """The dtype activations actually run in (recorded per model in ``CausalLM.info``)."""
    return "float32" if quantization == "int8_dynamic" else dtype
