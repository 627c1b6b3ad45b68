"""The speculative-sampling cost model of Leviathan et al. 2023 ("Fast Inference from Transformers via
Speculative Decoding", ICML 2023), used to predict speedups from a measured acceptance rate, and
the sizing maths and online estimates behind ``method.k=auto`` and ``method.grow=cost``.

Notation as in the paper: alpha = expected probability that the target accepts one draft token
(assumed i.i.d. across positions), k (the paper's gamma) = draft tokens proposed per step,
c = cost of one draft forward pass divided by the cost of one target forward pass.
Functions accept floats or numpy arrays (broadcast elementwise).

Sizing (every term is defined once, with its formula, in docs/methods.md "Sizing"): the probe
(:func:`probe_costs`) measures c, v(n) (a target pass over n tokens in single-token passes) and
vd(w) (the same for the draft) once per job; :class:`StepCost` then follows what the row's own
steps cost, and the sizers in :mod:`spsamp.drafting.sizing` pick each step's k or tree with the
best predicted tokens per unit of cost (:func:`best_k`, :func:`best_stopped_k`,
:func:`expansion_width`, :func:`tree_speed`).
"""

from __future__ import annotations

import statistics
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = [
    "expected_tokens_per_step", "predicted_speedup", "alpha_from_counts", "VerifyCost", "chain_speedup", "best_k",
    "stopped_chain", "best_stopped_k", "rows_chain_step", "best_rows_k", "pooled_speedup", "tree_speed", "expansion_width", "SizingPriors", "PRIORS",
    "Rate", "StepCost", "Costs", "measure_costs", "probe_costs", "pass_time", "widths_to", "measure_rows_costs", "probe_rows_costs",
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


# ---- sizing maths -------------------------------------------------------------------------------
#
# Units: one single-token target pass = 1. c = a single-token draft pass in those units; v(n) = a
# target pass over n new tokens (v(1) = 1; ~1 in the memory-bound regime, growing once the pass
# becomes compute-bound); vd(w) = a draft pass over w tokens in draft single-token passes.


class VerifyCost:
    """v(n) from measured ``{n: cost of an n-token pass / cost of a 1-token pass}``, piecewise
    linear between measured widths and extended linearly past the last two (never below 1).

    A pass over more tokens never costs less, so timings that say otherwise (a pass another
    process interrupted) are pooled into a non-decreasing fit first (pool adjacent violators)."""

    def __init__(self, measured: dict[int, float]):
        pts = {1: 1.0, **{int(n): float(r) for n, r in measured.items()}}
        self.ns = sorted(pts)
        self.rs = [max(1.0, r) for r in _non_decreasing([pts[n] for n in self.ns])]

    def __call__(self, n: int) -> float:
        ns, rs = self.ns, self.rs
        if n <= ns[0] or len(ns) == 1:
            return rs[0]
        i = next((j for j in range(1, len(ns)) if n <= ns[j]), len(ns) - 1)
        n0, n1, r0, r1 = ns[i - 1], ns[i], rs[i - 1], rs[i]
        return max(1.0, r0 + (r1 - r0) * (n - n0) / (n1 - n0))

    def wide(self, n: int) -> float:
        """v(n) for a pass that may lie far past the widest measured one (a draft catching up on
        prompts): there a pass costs at least its tokens' worth of the widest measured pass
        (compute-bound, cost per token grows with width), however flat the last two points ran."""
        return max(self(n), self.rs[-1] * n / self.ns[-1])

    def as_dict(self) -> dict[int, float]:
        return dict(zip(self.ns, self.rs))

    def describe(self, name: str = "v", sep: str = "=") -> str:
        """``"v(1)=1.00, v(2)=1.03, ..."``: the measured curve, for logs and reports."""
        return ", ".join(f"{name}({n}){sep}{r:.2f}" for n, r in self.as_dict().items())


def _non_decreasing(values: list[float]) -> list[float]:
    """Least-squares non-decreasing fit (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in values:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m1, c1), (m2, c2) = blocks[-2], blocks.pop()
            blocks[-1] = [(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2]
    return [m for m, c in blocks for _ in range(int(c))]


def _best_size(sizes, speedup) -> int:
    """The size with the largest predicted ``speedup(size)``; ties (to 12 places: float noise is no
    preference) go to the smaller size, which wastes less draft work when acceptance is overestimated."""
    return max(sizes, key=lambda n: (round(speedup(n), 12), -n))


def chain_speedup(alpha: float, k: int, c: float, v, scale: float = 1.0) -> float:
    """Leviathan et al. 2023, Thm. 3.8 with the measured verification cost in place of 1:

        speedup(k) = (1 - alpha^(k+1)) / ((1 - alpha) (k c + v(k+1)))

    (k draft passes of cost c, then one target pass over the root and k tokens). ``scale``: the
    draft tokens the target keeps per token this expects (:class:`~spsamp.drafting.sizing.ChainEstimate`'s
    calibration; at most k are kept)."""
    kept = min(float(k), scale * (float(expected_tokens_per_step(alpha, k)) - 1.0))
    return (1.0 + kept) / (k * c + v(k + 1))


def stopped_chain(k: int, c: float, v, alpha_sure: float, alpha_unsure: float, sure: float) -> tuple[float, float]:
    """A chain of at most k tokens that ends after the first draft token the draft is unsure of
    (``method.stop_below``): (predicted speedup, expected step cost in target single-token passes).

    Each draft token is sure (p_i(x_i) >= the stop) with probability ``sure`` and then accepted
    with probability ``alpha_sure``, else accepted with ``alpha_unsure`` (positions i.i.d., as in
    Thm. 3.8). Token i is drafted iff tokens 1..i-1 were all sure, and kept iff they were all sure
    and accepted and it is accepted itself, so with a = sure alpha_sure + (1 - sure) alpha_unsure:

        E[kept] = a sum_{i=1..k} (sure alpha_sure)^(i-1)      E[passes] = sum_{i=1..k} sure^(i-1)
        speedup = (1 + E[kept]) / (c E[passes] + E[v(L + 1)]),  P(L = i) = sure^(i-1) (1 - sure), i < k

    With sure = 1 this is :func:`chain_speedup`."""
    a = sure * alpha_sure + (1.0 - sure) * alpha_unsure
    kept = a * sum((sure * alpha_sure) ** i for i in range(k))
    passes = sum(sure**i for i in range(k))
    verify = sum(sure**i * (1.0 - sure) * v(i + 2) for i in range(k - 1)) + sure ** (k - 1) * v(k + 1)
    cost = c * passes + verify
    return (1.0 + kept) / cost, cost


def best_stopped_k(c: float, v, alpha_sure: float, alpha_unsure: float, sure: float, k_max: int = 16) -> tuple[int, float, float]:
    """The cap k in 1..k_max with the largest :func:`stopped_chain` speedup: (k, speedup, step
    cost). Ties go to the smaller k."""
    scores = {k: stopped_chain(k, c, v, alpha_sure, alpha_unsure, sure) for k in range(1, k_max + 1)}
    best = _best_size(scores, lambda k: scores[k][0])
    return best, *scores[best]


def pooled_speedup(speedups: list[float], step_costs: list[float]) -> float:
    """The predicted speedup of many steps together: their predicted tokens over their predicted
    cost, sum(s_i * cost_i) / sum(cost_i). What a run measures is all tokens over all time, which
    weighs each step by its cost; a plain mean of per-step speedups would weigh a cheap step as
    much as a dear one."""
    total = sum(step_costs)
    return sum(s * c for s, c in zip(speedups, step_costs)) / total if total > 0 else float("nan")


def best_k(alpha: float, c: float, v, k_max: int = 16, scale: float = 1.0) -> tuple[int, float]:
    """The k in 1..k_max with the largest :func:`chain_speedup`; (k, predicted speedup). Ties go
    to the smaller k (less draft work wasted when alpha is overestimated)."""
    best = _best_size(range(1, k_max + 1), lambda k: chain_speedup(alpha, k, c, v, scale))
    return best, chain_speedup(alpha, best, c, v, scale)


def rows_chain_step(alphas: list[float], rooms: list[int], k: int, c: float, v, vd, rows: int, first: int) -> tuple[float, float]:
    """One step of a batch of ``rows`` rows drafting chains of up to k tokens (:func:`spsamp.loop.speculate_rows`):
    (expected tokens over its live rows, cost in verify units). Live row i (acceptance ``alphas[i]``,
    room for ``rooms[i]`` draft tokens) drafts k_i = min(k, rooms[i]); the draft's first pass feeds
    each row the ``first`` tokens it has not seen (ending with its root), each later pass one, and
    the verify pass every row's root and d = max k_i columns. Every pass is priced by the tokens it
    feeds, whichever rows they belong to (a finished row's masked columns count too):

        E[tokens] = sum_i (1 - alpha_i^(k_i+1)) / (1 - alpha_i)
        cost      = c (vd(rows first) + (d - 1) vd(rows)) + v(rows (d + 1))     (d = 0: v(rows), no draft pass)"""
    ks = [min(k, r) for r in rooms]
    tokens = sum(k_i + 1.0 if a >= 1.0 else (1.0 - a ** (k_i + 1)) / (1.0 - a) for a, k_i in zip(alphas, ks))
    d = max(ks, default=0)
    draft = vd(rows * first) + (d - 1) * vd(rows) if d else 0.0
    return tokens, c * draft + v(rows * (d + 1))


def best_rows_k(alphas: list[float], rooms: list[int], c: float, v, vd, rows: int, first: int, k_max: int = 16) -> tuple[int, float, float]:
    """The k in 0..min(k_max, max room) with the most expected tokens per unit of cost
    (:func:`rows_chain_step`); (k, tokens, cost). k = 0 is a plain batched step: when no chain pays
    for its draft passes and its wider verify pass, the batch decodes plainly. Ties go to the smaller k."""
    top = min(k_max, max(rooms, default=0))
    steps = {k: rows_chain_step(alphas, rooms, k, c, v, vd, rows, first) for k in range(top + 1)}
    best = _best_size(steps, lambda k: steps[k][0] / steps[k][1])
    return best, *steps[best]


def tree_speed(values: list[float], spent: float, c: float, v, scale: float = 1.0) -> tuple[int, float]:
    """The best first ``m`` of a tree's nodes ranked best first (any such prefix is a tree): (m,
    predicted speedup) maximising

        (1 + scale * sum(values[:m])) / (c * spent + v(m + 1))     over m = 0..len(values)

    values: each node's chance of acceptance as the draft sees it (its path probability, the
    value SpecExec ranks by; Svirschevski et al. 2024, Sec. 3.1), scaled by ``scale`` to what
    the target accepts (``TreeSizer.calibration``); spent: the draft passes already paid for, in draft
    single-token passes (sunk: they do not depend on m); v(m + 1): verifying the root and m nodes."""
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
    should expand; 0 = stop growing (``method.grow=cost``).

    Myopic, like EAGLE-2's dynamic tree (Li et al. 2024, Sec. 4): the pass over the best m
    frontier nodes costs vd(m) more draft units and can add, at best, each node's likeliest child
    at ``child`` times its value (``child``: the mean top child probability seen so far); the m
    whose tree after the pass (the ``budget`` best of both) has the highest :func:`tree_speed`
    wins, and no m beats the tree as it stands when another pass cannot pay for itself."""
    _, best = tree_speed(values, spent, c, v, scale)
    best_m = 0
    for m in range(1, len(frontier) + 1):
        after = sorted(values + [x * child for x in frontier[:m]], reverse=True)[:budget]
        _, s = tree_speed(after, spent + vd(m), c, v, scale)
        if s > best:
            best_m, best = m, s
    return best_m


# ---- online estimates: what the run's own steps say ---------------------------------------------


@dataclass(frozen=True)
class SizingPriors:
    """Every prior, window and clamp of the online estimates (k=auto, grow=cost), in one place.

    Each estimate is a decayed ratio (:class:`Rate`): every step multiplies the past by ``decay``
    (0.9: the last ~10 steps carry most of the weight) and starts, at a row's first step, from
    its prior worth ``prior_steps`` observations — of a step for costs and overhead, of a tested
    token for acceptance. The priors are guesses; the run's steps overrule them within a few steps.
    """

    decay: float = 0.9
    prior_steps: float = 2.0  # acceptance priors' weight (tested tokens; tree calibration: units of draft expectation)
    cost_prior_steps: float = 2.0  # the probe's c and zero overhead: their weight (draft units; steps)
    alpha: float = 0.6  # P(the target keeps a chain's draft token) before any step
    unsure_alpha: float = 0.3  # the same for a token below method.stop_below (the one a stop expects to fail)
    sure: float = 0.8  # share of draft tokens at or above method.stop_below
    calibration: float = 1.0  # tree nodes: accepted tokens per unit of the draft's own path probability
    calibration_range: tuple[float, float] = (0.25, 4.0)  # its clamp: at T=0 the tree ranks by the draft's T=1 probabilities
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
    """What a step costs, in **verify units**: the run's seconds per unit of v(n) over its verify
    passes (decayed). v(1) = 1, so a verify unit is the run's estimate of T1, the seconds of a plain
    single-token target pass: what plain decoding pays per token, the yardstick of every speedup.

        cost(draft units d, verify width n) = c d + v(n) + overhead

    c: a single-token draft pass in verify units (the probe's c to start, then the run's own draft
    seconds per draft unit over the verify unit); a pass over w tokens is vd(w) draft units.
    overhead: a step's seconds outside both models' passes (acceptance, cache roll-back,
    bookkeeping) in verify units, from 0. Both are :class:`Rate`\\ s (:class:`SizingPriors`)."""

    def __init__(self, costs: "Costs", priors: SizingPriors = PRIORS):
        self.v, self.vd, self.c_probe = costs.v, costs.vd, costs.c
        self.unit = Rate(0.0, 0.0, priors.decay)  # verify seconds per v-unit: no prior, seconds are the machine's
        self.draft = Rate(costs.c, priors.cost_prior_steps, priors.decay)
        self.extra = Rate(0.0, priors.cost_prior_steps, priors.decay)

    def observe(self, draft_s: float, draft_units: float, target_s: float, width: int, overhead_s: float) -> None:
        """One step: seconds proposing (``draft_units`` of work), in the verify pass over ``width``
        tokens, and after it."""
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


_clock = time.perf_counter  # tests replace it with fake timings


@dataclass
class Costs:
    """Measured pass costs: c, v (target, n tokens / 1 token), vd (draft, w tokens / 1 token), and
    the seconds of the 1-token target pass they are relative to (to read timings in that unit)."""

    c: float
    v: VerifyCost
    vd: VerifyCost
    target_pass_s: float = float("nan")


def _sync(device) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)  # CUDA kernels run asynchronously: time their completion


def pass_time(lm, run: Callable[[], Any]) -> float:
    """Seconds of ``run()``, one pass of ``lm`` on top of its cache, cropped back after."""
    n = lm.cache_len
    _sync(lm.device)
    t0 = _clock()
    run()
    _sync(lm.device)
    dt = _clock() - t0
    lm.crop(n)
    return dt


def median_times(passes: dict[Any, tuple[Any, Callable[[], Any]]], repeats: int) -> dict[Any, float]:
    """``passes``: key -> (model, one pass of it). A warm-up round (allocations, oneDNN primitives),
    then ``repeats`` rounds each timing every pass (interleaved, so load from other processes hits
    every pass alike); the median seconds per key."""
    times: dict[Any, list[float]] = {key: [] for key in passes}
    for rnd in range(repeats + 1):
        for key, (lm, run) in passes.items():
            dt = pass_time(lm, run)
            if rnd:
                times[key].append(dt)
    return {key: statistics.median(x) for key, x in times.items()}


def measure_costs(target, draft, prompt_ids=None, widths=(1, 2, 4, 8, 16, 32, 64), draft_widths=(1, 2, 4, 8), repeats: int = 5) -> Costs:
    """Time target passes over ``widths`` new tokens and draft passes over ``draft_widths``
    (:func:`median_times`). With ``prompt_ids`` both models are prefilled on it first and left
    empty after; without, the passes run on top of whatever the caches hold and each is cropped back
    (so a decode in progress can measure in place). About 6 x (sum of the passes) — a few seconds on
    a CPU for a 1.5B target."""
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


PROBE_TOKENS = 64  # prompt length of the cost probe (:func:`probe_costs`)
# a batch's probe times one draft pass this wide (rows x columns): the draft's catch-up on the
# prompts is priced from it (a pass that wide costs about its tokens' worth; narrow passes do not)
CATCH_UP_TOKENS = 128
# target -> draft -> thread count (a batch's: (threads, "rows", rows, k_max)) -> costs, measured once
# per pair and thread count (a pass's seconds depend on the threads it runs on); weak keys: a freed model's entry goes with it
# (an id() key could be reused by the next model loaded and hand it the old pair's costs)
_PROBED: "weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[Any, dict[Any, Costs]]]" = weakref.WeakKeyDictionary()


def widths_to(n: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to the first power of two >= ``n``: the pass widths a probe times."""
    out = [1]
    while out[-1] < n:
        out.append(out[-1] * 2)
    return tuple(out)


def measure_rows_costs(target, draft, rows: int, single: Costs, columns=(1, 2, 4, 8, 16), draft_columns=(1, 2), repeats: int = 5) -> Costs:
    """The costs of a batch's passes: on a ``rows`` x ``PROBE_TOKENS`` random prompt in both models,
    passes of ``rows`` rows x m columns (target: m in ``columns``; draft: ``draft_columns``), timed as
    :func:`measure_costs` times them, in ``single``'s single-token passes (its ``target_pass_s``, and
    its draft pass = c of it). v and vd are keyed on the tokens a pass feeds, rows x m: the batch's
    points replace ``single``'s at and above ``rows`` tokens (a batch never feeds fewer), where a
    batch pass costs what it costs — its rows' separate caches, not one row's longer one."""
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


def probe_costs(target, draft) -> Costs:
    """:func:`measure_costs` on a random ``PROBE_TOKENS``-token prompt, once per (target, draft)
    pair and torch thread count per process: loaded models are memoised, so a sweep's jobs share one
    measurement (the decoders' ``prepare`` hook for k=auto and grow=cost)."""
    import torch

    per_key = _PROBED.setdefault(target, weakref.WeakKeyDictionary()).setdefault(draft, {})
    key = torch.get_num_threads()
    if key not in per_key:
        g = torch.Generator().manual_seed(0)
        probe = torch.randint(0, min(target.vocab_size, draft.vocab_size), (PROBE_TOKENS,), generator=g)
        per_key[key] = measure_costs(target, draft, probe)
    return per_key[key]


def probe_rows_costs(target, draft, rows: int, k_max: int) -> Costs:
    """:func:`probe_costs`, then a batch of ``rows`` rows' passes (:func:`measure_rows_costs`: verify
    passes of 1 .. k_max columns, powers of two, and k_max + 1; draft passes of 1 and 2 columns,
    and one of about ``CATCH_UP_TOKENS`` tokens that prices the draft catching up on the prompts),
    memoised as the probe is."""
    import torch

    single = probe_costs(target, draft)
    per_key = _PROBED[target][draft]
    key = (torch.get_num_threads(), "rows", rows, k_max)
    if key not in per_key:
        columns = tuple(sorted(set(widths_to(k_max)) | {k_max + 1}))
        wide = max(4, -(-CATCH_UP_TOKENS // rows))
        per_key[key] = measure_rows_costs(target, draft, rows, single, columns=columns, draft_columns=(1, 2, wide))
    return per_key[key]
