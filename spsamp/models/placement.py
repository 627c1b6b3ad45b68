"""Where a model's weights live: on one device, or spread by accelerate over GPU, CPU RAM and disk.

``hardware.offload`` places the *target* with accelerate's big-model inference
(``from_pretrained(device_map="auto", max_memory=..., offload_folder=...)``): the modules that fit
in ``max_memory`` of the GPU stay there, the next ones in CPU RAM, the rest on disk, and hooks
stream each offloaded module's weights to the execution device when it runs. This is the setting
SpecExec was designed for (Svirschevski et al., 2024, "SpecExec: Massively Parallel Speculative
Decoding for Interactive LLM Inference on Consumer Devices", sec. 1 and 4): one target pass
streams the whole model, so it costs about the same for one token or a tree of hundreds, and a
large draft tree pays off. The draft is never offloaded (it runs many small passes).

Every decoder works unchanged: :class:`~spsamp.models.adapter.CausalLM` sends its inputs to the
input embeddings' execution device, and accelerate's hooks move activations between modules.
This module also validates the hardware block (:func:`check_hardware`, called by
``spsamp.config.validate`` before any model loads) and summarises a placement for the records.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

from spsamp.config import ConfigError, OffloadConfig, RunConfig

log = logging.getLogger(__name__)

_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def _fail(key: str, problem: str, fix: str) -> None:
    raise ConfigError(f"{key}: {problem} — {fix}")


def _memory_key(key: str) -> int | str:
    """``max_memory`` key as accelerate wants it: a GPU index (int) or ``"cpu"``."""
    k = str(key).strip().lower()
    if k == "cpu":
        return "cpu"
    m = re.fullmatch(r"(?:cuda:)?(\d+)", k)
    if m is None:
        _fail(f"hardware.offload.max_memory.{key}", "unknown device key", "use a GPU index (0, 1, ...) or cpu")
    return int(m.group(1))  # type: ignore[union-attr]


def _memory_bytes(key: str, value: Any) -> int:
    from accelerate.utils import convert_file_size_to_int

    text = str(value).strip()
    try:
        size = int(text) if text.isdigit() else convert_file_size_to_int(text)
    except ValueError:
        size = -1
    if size <= 0:
        _fail(f"hardware.offload.max_memory.{key}", f"bad size {value!r}", "use bytes or a size such as 20GiB / 500MB")
    return size


def max_memory(offload: OffloadConfig) -> dict[int | str, int]:
    """``hardware.offload.max_memory`` as accelerate's ``max_memory`` argument (sizes in bytes)."""
    return {_memory_key(k): _memory_bytes(k, v) for k, v in offload.max_memory.items()}


def check_hardware(run: RunConfig) -> None:
    """Reject device / quantization / offload combinations that cannot work, before any load."""
    hw = run.hardware
    if not _DEVICE.match(hw.device):
        _fail("hardware.device", f"unknown device {hw.device!r}", "use cpu, cuda, cuda:N or mps")
    from spsamp.models.kernels import check_cpu_linear

    check_cpu_linear(hw.cpu_linear)
    for key, spec in (("model.target", run.model.target), ("model.draft", run.model.draft)):
        if spec is None:
            continue
        if spec.device is not None and not _DEVICE.match(spec.device):
            _fail(f"{key}.device", f"unknown device {spec.device!r}", "use cpu, cuda, cuda:N, mps or null")
        device = spec.device or hw.device
        if spec.quantization == "int8_dynamic" and device != "cpu":
            _fail(f"{key}.quantization", f"int8_dynamic runs on the CPU only, but the model goes to {device}", "use bnb8 or bnb4 on a GPU")
        if spec.quantization in ("bnb8", "bnb4") and device == "mps":
            _fail(f"{key}.quantization", "bitsandbytes has no mps backend", "use null, or run on cpu/cuda")
        if spec.quantization == "bnb4" and device == "cpu" and spec.tiny is not None:
            # the CPU NF4 kernels quantize blocks of 64 input features of every Linear
            widths = {"hidden_size": spec.tiny.hidden_size, "intermediate_size": spec.tiny.intermediate_size}
            for name, width in widths.items():
                if width % 64:
                    _fail(f"{key}.tiny.{name}", f"bnb4 on the CPU needs a multiple of 64, got {width}", "use 64, 128, ...")
    off = hw.offload
    if off is None:
        return
    target = run.model.target
    if target.device is not None:
        _fail("model.target.device", "set together with hardware.offload (accelerate decides where the target's layers go)", "remove it")
    if target.quantization == "int8_dynamic":
        _fail("hardware.offload", "an int8_dynamic target cannot be offloaded (accelerate cannot stream its packed weights)", "quantize the target with null/bnb8/bnb4")
    if target.quantization in ("bnb8", "bnb4"):
        if not hw.device.startswith("cuda"):
            _fail("hardware.offload", "bitsandbytes layers can only be offloaded from a GPU", "drop model.target.quantization or hardware.offload")
        if off.folder:
            _fail("hardware.offload.folder", "bitsandbytes targets cannot be offloaded to disk", "set it to null (offload to CPU RAM only)")
    if hw.device == "mps":
        _fail("hardware.offload", "accelerate offload is supported here on cpu and cuda only", "use hardware.device=cpu or cuda")
    mm = max_memory(off)
    if not mm:
        _fail("hardware.offload.max_memory", "empty", "give the memory each device may hold, e.g. {0: 20GiB, cpu: 60GiB}")
    gpus = [k for k in mm if k != "cpu"]
    if hw.device == "cpu" and gpus:
        _fail("hardware.offload.max_memory", f"GPU keys {gpus} with hardware.device=cpu", "keep only cpu, or use hardware.device=cuda")
    if hw.device == "cpu" and "cpu" not in mm:
        _fail("hardware.offload.max_memory.cpu", "missing with hardware.device=cpu", "set the RAM the target may hold, e.g. cpu: 8GiB")


def offload_kwargs(offload: OffloadConfig, model_name: str) -> dict[str, Any]:
    """``from_pretrained`` arguments that let accelerate place the model over GPU, CPU and disk.

    Disk offload goes to a fresh subdirectory of ``offload.folder`` per load (two jobs of a sweep
    never share one), removed when the process exits.
    """
    kwargs: dict[str, Any] = {"device_map": "auto", "max_memory": max_memory(offload)}
    if offload.folder:
        root = Path(offload.folder).expanduser()
        root.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model_name)
        folder = tempfile.mkdtemp(prefix=f"{safe}-", dir=root)
        atexit.register(shutil.rmtree, folder, True)
        kwargs["offload_folder"] = folder
    return kwargs


def device_map_summary(model: Any) -> str:
    """Where a model's modules are, for the records: ``"cpu"`` / ``"cuda:0"`` when on one device,
    else the number of top-level device-map entries per device, e.g. ``"cuda:0:20,cpu:8,disk:4"``."""
    device_map = getattr(model, "hf_device_map", None)
    if not device_map:
        import torch

        devices = {p.device for p in model.parameters()} or {torch.device("cpu")}
        return ",".join(sorted(str(d) for d in devices))
    counts: dict[str, int] = {}
    for where in device_map.values():
        name = f"cuda:{where}" if isinstance(where, int) else str(where)
        counts[name] = counts.get(name, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ",".join(f"{name}:{n}" for name, n in counts.items())


def placement_json(models: dict[str, Optional[Any]]) -> Optional[str]:
    """The ``device_map`` record column: ``{"target": "...", "draft": "..."}`` from ``CausalLM.info``."""
    found = {role: lm.info.get("device_map") for role, lm in models.items() if lm is not None}
    return json.dumps(found, sort_keys=True) if found else None


def tiny_checkpoint(spec: Any, cache: Path) -> Path:
    """Save a ``tiny_random`` model (and its tokenizer) as safetensors once; return the dir.

    bitsandbytes quantizes while ``from_pretrained`` reads weights, and accelerate offloads while
    it places them, so in-memory tiny models take the same path as real checkpoints. The dir name
    hashes the model shape and seed (same spec -> same weights); writes go through a temp dir.
    """
    import torch

    from spsamp.models.tiny import char_tokenizer, tiny_llama

    assert spec.tiny is not None
    tag = hashlib.sha256(json.dumps(asdict(spec.tiny), sort_keys=True).encode()).hexdigest()[:12]
    out = cache / "tiny" / f"tiny-llama-{tag}"
    if (out / "config.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
    try:
        tiny_llama(spec.tiny, torch.float32).save_pretrained(str(tmp), safe_serialization=True)
        char_tokenizer().save_pretrained(str(tmp))
        try:
            os.replace(tmp, out)
        except OSError:  # another process saved it first: theirs is identical
            if not (out / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
