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
- ``split``: ``aten`` for single-token passes, ``onednn`` for wider ones (verification, tree levels,
  prefill), holding both weight layouts. On an Intel Xeon with AMX (2026-12-02, SmolLM2-135M fp32,
  1 thread) MKL's single-row path beat oneDNN's (60 vs 75 ms) while oneDNN won at 5 tokens (84 vs
  102 ms): either kernel alone made plain decoding or verification pay.
- ``auto`` (every preset's default): which wins depends on the CPU (measured: oneDNN 1.6x stock on
  an AMD EPYC, 0.78x on an Intel Xeon with AMX), so each model times ``aten`` and ``onednn`` at load
  (:func:`autotune_cpu_linear`) and keeps the faster — or ``split``, when taking each width's faster
  kernel beats both and the second layout fits in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from spsamp.config import CPU_LINEAR, CPU_LINEAR_FIX, ConfigError

log = logging.getLogger(__name__)

KERNELS = ("aten", "onednn")  # what ``auto`` times
CHOICES = (*KERNELS, "split")  # what ``auto`` chooses between (split: each width's faster kernel)
REORDERED = ("onednn", "split")  # the choices that run OneDNNLinear (and need oneDNN in the build)
# split holds a second copy of every weight, so auto takes it only when it saves at least this share
# of the better single kernel's time (below that, pass-to-pass noise could pick it) and the copy takes
# under SPLIT_MEMORY_SHARE of the memory available at load
SPLIT_MIN_GAIN = 0.03
SPLIT_MEMORY_SHARE = 0.5
_PACKABLE = (torch.float32, torch.bfloat16)
# auto: a decode pass (1 token) and a verification pass of the default k=4 (k+1 = 5 tokens), after a
# short prompt; the first round is warm-up, then AUTO_REPEATS interleaved rounds, medians compared
AUTO_WIDTHS = (1, 5)
AUTO_REPEATS = 5
AUTO_PREFIX = 16
_clock: Callable[[], float] = time.perf_counter  # tests replace it with fake timings


class OneDNNLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` held in oneDNN's reordered layout.

    The original weight is dropped (it would double the memory) unless it is shared with another
    module — a tied input embedding still needs it for lookups — or ``split`` is set
    (``hardware.cpu_linear=split``): then a single-token pass (one row) goes through ``F.linear`` on
    the original weight and only wider passes through oneDNN, for CPUs whose fastest one-row GEMV
    and fastest small GEMM come from different libraries.
    """

    def __init__(self, linear: nn.Linear, keep_weight: bool, split: bool = False):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # a plain attribute, not a buffer: .to()/state_dict cannot handle the opaque mkldnn layout
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), None)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)
        if keep_weight or split:
            self.weight = linear.weight
        self.split = split

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split and x.shape[:-1].numel() == 1:
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(-1, self.in_features)
        if not flat.is_contiguous():
            flat = flat.contiguous()
        y = torch.ops.mkldnn._linear_pointwise(flat, self.packed, self.bias, "none", [], "")
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        kernel = "split (aten at 1 token, onednn wider)" if self.split else "onednn"
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, kernel={kernel}"


def onednn_available() -> bool:
    return bool(torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def check_cpu_linear(kind: str) -> None:
    """Fail before loading when ``kind`` is unknown or this torch build lacks oneDNN."""
    if kind not in CPU_LINEAR:
        raise ConfigError(
            f"hardware.cpu_linear: must be one of {', '.join(CPU_LINEAR)}, got {kind!r} — {CPU_LINEAR_FIX}"
        )
    if kind in REORDERED and not onednn_available():
        raise ConfigError("hardware.cpu_linear: this torch build has no oneDNN linear kernels — set hardware.cpu_linear=auto or aten")


def _float_linears(model: Any) -> Iterator[tuple[nn.Module, str, nn.Linear]]:
    # quantized (int8_dynamic, bitsandbytes) and offloaded layers are not plain float nn.Linear on the CPU
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.device.type == "cpu" and child.weight.dtype in _PACKABLE:
                yield parent, name, child


def use_onednn_linears(model: Any, split: bool = False) -> int:
    """Swap every float ``nn.Linear`` of a CPU model for :class:`OneDNNLinear` (``split``: keeping
    ``aten`` for single-token passes); returns how many.

    Quantized (int8_dynamic, bitsandbytes) and offloaded layers are not plain ``nn.Linear`` or not
    on the CPU, and are left alone.
    """
    shared = _shared_weights(model)
    swapped = 0
    for parent, name, child in _float_linears(model):
        setattr(parent, name, OneDNNLinear(child, keep_weight=id(child.weight) in shared, split=split))
        swapped += 1
    log.debug("oneDNN linear kernels (%s): %d layers reordered", "split" if split else "onednn", swapped)
    return swapped


def _shared_weights(model: Any) -> set[int]:
    emb = model.get_input_embeddings()
    return {id(getattr(emb, "weight", None))}


def choose_cpu_linear(timings: dict[str, dict[int, list[float]]], allow_split: bool = True) -> tuple[str, dict[str, float]]:
    """The faster kernel from interleaved pass timings ``{kernel: {width: [seconds, ...]}}``.

    Each kernel's score is the sum over widths of its median pass time (a decode pass and a
    verification pass count alike; medians shrug off a pass that another process interrupted).
    Ties go to ``aten``, the stock kernels. ``split`` scores ``aten``'s 1-token median plus
    ``onednn``'s wider ones, and wins only by more than ``SPLIT_MIN_GAIN`` of the better single
    kernel's score (it costs a second weight copy) and when ``allow_split``. Returns (choice, scores).
    """
    med = {k: {w: statistics.median(ts) for w, ts in by_width.items()} for k, by_width in timings.items()}
    scores = {k: sum(by_width.values()) for k, by_width in med.items()}
    choice = min(sorted(scores), key=lambda k: (scores[k], k != "aten"))
    if set(KERNELS) <= set(med) and 1 in med["aten"] and len(med["onednn"]) > 1:
        scores["split"] = med["aten"][1] + sum(t for w, t in med["onednn"].items() if w != 1)
        if allow_split and scores["split"] < (1 - SPLIT_MIN_GAIN) * scores[choice]:
            choice = "split"
    return choice, scores


def _time_pass(lm: Any, ids: torch.Tensor, width: int, prefix: int) -> float:
    t0 = _clock()
    lm.forward(ids[prefix : prefix + width])
    dt = _clock() - t0
    lm.crop(prefix)
    return dt


def autotune_cpu_linear(model: Any, widths: tuple[int, ...] = AUTO_WIDTHS, repeats: int = AUTO_REPEATS) -> str:
    """``hardware.cpu_linear=auto``: time ``model`` with each kernel, keep the faster; return its name.

    Both versions of every float Linear are held during the timing (the oneDNN copy is built with
    the original weight kept), swapped in and out round by round in alternating order, so load
    drift from other processes hits both alike. Each round times a ``w``-token pass for every
    ``w`` in ``widths`` after a fixed ``AUTO_PREFIX``-token prompt (random ids: cost does not
    depend on the tokens). The loser is dropped, so memory ends as with a fixed choice.
    """
    linears = list(_float_linears(model))
    if not linears or not onednn_available():
        return "aten"  # nothing to choose: quantized/offloaded models, or no oneDNN in this build
    shared = _shared_weights(model)
    packed = [OneDNNLinear(lin, keep_weight=True) for _, _, lin in linears]

    def install(kind: str) -> None:
        for (parent, name, lin), fast in zip(linears, packed):
            setattr(parent, name, fast if kind in REORDERED else lin)
            fast.split = kind == "split"

    from spsamp.models.adapter import CausalLM  # the passes decoders run: same cache handling

    lm = CausalLM(model, None, "cpu_linear=auto")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, int(model.config.vocab_size), (AUTO_PREFIX + max(widths),), generator=g)
    timings: dict[str, dict[int, list[float]]] = {k: {w: [] for w in widths} for k in KERNELS}
    try:
        lm.prefill(ids[:AUTO_PREFIX])
        for rnd in range(repeats + 1):  # round 0 warms both kernels up (oneDNN primitive creation)
            for kind in KERNELS if rnd % 2 else KERNELS[::-1]:
                install(kind)
                for w in widths:
                    dt = _time_pass(lm, ids, w, AUTO_PREFIX)
                    if rnd:
                        timings[kind][w].append(dt)
        choice, scores = choose_cpu_linear(timings, allow_split=_copy_fits(linears, shared))
    except Exception:
        install("aten")  # leave the model as it was loaded
        raise
    install(choice)
    if choice == "onednn":
        for fast, (_, _, lin) in zip(packed, linears):
            if id(lin.weight) not in shared:
                del fast.weight  # the reordered copy replaces it (as use_onednn_linears does)
    medians = ", ".join(
        f"{k} " + " / ".join(f"{w} tok {statistics.median(timings[k][w]) * 1e3:.2f} ms" for w in widths) for k in KERNELS
    )
    others = [v for k, v in scores.items() if k != choice]
    log.info("cpu_linear=auto: %s -> %s (%.2fx the best other's time%s)", medians, choice,
             scores[choice] / min(others) if min(others) > 0 else 1.0,
             "; aten at 1 token, onednn wider, both weight layouts held" if choice == "split" else "")
    return choice


def _available_bytes() -> int | None:
    """Memory the kernel says a new allocation can take now (``MemAvailable``); None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _copy_fits(linears: list[tuple[nn.Module, str, nn.Linear]], shared: set[int]) -> bool:
    """Whether ``split``'s second weight layout fits: the original weights it keeps (the packed
    copies exist already during timing) take under SPLIT_MEMORY_SHARE of the memory available."""
    extra = sum(lin.weight.numel() * lin.weight.element_size() for _, _, lin in linears if id(lin.weight) not in shared)
    avail = _available_bytes()
    return avail is None or extra < SPLIT_MEMORY_SHARE * avail


def remembered_cpu_linear(model: Any, cache: Path, ident: dict[str, Any]) -> str:
    """``auto`` as the loader runs it: :func:`autotune_cpu_linear` the first time a model is loaded
    on this machine (torch version, thread count and ``ident``, which names the CPU), the remembered choice
    afterwards (``<cache>/kernels/<hash>.json``; delete it to measure again).

    Without the memory, two jobs of one sweep could pick different kernels on a noisy machine, and
    rows on different kernels are never compared (their tokens may differ by rounding), so a
    sweep's methods would lose their common baseline.
    """
    # CHOICES in the key: a choice remembered before a new candidate existed is measured again
    key = {"torch": torch.__version__, "threads": torch.get_num_threads(), "choices": CHOICES, **ident}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache / "kernels" / f"{digest}.json"
    try:
        choice = json.loads(path.read_text()).get("choice")
    except (OSError, ValueError):
        choice = None
    if choice in CHOICES and list(_float_linears(model)) and onednn_available():
        if choice != "aten":
            use_onednn_linears(model, split=choice == "split")
        log.info("cpu_linear=auto: %s, as measured earlier on this machine (%s; delete it to measure again)", choice, path)
        return choice
    choice = autotune_cpu_linear(model)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump({"choice": choice, "key": key}, f, default=str)
        os.replace(tmp, path)  # parallel workers: whole files only, the last one wins
    except OSError as exc:
        log.warning("cpu_linear=auto: could not remember the choice in %s: %s", path, exc)
    return choice
