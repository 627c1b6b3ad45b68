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
This module also summarises a placement for the records (the hardware block itself is checked
by :func:`spsamp.config.validate`, before any model loads).
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

from spsamp.config import OffloadConfig, max_memory

log = logging.getLogger(__name__)

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
