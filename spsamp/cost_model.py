"""Speculative-sampling cost maths: the closed forms of Leviathan et al. 2023 ("Fast Inference from
Transformers via Speculative Decoding", ICML 2023) that turn an acceptance rate into a speedup, the
sizing maths behind ``method.k=auto`` and ``method.grow=cost``, their online estimates and the timing
probe. Every term (T1, c, v(n), vd(w), verify unit, draft units, overhead, calibration) is defined
once, with its formula, in docs/methods.md "Sizing"; the sizers that use this are in
:mod:`spsamp.drafting.sizing`.

Notation as in the paper: alpha = P(the target accepts a draft token), i.i.d. across positions;
k (the paper's gamma) = draft tokens per step; c = a draft pass's cost over a target pass's.
The closed forms take floats or numpy arrays (broadcast elementwise).
"""

from __future__ import annotations

import bisect
import statistics
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = [
    "expected_tokens_per_step", "predicted_speedup", "alpha_from_counts", "VerifyCost", "chain_step", "best_chain_k",
    "tree_speed", "expansion_width", "SizingPriors", "PRIORS", "Rate", "StepCost", "Costs", "measure_costs",
    "probe_costs",
]


def expected_tokens_per_step(alpha, k):
    """Expected tokens produced per target call, Leviathan et al. 2023, Eq. (1):

        E[tokens/step] = (1 - alpha^(k+1)) / (1 - alpha)

    (the accepted draft prefix plus the target's own correction/bonus token); at alpha = 1 the
    limit k + 1 is returned, at alpha = 0 exactly 1.
    """
    a = np.asarray(alpha, dtype=float)
    kk = np.asarray(k, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        geo = (1.0 - a ** (kk + 1.0)) / (1.0 - a)
    out = np.where(np.isclose(a, 1.0), kk + 1.0, geo)
    return out.item() if out.ndim == 0 else out


def predicted_speedup(alpha, k, c):
    """Expected walltime improvement over target-only decoding, Leviathan et al. 2023, Theorem 3.8:

        speedup = (1 - alpha^(k+1)) / ((1 - alpha) (k c + 1))

    One step costs k draft passes (k c target-pass units) plus one target pass that verifies all
    k tokens in parallel (assumed to cost the same as a one-token pass).
    """
    kk = np.asarray(k, dtype=float)
    out = np.asarray(expected_tokens_per_step(alpha, k), dtype=float) / (kk * np.asarray(c, dtype=float) + 1.0)
    return out.item() if out.ndim == 0 else out


def alpha_from_counts(accepted, rejections):
    """Maximum-likelihood alpha from per-token accept/reject tests of a chain decoder.

    Each step tests draft tokens in order until the first rejection (a truncated geometric, the
    i.i.d. model behind Eq. (1)), so the tests performed are ``accepted + rejections`` and the MLE
    of the per-token acceptance probability is ``accepted / (accepted + rejections)``. Unlike
    ``accepted / proposed`` it is not biased down by draft tokens after a rejection, which are
    never tested. NaN when no test was performed.
    """
    a = np.asarray(accepted, dtype=float)
    r = np.asarray(rejections, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(a + r > 0, a / (a + r), np.nan)
    return out.item() if out.ndim == 0 else out


# ---- sizing maths: costs in single-token target passes (v(1) = 1) ---------------------------------


class VerifyCost:
    """v(n) from measured ``{n: cost of an n-token pass / cost of a 1-token pass}``: piecewise linear,
    extended past the last two widths, never below 1. A wider pass never costs less, so timings that
    say otherwise (a pass another process interrupted) are fitted non-decreasing first (isotonic)."""

    def __init__(self, measured: dict[int, float]):
        from sklearn.isotonic import isotonic_regression

        pts = {1: 1.0, **{int(n): float(r) for n, r in measured.items()}}
        self.ns = sorted(pts)
        self.rs = [max(1.0, float(r)) for r in isotonic_regression([pts[n] for n in self.ns])]

    def __call__(self, n: int) -> float:
        ns, rs = self.ns, self.rs
        if n <= ns[0] or len(ns) == 1:
            return rs[0]
        i = min(bisect.bisect_left(ns, n), len(ns) - 1)
        return max(1.0, rs[i - 1] + (rs[i] - rs[i - 1]) * (n - ns[i - 1]) / (ns[i] - ns[i - 1]))

    def wide(self, n: int) -> float:
        """v(n) for a pass that may lie far past the widest measured one (a draft catching up on
        prompts): at least its tokens' worth of the widest pass (compute-bound: the cost per token
        grows with width), however flat the last two points ran."""
        return max(self(n), self.rs[-1] * n / self.ns[-1])

    def as_dict(self) -> dict[int, float]:
        return dict(zip(self.ns, self.rs))

    def describe(self, name: str = "v") -> str:
        """``"v(1)=1.00, v(2)=1.03, ..."``, for logs."""
        return ", ".join(f"{name}({n})={r:.2f}" for n, r in self.as_dict().items())


def _best_size(sizes, speedup) -> int:
    """The size with the largest ``speedup(size)``; ties (to 12 places: float noise is no preference)
    go to the smaller size, which wastes less draft work when acceptance is overestimated."""
    return max(sizes, key=lambda n: (round(speedup(n), 12), -n))


def chain_step(alphas: list[float], rooms: list[int], k: int, c: float, v, vd, rows: int = 1, first: int = 1,
               scale: float = 1.0) -> tuple[float, float]:
    """One step of chains of up to k draft tokens in a batch of ``rows`` rows (one row: ``rows`` = 1):
    (expected tokens over the live rows, cost). Live row i (acceptance ``alphas[i]``, room for
    ``rooms[i]`` draft tokens) drafts k_i = min(k, rooms[i]) and yields Leviathan's Eq. (1), its draft
    tokens scaled by ``scale`` (a row's calibration) and at most k_i. Each pass is priced by the tokens
    it feeds (a finished row's masked columns too): the first draft pass ``first`` a row, each later
    one 1, the verify pass every row's root and d = max k_i:

        E[tokens] = sum_i 1 + min(k_i, scale (E_i - 1))
        cost      = c (vd(rows first) + (d - 1) vd(rows)) + v(rows (d + 1))     (d = 0: v(rows), no draft pass)"""
    ks = np.minimum(k, np.asarray(rooms, dtype=int))
    kept = np.minimum(ks, scale * (np.asarray(expected_tokens_per_step(np.asarray(alphas, dtype=float), ks)) - 1.0))
    d = int(ks.max(initial=0))
    draft = vd(rows * first) + (d - 1) * vd(rows) if d else 0.0
    return float(np.sum(1.0 + kept)), c * draft + v(rows * (d + 1))


def best_chain_k(alphas: list[float], rooms: list[int], c: float, v, vd, rows: int = 1, first: int = 1, k_max: int = 16,
                 scale: float = 1.0, k_min: int = 0) -> tuple[int, float, float]:
    """The k in k_min..min(k_max, max room) with the most expected tokens per unit of cost
    (:func:`chain_step`): (k, tokens, cost). k = 0 is a plain step (no draft pass). Ties go to the
    smaller k."""
    top = max(k_min, min(k_max, max(rooms, default=0)))
    steps = {k: chain_step(alphas, rooms, k, c, v, vd, rows, first, scale) for k in range(k_min, top + 1)}
    best = _best_size(steps, lambda k: steps[k][0] / steps[k][1])
    return best, *steps[best]


def tree_speed(values: list[float], spent: float, c: float, v, scale: float = 1.0) -> tuple[int, float]:
    """The best first ``m`` of a tree's nodes ranked best first (any such prefix is a tree): (m,
    predicted speedup) maximising

        (1 + scale * sum(values[:m])) / (c * spent + v(m + 1))     over m = 0..len(values)

    values: each node's path probability as the draft sees it (SpecExec's node value; Svirschevski
    et al. 2024, Sec. 3.1), scaled to what the target accepts; spent: the draft units already paid
    (sunk: they do not depend on m); v(m + 1): verifying the root and m nodes."""
    best_m, best = 0, 1.0 / (c * spent + v(1))
    total = 0.0
    for m, x in enumerate(values, 1):
        total += x
        s = (1.0 + scale * total) / (c * spent + v(m + 1))
        if s > best:
            best_m, best = m, s
    return best_m, best


def expansion_width(values: list[float], frontier: list[float], child: float, spent: float, c: float, v, vd,
                    budget: int, scale: float = 1.0) -> int:
    """How many of the ``frontier`` nodes (their values, best first) the next batched draft pass
    should expand; 0 = stop growing (``method.grow=cost``). Myopic, like EAGLE-2's dynamic tree (Li et
    al. 2024, Sec. 4): a pass over the best m costs vd(m) more draft units and adds, at best, each
    node's likeliest child at ``child`` times its value (the mean top child probability seen so far);
    the m whose tree after the pass (the ``budget`` best of both) has the best :func:`tree_speed` wins."""
    _, best = tree_speed(values, spent, c, v, scale)
    best_m = 0
    for m in range(1, len(frontier) + 1):
        after = sorted(values + [x * child for x in frontier[:m]], reverse=True)[:budget]
        _, s = tree_speed(after, spent + vd(m), c, v, scale)
        if s > best:
            best_m, best = m, s
    return best_m


# ---- online estimates: what the row's own steps say ---------------------------------------------


@dataclass(frozen=True)
class SizingPriors:
    """Every prior, window and clamp of the online estimates (k=auto, grow=cost). Each estimate is a
    :class:`Rate` that weighs the past ``decay`` times per step (the last ~10 steps carry most of the
    weight) and starts, at a row's first step, from its prior worth a few observations. The priors are
    guesses the row's own steps overrule within a few steps."""

    decay: float = 0.9
    prior_steps: float = 2.0  # acceptance priors' weight (tested tokens; tree calibration: units of draft expectation)
    cost_prior_steps: float = 2.0  # the probe's c and zero overhead: their weight (draft units; steps)
    alpha: float = 0.6  # P(the target keeps a chain's draft token) before any step
    calibration: float = 1.0  # kept per expected token (chains) / per unit of path probability (trees)
    calibration_range: tuple[float, float] = (0.25, 4.0)  # its clamp: at T=0 a tree ranks by the draft's T=1 probabilities
    k_max: int = 16  # longest chain k=auto may choose
    explore_after: int = 8  # a batch at k = 0: plain steps before a k = 1 step re-measures acceptance (doubling while none pays)
    explore_alpha: float = 0.9  # ... and only where chains at this acceptance (a good pair's, on code) would pay


PRIORS = SizingPriors()


class Rate:
    """sum(num) / sum(den) over the steps observed, each step's past weighed ``decay`` times the
    step after it, starting from ``prior`` worth ``weight`` units of den."""

    def __init__(self, prior: float, weight: float, decay: float):
        self.num, self.den, self.decay = prior * weight, weight, decay

    def observe(self, num: float, den: float) -> None:
        self.num, self.den = self.num * self.decay + num, self.den * self.decay + den

    @property
    def value(self) -> float | None:
        return self.num / self.den if self.den > 0 else None


class StepCost:
    """What a step costs in **verify units** (the row's target seconds per unit of v(n), its estimate
    of T1): c d + v(n) + overhead for d draft units and a verify pass over n tokens. c starts at the
    probe's and follows the row's draft seconds per draft unit; overhead (seconds outside both
    models' passes) starts at 0. Both are :class:`Rate`\\ s (:class:`SizingPriors`)."""

    def __init__(self, costs: "Costs", priors: SizingPriors = PRIORS):
        self.v, self.vd, self.c_probe = costs.v, costs.vd, costs.c
        self.unit = Rate(0.0, 0.0, priors.decay)  # no prior: seconds are the machine's
        self.draft = Rate(costs.c, priors.cost_prior_steps, priors.decay)
        self.extra = Rate(0.0, priors.cost_prior_steps, priors.decay)

    def observe(self, draft_s: float, draft_units: float, target_s: float, width: int, overhead_s: float) -> None:
        """One step: seconds drafting (``draft_units`` of work), verifying ``width`` tokens, and after."""
        if target_s <= 0:
            return  # a clock that did not move: nothing to learn
        self.unit.observe(target_s, self.v(width))
        unit = self.unit.value
        if draft_units > 0 and draft_s > 0:
            self.draft.observe(draft_s / unit, draft_units)
        self.extra.observe(max(0.0, overhead_s) / unit, 1.0)

    @property
    def c(self) -> float:
        return self.draft.value

    @property
    def overhead(self) -> float:
        return self.extra.value

    def verify(self, n: int) -> float:
        """v(n) plus the step's overhead: a step with an n-token verify pass, drafting aside."""
        return self.v(n) + self.overhead

    def metrics(self) -> dict[str, float | None]:
        return {"sizing_c": self.c, "sizing_c_probe": self.c_probe, "sizing_overhead": self.overhead,
                "sizing_verify_unit_s": self.unit.value}


# ---- the timing probe -----------------------------------------------------------------------------

_clock = time.perf_counter  # tests replace it with fake timings


@dataclass
class Costs:
    """Measured pass costs: c, v (target, n tokens / 1 token), vd (draft, w tokens / 1 token), and
    the seconds of the 1-token target pass they are relative to."""

    c: float
    v: VerifyCost
    vd: VerifyCost
    target_pass_s: float = float("nan")


def _sync(device) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)  # CUDA kernels run asynchronously: time their completion


def median_times(passes: dict[Any, tuple[Any, Callable[[], Any]]], repeats: int) -> dict[Any, float]:
    """``passes``: key -> (model, one pass of it on top of its cache, cropped back after). A warm-up
    round (allocations, oneDNN primitives), then ``repeats`` rounds timing every pass (interleaved:
    load from other processes hits every pass alike); the median seconds per key."""
    times: dict[Any, list[float]] = {key: [] for key in passes}
    for rnd in range(repeats + 1):
        for key, (lm, run) in passes.items():
            n = lm.cache_len
            _sync(lm.device)
            t0 = _clock()
            run()
            _sync(lm.device)
            if rnd:
                times[key].append(_clock() - t0)
            lm.crop(n)
    return {key: statistics.median(x) for key, x in times.items()}


# Kernels price a pass by blocks of rows (an AMX tile holds 16: a 17-token pass can cost a step
# more than a 16-token one), so v(n) interpolated between powers of two misses the steps. The probe
# times every width a k=auto chain verifies (k + 1 <= k_max + 1), then each wider power of two and
# one past it (trees); draft passes up to a tree's 16 branches.
PROBE_WIDTHS = (*range(1, PRIORS.k_max + 2), 32, 33, 64, 65)
PROBE_DRAFT_WIDTHS = (1, 2, 4, 8, 12, 16)


def measure_costs(target, draft, prompt_ids=None, widths=PROBE_WIDTHS, draft_widths=PROBE_DRAFT_WIDTHS, repeats: int = 5) -> Costs:
    """Time target passes over ``widths`` new tokens and draft passes over ``draft_widths``
    (:func:`median_times`). With ``prompt_ids`` both models are prefilled on it first and left empty
    after; without, the passes run on top of the caches and are cropped back (measuring in place)."""
    import torch

    g = torch.Generator().manual_seed(0)
    new = torch.randint(0, min(target.vocab_size, draft.vocab_size), (max(max(widths), max(draft_widths)),), generator=g)
    if prompt_ids is not None:
        target.prefill(prompt_ids)
        draft.prefill(prompt_ids)
    passes = {(name, w): (lm, lambda lm=lm, w=w: lm.forward(new[:w]))
              for name, lm, ws in (("v", target, widths), ("vd", draft, draft_widths)) for w in ws}
    med = median_times(passes, repeats)
    if prompt_ids is not None:
        target.reset()
        draft.reset()
    curves = {name: {w: x for (n, w), x in med.items() if n == name} for name in ("v", "vd")}
    t1, d1 = (c.get(1) or min(c.values()) for c in (curves["v"], curves["vd"]))
    return Costs(c=d1 / t1, v=VerifyCost({w: x / t1 for w, x in curves["v"].items()}),
                 vd=VerifyCost({w: x / d1 for w, x in curves["vd"].items()}), target_pass_s=t1)


PROBE_TOKENS = 64  # prompt length of the cost probe
CATCH_UP_TOKENS = 128  # a batch's probe times a draft pass this wide, to price the draft catching up on the prompts
# target -> draft -> key -> costs, measured once per pair, thread count (a pass's seconds depend on
# it) and batch shape. Weak keys: a freed model's entry goes with it (an id() could be reused by the
# next model loaded and hand it the old pair's costs).
_PROBED: "weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[Any, dict[Any, Costs]]]" = weakref.WeakKeyDictionary()


def measure_rows_costs(target, draft, rows: int, single: Costs, columns=(1, 2, 4, 8, 16), draft_columns=(1, 2), repeats: int = 5) -> Costs:
    """A batch's pass costs: on a ``rows`` x ``PROBE_TOKENS`` random prompt in both models, passes of
    ``rows`` x m columns (target: m in ``columns``; draft: ``draft_columns``) in ``single``'s units.
    v and vd are keyed on the tokens a pass feeds, rows x m: these points replace ``single``'s at and
    above ``rows`` tokens (a batch never feeds fewer), since rows' separate caches are not one row's
    longer one."""
    import torch

    from spsamp.batching import positions, row_masks

    g = torch.Generator().manual_seed(0)
    vocab = min(target.vocab_size, draft.vocab_size)
    ids = torch.randint(0, vocab, (rows, PROBE_TOKENS), generator=g)
    new = torch.randint(0, vocab, (rows, max(max(columns), max(draft_columns))), generator=g)
    mask = torch.ones((rows, PROBE_TOKENS), dtype=torch.long)
    for lm in (target, draft):
        lm.prefill_rows(ids, row_masks(lm, mask, PROBE_TOKENS), positions(mask, PROBE_TOKENS))

    def batch_pass(lm, m: int):
        grown = torch.cat([mask, mask.new_ones((rows, m))], dim=1)
        masks, pos = row_masks(lm, grown, m), positions(grown, m)
        return lm, lambda: lm.forward_rows(new[:, :m], masks, pos)

    passes = {(name, m): batch_pass(lm, m) for name, lm, ms in (("v", target, columns), ("vd", draft, draft_columns)) for m in ms}
    med = median_times(passes, repeats)
    target.reset()
    draft.reset()

    def merged(curve: VerifyCost, name: str, unit: float) -> VerifyCost:
        points = {n: r for n, r in curve.as_dict().items() if n < rows}
        points.update({rows * m: x / unit for (n, m), x in med.items() if n == name})
        return VerifyCost(points)

    t1 = single.target_pass_s
    return Costs(c=single.c, v=merged(single.v, "v", t1), vd=merged(single.vd, "vd", single.c * t1), target_pass_s=t1)


def probe_costs(target, draft, rows: int = 1, k_max: int = PRIORS.k_max) -> Costs:
    """The job's costs, memoised per (target, draft) pair, torch thread count and batch shape: loaded
    models are memoised, so a sweep's jobs share one measurement. One row: :func:`measure_costs` on a
    random ``PROBE_TOKENS``-token prompt. A batch: that, then the batch's own passes
    (:func:`measure_rows_costs`: verify passes of every column count 1 .. k_max + 1, draft passes of
    1, 2 and about ``CATCH_UP_TOKENS`` tokens)."""
    import torch

    per_key = _PROBED.setdefault(target, weakref.WeakKeyDictionary()).setdefault(draft, {})
    threads = torch.get_num_threads()
    if threads not in per_key:
        g = torch.Generator().manual_seed(0)
        probe = torch.randint(0, min(target.vocab_size, draft.vocab_size), (PROBE_TOKENS,), generator=g)
        per_key[threads] = measure_costs(target, draft, probe)
    key = threads if rows == 1 else (threads, "rows", rows, k_max)
    if key not in per_key:
        columns = tuple(range(1, k_max + 2))  # every verify width a chain uses, as the one-row probe
        wide = max(4, -(-CATCH_UP_TOKENS // rows))
        per_key[key] = measure_rows_costs(target, draft, rows, per_key[threads], columns=columns, draft_columns=(1, 2, wide))
    return per_key[key]
