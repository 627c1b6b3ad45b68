"""The speculative-sampling cost model of Leviathan et al. 2023 ("Fast Inference from Transformers via
Speculative Decoding", ICML 2023), used to predict speedups from a measured acceptance rate.

Notation as in the paper: alpha = expected probability that the target accepts one draft token
(assumed i.i.d. across positions), k (the paper's gamma) = draft tokens proposed per step,
c = cost of one draft forward pass divided by the cost of one target forward pass.
Functions accept floats or numpy arrays (broadcast elementwise).

The second half chooses the draft length k (``method.k=auto``) and SpecExec's tree budget
(``method.budget=auto``) from the machine's measured costs (:func:`measure_costs`: c, and v(n), the
cost of verifying n tokens at once) and the acceptance observed so far (:class:`RankAcceptance`),
re-choosing every step (:class:`AutoSize`).
"""

from __future__ import annotations

import statistics
import time
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "expected_tokens_per_step", "predicted_speedup", "alpha_from_counts", "VerifyCost", "chain_speedup", "best_k",
    "best_tree", "best_trees", "positional_curves", "expected_tree_accepted", "tree_draft_cost", "tree_draft_passes", "tree_speedup", "best_budget",
    "stopped_chain", "best_stopped_k", "RankAcceptance", "LookupStates", "ConfidenceAcceptance", "AcceptedByBudget", "AutoSize", "tree_speed", "expansion_width", "Calibration", "Costs",
    "measure_costs", "probe_costs", "pass_time", "ObservedCost", "T1_EVERY", "plain_step", "scaled_verify",
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


# ---- choosing k and the tree budget from measured costs ----------------------------------------
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


def chain_speedup(alpha: float, k: int, c: float, v) -> float:
    """Leviathan et al. 2023, Thm. 3.8 with the measured verification cost in place of 1:

        speedup(k) = (1 - alpha^(k+1)) / ((1 - alpha) (k c + v(k+1)))

    (k draft passes of cost c, then one target pass over the root and k tokens)."""
    return float(expected_tokens_per_step(alpha, k)) / (k * c + v(k + 1))


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


def priced_t1(t1s: list[float | None], step_costs: list[float]) -> float | None:
    """The T1 (seconds) a row's steps were priced in, weighed as the row's time is (by each step's
    predicted cost); steps priced before T1 was timed (None) are left out; None if all were."""
    priced = [(t, c) for t, c in zip(t1s, step_costs) if t is not None]
    total = sum(c for _, c in priced)
    return sum(t * c for t, c in priced) / total if priced else None


def best_k(alpha: float, c: float, v, k_max: int = 16) -> tuple[int, float]:
    """The k in 1..k_max with the largest :func:`chain_speedup`; (k, predicted speedup). Ties go
    to the smaller k (less draft work wasted when alpha is overestimated)."""
    best = _best_size(range(1, k_max + 1), lambda k: chain_speedup(alpha, k, c, v))
    return best, chain_speedup(alpha, best, c, v)


def best_tree(rank_probs: list[float], budget: int, max_depth: int = 64) -> tuple[float, list[int]]:
    """The best ``budget``-node tree under positional acceptance: (expected accepted draft tokens,
    nodes per level [depth 1, depth 2, ...]).

    Model (Sequoia, Chen et al. 2024, Sec. 3.1, "positional acceptance"): at every node the
    target's token is the draft's r-th most likely child with probability ``rank_probs[r-1]``,
    independently of depth. A node is accepted iff every edge on its path is, so its value is the
    product of its edges' rank probabilities and E[accepted] = sum of the tree's node values.
    Children are worth no more than their parent, so the ``budget`` largest values form a tree:
    growing best-first (SpecExec's rule, Svirschevski et al. 2024, Alg. 2) is optimal here. With a
    single rank probability alpha and max_depth = budget this is the chain: alpha + ... + alpha^B.
    """
    trees = best_trees(rank_probs, budget, max_depth)
    return trees[-1] if trees else (0.0, [])


def best_trees(rank_probs: list[float], budget_max: int, max_depth: int = 64) -> list[tuple[float, list[int]]]:
    """:func:`best_tree` for every budget 1..budget_max at once (list index b - 1; shorter when
    no more nodes have value): best-first growth makes each the first nodes of the next."""
    import heapq

    probs = [float(p) for p in rank_probs if p > 0]
    heap = [(-p, 1) for p in probs]  # (-value, depth) of candidate nodes
    heapq.heapify(heap)
    total, levels, out = 0.0, [], []
    for _ in range(budget_max):
        if not heap:
            break
        neg, depth = heapq.heappop(heap)
        total += -neg
        levels = levels + [0] * (depth - len(levels))
        levels[depth - 1] += 1
        out.append((total, list(levels)))
        if depth < max_depth:
            for p in probs:
                heapq.heappush(heap, (neg * p, depth + 1))
    return out


def expected_tree_accepted(rank_probs: list[float], budget: int, max_depth: int = 64) -> float:
    """Expected accepted draft tokens of the best ``budget``-node tree (:func:`best_tree`)."""
    return best_tree(rank_probs, budget, max_depth)[0]


def tree_draft_cost(levels: list[int], width: int, vd=None) -> float:
    """Draft forwards to grow a tree with ``levels`` nodes per depth, in draft single-token passes.

    spsamp.drafting.tree deepens the tree one level per batched pass of up to ``width`` nodes: the
    root pass, then every level but the deepest (its nodes are the tree's least likely, whose
    children cannot get in) expanded ``width`` nodes at a time; a pass over w nodes costs vd(w)
    (default 1 per pass: :func:`tree_draft_passes`)."""
    w = max(1, width)
    cost = 1.0
    for n in levels[:-1]:
        full, rest = divmod(n, w)
        cost += full * (vd(w) if vd else 1.0) + ((vd(rest) if vd else 1.0) if rest else 0.0)
    return cost


def tree_draft_passes(levels: list[int], width: int) -> int:
    """Draft forwards for a tree with ``levels`` nodes per depth (:func:`tree_draft_cost`)."""
    return int(tree_draft_cost(levels, width))


def tree_speedup(rank_probs: list[float], budget: int, c: float, v, width: int = 1, max_depth: int = 64, vd=None,
                 accepted=None, draft_cost=None) -> float:
    """Predicted speedup of SpecExec with a ``budget``-node tree over plain decoding:

        (1 + E[accepted](budget)) / (c D(budget) + v(budget + 1))

    D = the tree's draft passes in draft single-token units (:func:`tree_draft_cost`; vd: a
    w-token draft pass over a 1-token one, default v's shape, both models being memory-bound
    alike). E[accepted] and D come from ``accepted(budget)`` / ``draft_cost(budget)`` when given
    (:class:`AcceptedByBudget`: the trees actually built), else from the best tree under
    positional acceptance (:func:`best_tree`)."""
    if accepted is None or draft_cost is None:
        gain, levels = best_tree(rank_probs, budget, max_depth)
        accepted = accepted or (lambda _: gain)
        draft_cost = draft_cost or (lambda _: tree_draft_cost(levels, width, vd or v))
    return (1.0 + accepted(budget)) / (c * draft_cost(budget) + v(budget + 1))


def positional_curves(rank_probs: list[float], budget_max: int, max_depth: int, width: int, vd) -> tuple:
    """(E[accepted](b), draft cost(b)) of the best b-node trees under positional acceptance
    (:func:`best_tree`, :func:`tree_draft_cost`), every budget up to ``budget_max`` from one growth."""
    trees = best_trees(rank_probs, budget_max, max_depth)
    tree = lambda b: trees[min(b, len(trees)) - 1] if trees else (0.0, [])  # noqa: E731
    return (lambda b: tree(b)[0]), (lambda b: tree_draft_cost(tree(b)[1], width, vd))


def best_budget(rank_probs: list[float], c: float, v, width: int = 1, max_depth: int = 64, budget_max: int = 64, vd=None,
                accepted=None, draft_cost=None) -> tuple[int, float]:
    """The budget in 1..budget_max with the largest :func:`tree_speedup`; (budget, predicted)."""
    if accepted is None or draft_cost is None:
        prior_accepted, prior_cost = positional_curves(rank_probs, budget_max, max_depth, width, vd or v)
        accepted, draft_cost = accepted or prior_accepted, draft_cost or prior_cost
    scores = {b: tree_speedup(rank_probs, b, c, v, width, max_depth, vd, accepted, draft_cost) for b in range(1, budget_max + 1)}
    best = _best_size(scores, scores.__getitem__)
    return best, scores[best]


def tree_speed(values: list[float], spent: float, c: float, v, scale: float = 1.0) -> tuple[int, float]:
    """The best first ``m`` of a tree's nodes ranked best first (any such prefix is a tree): (m,
    predicted speedup) maximising

        (1 + scale * sum(values[:m])) / (c * spent + v(m + 1))     over m = 0..len(values)

    values: each node's chance of acceptance as the draft sees it (its path probability, the
    value SpecExec ranks by; Svirschevski et al. 2024, Sec. 3.1), scaled by ``scale`` to what
    the target accepts (:class:`Calibration`); spent: the draft passes already paid for, in draft
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


class Calibration:
    """What the target accepted per unit of what the draft expected: decayed sums of accepted draft
    tokens and of the verified trees' values (:func:`tree_speed`'s ``scale``). It starts at
    ``prior`` with the weight of ``prior_weight`` steps and is kept within [1/4, 4]: at T=0 the
    tree ranks by the draft's T=1 probabilities, which are not the target's greedy agreement."""

    def __init__(self, prior: float = 1.0, prior_weight: float = 2.0, decay: float = 0.9):
        self.decay = decay
        self.accepted, self.expected = prior * prior_weight, prior_weight

    def observe(self, expected: float, accepted: int) -> None:
        self.accepted = self.accepted * self.decay + accepted
        self.expected = self.expected * self.decay + expected

    @property
    def scale(self) -> float:
        return min(4.0, max(0.25, self.accepted / self.expected)) if self.expected > 0 else 1.0


# the sized drafters (k=auto, grow=cost) make a job's first step and every T1_EVERY-th after it a
# plain one: its single-token target pass re-times the unit every cost is priced in
# (ObservedCost.observe_t1) — from the start, since a coding answer of 128 tokens takes ~13 steps. A
# plain step keeps one token where a step keeps ~3-11, so it costs ~1 % of a run.
T1_EVERY = 32


def plain_step(step: int, every: int) -> bool:
    """Whether a job's ``step``-th sized step (from 1) is a plain one that re-times T1 (never if every = 0)."""
    return every > 0 and step % every == 1 % every


def scaled_verify(v, scale: float, rest: float = 0.0):
    """v(n) as a step pays it now: every verify pass (n > 1) priced ``scale`` times the probe's
    (ObservedCost.verify_scale) plus ``rest``, the loop's own work of a speculative step in T1
    (ObservedCost.rest: acceptance, cache upkeep, bookkeeping), which rides on its one verify pass."""
    if scale == 1.0 and rest == 0.0:
        return v
    return lambda n: v(n) * scale + rest if n > 1 else v(n)


class ObservedCost:
    """c as the run itself measures it: the draft's seconds per draft unit (single-token pass
    equivalents, wider passes at vd(w)) over the target's seconds per verify unit (v(n) for an
    n-token pass), decayed per step. The probe (:func:`probe_costs`) times bare forwards on a short
    prompt once per job; a decode also pays drafting's own work (probabilities, sampling, tree
    bookkeeping), attends over a longer cache, and may run beside another process — measured on
    the real pair, the drafting steps cost 10-20 % more than the probe's c said. Trusted from
    ``min_weight`` steps on, and kept within [1/2, 2] of the probe's c, so one disturbed step
    cannot swing the choice.

    The time unit itself, T1 (one single-token target pass: what plain decoding pays a token), is
    the probe's too, and on a machine whose speed drifts (30 % within an hour, measured) verify
    passes the probe priced at v(n) can cost more or less than v(n) T1 *now*. A run that also times
    some plain single-token target passes (:meth:`observe_t1`: k=auto and grow=cost take a plain
    step now and then, :func:`plain_step`) measures both in the same minutes: c is then the draft's
    seconds per unit over the run's T1, and :meth:`verify_scale` the run's verify seconds per v-unit
    over its T1 (1 until T1 is seen).

    A plain step is one pass, though, and one pass varies by ±10 % (sd; measured on the real pair,
    66 single-token passes) with a rare far outlier (1.4-1.5x, twice in 30 plain passes of one run),
    while the verify passes, seen every step, follow the machine's drift closely. So T1 is the
    verify unit *now* times the ratio of a plain pass to the verify unit in the minutes it ran: drift
    moves both and cancels in the ratio, and the ratio is not assumed to be 1 (on the coding rows of
    the real pair plain passes cost 0.86-0.99 (means by row) of the verify unit: the run's verify passes cost more
    per v-unit than the probe's v(n) said, at long caches and 10-17 tokens a pass; a T1 pooled from
    both, as before, read that much above plain decoding's token, and every prediction with it;
    docs/benchmarks/speed_by_measurement.md section 21). The ratio is the median of the last
    ``window`` plain passes' and the probe's (:meth:`observe_probe`: its 1-token pass is a median of
    five, so it counts twice): one outlying pass cannot move it. Plain passes timed before the verify
    unit is trusted are paired with its first trusted value; before that, T1 is their median with
    the probe's.

    A speculative step also does work outside both models' passes — the acceptance rule, rolling
    caches back, bookkeeping: :meth:`observe_rest` takes its seconds (the loop times them after
    the verify pass) and :meth:`rest` prices it in T1, 0.01-0.07 T1 a step on the real pair."""

    def __init__(self, decay: float = 0.9, min_weight: float = 3.0, window: int = 8):
        self.decay, self.min_weight, self.window = decay, min_weight, window
        self.draft_s = self.draft_units = self.target_s = self.verify_units = self.weight = 0.0
        self.probe_s: float | None = None  # the cost probe's 1-token target pass (seconds)
        self.probe_ratio: float | None = None  # it over the first trusted verify unit
        self.ratios: list[float] = []  # the last `window` plain passes over the verify unit when each ran
        self.unpaired: list[float] = []  # plain passes timed before the verify unit was trusted (the last `window`)
        self.rest_s = self.rest_weight = 0.0  # speculative steps' seconds outside the passes, decayed per step

    def verify_unit(self) -> float | None:
        """The run's verify seconds per v-unit (decayed over the last steps), once trusted."""
        if self.weight < self.min_weight or self.verify_units <= 0:
            return None
        return self.target_s / self.verify_units

    def observe(self, draft_s: float, draft_units: float, target_s: float, verify_units: float) -> None:
        """One step: seconds proposing and the draft units the probe prices them at; seconds
        verifying and the verify units (v(n)) the probe prices that pass at."""
        if min(draft_s, draft_units, target_s, verify_units) <= 0:
            return  # an empty proposal or a clock that did not move: nothing to learn
        d = self.decay
        self.draft_s, self.draft_units = self.draft_s * d + draft_s, self.draft_units * d + draft_units
        self.target_s, self.verify_units = self.target_s * d + target_s, self.verify_units * d + verify_units
        self.weight = self.weight * d + 1.0
        unit = self.verify_unit()
        if unit is not None:
            if self.probe_s is not None and self.probe_ratio is None:
                self.probe_ratio = self.probe_s / unit
            waiting, self.unpaired = self.unpaired, []
            for seconds in waiting:
                self.observe_t1(seconds)

    def observe_probe(self, seconds: float) -> None:
        """The cost probe's 1-token target pass (a job's start; a median of five): one more plain pass, counted twice."""
        if not seconds > 0:  # NaN: no probe timing
            return
        self.probe_s, self.probe_ratio = seconds, None
        unit = self.verify_unit()
        if unit is not None:
            self.probe_ratio = seconds / unit

    def observe_t1(self, seconds: float) -> None:
        """One plain single-token target pass, timed in the run (the unit every cost is priced in)."""
        if seconds <= 0:
            return
        unit = self.verify_unit()
        if unit is None:
            self.unpaired = (self.unpaired + [seconds])[-self.window :]
        else:
            self.ratios = (self.ratios + [seconds / unit])[-self.window :]

    def observe_rest(self, seconds: float) -> None:
        """One speculative step's seconds outside both models' passes (spsamp.loop.Decoding.rest_s)."""
        if seconds < 0:
            return
        self.rest_s = self.rest_s * self.decay + seconds
        self.rest_weight = self.rest_weight * self.decay + 1.0

    def t1(self) -> float | None:
        """The run's seconds per single-token target pass: the verify unit now times the median
        ratio of plain passes (and the probe's, twice) to it, once both are seen; before, the median
        of the plain passes and the probe's; None before a plain pass was timed."""
        unit = self.verify_unit()
        if unit is not None and self.ratios:
            probe = [self.probe_ratio] * 2 if self.probe_ratio is not None else []
            return unit * statistics.median(self.ratios + probe)
        if not self.unpaired:
            return None
        return statistics.median(self.unpaired + ([self.probe_s] * 2 if self.probe_s is not None else []))

    def _unit(self) -> float:
        return self.t1() or self.target_s / self.verify_units

    def c(self, probe: float) -> float:
        """The c to size the next step with: the run's own once trusted, else the probe's."""
        if self.weight < self.min_weight:
            return probe
        seen = (self.draft_s / self.draft_units) / self._unit()
        return min(2.0 * probe, max(0.5 * probe, seen))

    def verify_scale(self) -> float:
        """The run's verify seconds per v-unit over its own T1, within [1/2, 2]: what a verify pass
        the probe priced at v(n) costs now, per v(n). 1 until both are seen."""
        t1, unit = self.t1(), self.verify_unit()
        if t1 is None or unit is None:
            return 1.0
        return min(2.0, max(0.5, unit / t1))

    def plain_trace(self, seconds: float) -> str:
        """A plain pass beside the verify unit it is paired with and the T1 it makes, for a debug trace."""
        unit, t1 = self.verify_unit(), self.t1()
        return (f"pass {seconds * 1e3:.1f} ms, verify unit {f'{unit * 1e3:.1f}' if unit else '-'} ms, "
                f"T1 {f'{t1 * 1e3:.1f}' if t1 else '-'} ms")

    def rest(self) -> float:
        """A speculative step's loop work outside the passes, in T1 (0 until trusted)."""
        if self.rest_weight < self.min_weight or self.weight < self.min_weight:
            return 0.0
        return (self.rest_s / self.rest_weight) / self._unit()


class RankAcceptance:
    """Acceptance observed so far: P(target token = the draft's r-th child), r = 1..max_rank.

    Counts are exponentially decayed per visited node (``decay``), so the estimate follows a run whose
    prompts change character, and start from a prior worth ``prior_weight`` tests per rank
    (``prior_alpha`` for rank 1, geometrically less for later ranks). A visited node with m
    children in the proposal tested ranks 1..m; the target's token hit at most one of them. For a
    chain every node has one child, and rank 1 is alpha of :func:`alpha_from_counts`.
    """

    def __init__(self, max_rank: int = 8, prior_alpha: float = 0.6, prior_weight: float = 2.0, decay: float = 0.98):
        self.decay = decay
        self.tests = [prior_weight] * max_rank
        self.hits = [prior_weight * prior_alpha * (1 - prior_alpha) ** r for r in range(max_rank)]
        self.observed = 0  # nodes seen (not decayed)

    def observe(self, visits: list[tuple[int, int | None]]) -> None:
        """One step: for each node the descent visited, (children it had, 1-based rank hit or None)."""
        for n_children, hit in visits:
            # decay per tested node, not per step: a long chain must not outweigh a short one
            self.tests = [t * self.decay for t in self.tests]
            self.hits = [h * self.decay for h in self.hits]
            for r in range(min(n_children, len(self.tests))):
                self.tests[r] += 1.0
            if hit is not None and hit <= len(self.hits):
                self.hits[hit - 1] += 1.0
            self.observed += 1

    def observe_chain(self, proposed: int, accepted: int) -> None:
        """A chain step that kept ``accepted`` of ``proposed`` tokens (a rejection tests one more)."""
        visits: list[tuple[int, int | None]] = [(1, 1)] * accepted
        if accepted < proposed:
            visits.append((1, None))
        self.observe(visits)

    def probs(self) -> list[float]:
        return [h / t if t > 0 else 0.0 for h, t in zip(self.hits, self.tests)]

    @property
    def alpha(self) -> float:
        return self.probs()[0]


class ConfidenceAcceptance:
    """What a confidence-stopped chain (:func:`stopped_chain`) needs, observed so far: the share of
    draft tokens the draft was sure of, and the acceptance of sure and of unsure tokens. Decayed per
    token like :class:`RankAcceptance`, from priors worth ``prior_weight`` tokens each (an unsure
    token starts at half the sure one's acceptance: it is the one a stop expects to fail)."""

    def __init__(self, prior_alpha: float = 0.6, prior_sure: float = 0.8, prior_weight: float = 2.0, decay: float = 0.98):
        self.decay = decay
        self.drafted, self.sure_drafted = prior_weight, prior_weight * prior_sure
        self.tests = [prior_weight, prior_weight]  # [sure, unsure]
        self.hits = [prior_weight * prior_alpha, prior_weight * prior_alpha / 2]

    def observe(self, sure: list[bool], kept: int) -> None:
        """One step: whether the draft was sure of each token it drafted, and how many the target
        kept (the first ``kept`` were accepted; the next, if any, was tested and rejected)."""
        for i, s in enumerate(sure):
            d = self.decay
            self.drafted, self.sure_drafted = self.drafted * d + 1.0, self.sure_drafted * d + float(s)
            self.tests, self.hits = [t * d for t in self.tests], [h * d for h in self.hits]
            if i <= kept:  # tested: accepted (i < kept) or the first rejection (i == kept)
                self.tests[0 if s else 1] += 1.0
                self.hits[0 if s else 1] += float(i < kept)

    @property
    def sure(self) -> float:
        return self.sure_drafted / self.drafted

    @property
    def alphas(self) -> tuple[float, float]:
        """(acceptance of sure tokens, of unsure tokens)."""
        return self.hits[0] / self.tests[0], self.hits[1] / self.tests[1]


class LookupStates:
    """What a lookup cascade's chain (``method.lookup``, spsamp.drafting.chain) costs and keeps, by
    the state a step begins in: 1 if the text so far continues an earlier n-gram (a guess in hand),
    else 0. An answer that restates its prompt is cheap to draft (its guesses are kept: ~0.3 draft
    passes per token, measured) and the target accepts nearly all of it; the new code after it is
    neither, and one estimate decayed over the last steps lags every switch between the two.

    Per state, decayed per step (``decay``): draft units per drafted token (passes at vd(1 + guess),
    :class:`ObservedCost`'s unit, so c stays the machine's and this the text's share of it) and the
    target's per-token acceptance. A state is trusted from ``min_steps`` steps on; before, a step
    with no guess in hand is priced as a plain chain (1 unit a token: its first pass has nothing to
    check, and an answer's first misses come after restated text whose pooled figure is far
    cheaper), one with a guess at the figures of all steps together (1 before any), and both at
    the pooled acceptance."""

    def __init__(self, decay: float = 0.9, min_steps: float = 3.0):
        self.decay, self.min_steps = decay, min_steps
        # key None: every state together; per key decayed [draft units, drafted tokens, steps]
        self.sums: dict[int | None, list[float]] = {s: [0.0, 0.0, 0.0] for s in (None, 0, 1)}
        self.acceptance = {0: RankAcceptance(max_rank=1), 1: RankAcceptance(max_rank=1)}

    def observe(self, state: int, units: float, tokens: int, visits: list[tuple[int, int | None]]) -> None:
        """One step begun in ``state``: its chain of ``tokens`` cost ``units`` draft units, and the
        target's descent visited ``visits`` (:func:`spsamp.drafting.autosize.tree_visits`)."""
        if tokens < 1 or units <= 0:
            return
        for key in (None, state):
            u, t, n = self.sums[key]
            self.sums[key] = [u * self.decay + units, t * self.decay + tokens, n * self.decay + 1.0]
        self.acceptance[state].observe(visits)

    def trusted(self, state: int) -> bool:
        return self.sums[state][2] >= self.min_steps

    def units_per_token(self, state: int | None) -> float:
        """Draft units per drafted token in ``state`` (while it is untrusted: 1 for state 0, all
        states' figure for 1 or None; 1 before any step)."""
        if state == 0 and not self.trusted(0):
            return 1.0
        key = state if state is not None and self.trusted(state) else None
        u, t, _ = self.sums[key]
        return u / t if t > 0 else 1.0

    def alpha(self, state: int | None, pooled: float) -> float:
        """The target's acceptance in ``state``, or ``pooled`` while it is untrusted."""
        return self.acceptance[state].alpha if state is not None and self.trusted(state) else pooled

    def metrics(self, states: list[int | None]) -> dict[str, float | None]:
        """For a record: the share of ``states`` (the row's sized steps) begun with a guess in hand,
        and each trusted state's units per token and acceptance."""
        out: dict[str, float | None] = {"auto_lookup_share": sum(s == 1 for s in states) / len(states) if states else None}
        for state, name in ((1, "hit"), (0, "miss")):  # None (null in JSON) while untrusted
            out[f"auto_units_per_token_{name}"] = self.units_per_token(state) if self.trusted(state) else None
            out[f"auto_alpha_{name}"] = self.acceptance[state].alpha if self.trusted(state) else None
        return out


class AcceptedByBudget:
    """E[accepted draft tokens per step] and the draft cost of a tree, as functions of the budget,
    from the trees actually built.

    The positional model (:func:`best_tree`) values the *best* tree; SpecExec's drafter keeps the
    nodes most likely under the *draft*, which the target does not follow as often (measured: the
    positional prediction 114 % above the speed it ran at). The drafter gives a free counterfactual
    instead: a smaller budget builds the first nodes of a larger budget's tree
    (spsamp.drafting.tree), and the descent samples from the target (spsamp.acceptance.tree), so a
    step that built n nodes and kept the path i_1 < i_2 < ... (node indices) would have kept
    #{j : i_j < b} with budget b <= n, and its first b nodes' levels give that tree's draft cost
    (``draft_cost(levels)``, :func:`tree_draft_cost`).

    Estimates are decayed per step (``decay``) and trusted from ``min_weight`` steps on. Past the
    largest trusted budget n the curves are the priors scaled to agree at n, so larger trees look
    worth trying until tried — the choice explores, then corrects itself.
    """

    def __init__(self, size_max: int, draft_cost=None, decay: float = 0.95, min_weight: float = 3.0):
        self.decay, self.min_weight = decay, min_weight
        self.draft_cost = draft_cost or (lambda levels: tree_draft_cost(levels, 1))
        self.sums = [0.0] * (size_max + 1)  # index b: decayed sum of accepted-with-budget-b
        self.costs = [0.0] * (size_max + 1)  # index b: decayed sum of the b-node tree's draft cost
        self.weights = [0.0] * (size_max + 1)
        self.spent = self.estimated = 0.0  # decayed sums: draft cost spent, and estimated from levels

    def observe(self, path: list[int], depths: list[int], spent: float | None = None) -> None:
        """One step: the accepted node indices (increasing) of a tree whose nodes had ``depths``,
        and what its draft passes really cost (``spent``, in the units of ``draft_cost``): the
        level count misses passes spent on nodes that did not make the tree, so every estimate
        is scaled by spent / estimate of the trees built (decayed like the rest)."""
        self.sums = [x * self.decay for x in self.sums]
        self.costs = [x * self.decay for x in self.costs]
        self.weights = [w * self.decay for w in self.weights]
        levels: list[int] = []
        estimate = 0.0
        for b in range(1, min(len(depths), len(self.sums) - 1) + 1):
            d = depths[b - 1]
            levels += [0] * (d - len(levels))
            levels[d - 1] += 1
            estimate = self.draft_cost(levels)
            self.weights[b] += 1.0
            self.sums[b] += sum(1 for i in path if i < b)
            self.costs[b] += estimate
        if spent is not None and estimate > 0:
            self.spent, self.estimated = self.spent * self.decay + spent, self.estimated * self.decay + estimate

    @property
    def cost_scale(self) -> float:
        """Draft cost really spent / estimated from levels, over the trees built (1 before any)."""
        return self.spent / self.estimated if self.estimated > 0 else 1.0

    def known(self) -> int:
        """The largest budget with ``min_weight`` steps of evidence (0: none yet)."""
        return max((b for b, w in enumerate(self.weights) if b and w >= self.min_weight), default=0)

    def curve(self, prior) -> list[float]:
        """[E[accepted](b) for b = 0..size_max]: observed up to :meth:`known`, non-decreasing (a
        larger tree holds the smaller), ``prior(b)`` scaled to agree past it."""
        return self._curve(self.sums, prior)

    def cost_curve(self, prior) -> list[float]:
        """[draft cost of the b-node tree for b = 0..size_max], as :meth:`curve`, times :attr:`cost_scale`."""
        return [x * self.cost_scale for x in self._curve(self.costs, prior)]

    def _curve(self, sums: list[float], prior) -> list[float]:
        n = self.known()
        out = [0.0]
        for b in range(1, len(sums)):
            if b <= n:
                out.append(max(out[-1], sums[b] / self.weights[b]))
            elif n == 0:
                out.append(prior(b))
            else:
                p_n = prior(n)
                out.append(max(out[-1], prior(b) * out[n] / p_n if p_n > 0 else out[n]))
        return out


class AutoSize:
    """``method.k=auto`` / ``method.budget=auto``: before each step, the size that maximises the
    predicted speedup under the measured costs and the acceptance observed so far; after it, the
    step's outcome. ``tree=False``: a chain (best :func:`chain_speedup`; with ``stop``, the cap of a
    confidence-stopped chain, best :func:`stopped_chain`); ``tree=True``: a best-first tree grown
    ``width`` nodes per draft pass (best :func:`tree_speedup`)."""

    def __init__(self, c: float, v: VerifyCost, size_max: int, tree: bool = False, width: int = 1, max_depth: int = 64,
                 vd: VerifyCost | None = None, acceptance: RankAcceptance | None = None, observed: ObservedCost | None = None,
                 stop: bool = False, confidence: ConfidenceAcceptance | None = None, t1_every: int = 0,
                 lookup: LookupStates | None = None):
        self.c, self.v, self.vd = c, v, vd
        self.c_probe = c  # the probe's; self.c is what the last choice used (corrected by `observed`)
        self.observed = observed or ObservedCost()
        self.size_max, self.tree, self.width, self.max_depth = size_max, tree, width, max_depth
        self.acceptance = acceptance or RankAcceptance(max_rank=8 if tree else 1)
        # a chain with a confidence stop (method.stop_below): k is its cap, priced by stopped_chain
        self.confidence = (confidence or ConfidenceAcceptance()) if stop and not tree else None
        # a lookup cascade's chain (method.lookup): its cost per token and acceptance by lookup state
        self.lookup = lookup if not tree else None
        # the tree's accepted length and draft cost, as built
        self.built = AcceptedByBudget(size_max, lambda levels: tree_draft_cost(levels, width, vd or v)) if tree else None
        self.chosen: list[int] = []
        self.states: list[int | None] = []  # the lookup state each choice began in
        self.t1s: list[float | None] = []  # the run's T1 (seconds) each choice was priced in
        self.predicted: list[float] = []
        self.step_costs: list[float] = []  # each choice's predicted step cost, in target single-token passes
        # the first step and every t1_every-th after it are plain ones (size 0: the target's own token,
        # exact as any step) whose single-token pass re-times T1 in the run (ObservedCost.observe_t1); 0: never
        self.t1_every, self.calls = t1_every, 0
        self.t1_at: list[int] = []  # len(self.chosen) at each such step
        self.v_scale = 1.0  # what the last choice multiplied v(n > 1) by (ObservedCost.verify_scale)
        self.rest = 0.0  # what the last choice added to a step for the loop's own work, in T1 (ObservedCost.rest)

    def choose(self, state: int | None = None, room: int | None = None) -> int:
        """The next step's size; ``state``: the lookup state it begins in (:class:`LookupStates`);
        ``room``: the most draft tokens the step can still use (the row's token cap; None: no cap).
        A chain is sized and priced within the room, so a row's last step is predicted as the
        short step it is; with no room the step is a plain one (as the loop then takes it)."""
        self.calls += 1
        if plain_step(self.calls, self.t1_every) or (room is not None and room < 1):
            self.t1_at.append(len(self.chosen))
            return 0
        k_max = self.size_max if room is None or self.tree else min(self.size_max, room)
        self.c = self.observed.c(self.c_probe)
        self.v_scale = scale = self.observed.verify_scale()
        self.rest = self.observed.rest()
        v = scaled_verify(self.v, scale, self.rest)
        if self.tree:
            probs = self.acceptance.probs()
            prior_accepted, prior_cost = positional_curves(probs, self.size_max, self.max_depth, self.width, self.vd or self.v)
            gain, dcost = self.built.curve(prior_accepted), self.built.cost_curve(prior_cost)
            # explore at most twice the largest budget on record: an optimistic prior must not buy
            # a 50-node tree on one step's say-so
            known = self.built.known()
            size, pred = best_budget(probs, self.c, v, self.width, self.max_depth,
                                     min(self.size_max, 2 * known) if known else self.size_max, self.vd,
                                     gain.__getitem__, dcost.__getitem__)
            cost = self.c * dcost[size] + v(size + 1)
        else:
            # a drafted token costs c (a single-token draft pass) times the draft units a token takes
            # (1 for a plain chain; fewer where lookup guesses ride along)
            alpha, per_token = self.acceptance.alpha, self.c
            if self.lookup is not None:
                alpha, per_token = self.lookup.alpha(state, alpha), self.c * self.lookup.units_per_token(state)
            if self.confidence is not None:
                size, pred, cost = best_stopped_k(per_token, v, *self.confidence.alphas, self.confidence.sure, k_max)
            else:
                size, pred = best_k(alpha, per_token, v, k_max)
                cost = size * per_token + v(size + 1)
        self.chosen.append(size)
        self.states.append(state)
        self.t1s.append(self.observed.t1())
        self.predicted.append(pred)
        self.step_costs.append(cost)
        return size

    def metrics(self, since: int = 0, t1_since: int = 0) -> dict[str, float | int | dict]:
        """What was chosen (sized steps from the ``since``-th on, plain ones from the
        ``t1_since``-th on: a row's first of each), for a record's ``metrics_json``."""
        sizes, preds, costs = self.chosen[since:], self.predicted[since:], self.step_costs[since:]
        if not sizes:
            return {}
        t1_steps = len(self.t1_at) - t1_since
        t1 = self.observed.t1()
        name = "budget" if self.tree else "k"
        hist: dict[str, int] = {}
        for s in sizes:
            hist[str(s)] = hist.get(str(s), 0) + 1
        extra: dict[str, float | None] = {}  # what the chain's options add
        if self.confidence is not None:
            a_sure, a_unsure = self.confidence.alphas
            extra = {"auto_sure": self.confidence.sure, "auto_alpha_sure": a_sure, "auto_alpha_unsure": a_unsure}
        if self.lookup is not None:
            extra.update(self.lookup.metrics(self.states[since:]))
        # the prediction split into its terms, per step (plain steps: one token for one T1), so a
        # report can pool rows and say whether the tokens or the cost were misjudged
        steps = len(sizes) + t1_steps
        tokens = sum(p * c for p, c in zip(preds, costs)) + t1_steps
        return {
            **extra,
            "auto_steps": steps,
            "auto_predicted_step_tokens": tokens / steps,
            "auto_predicted_step_cost": (sum(costs) + t1_steps) / steps,
            f"auto_{name}_mean": sum(sizes) / len(sizes),
            f"auto_{name}_last": sizes[-1],
            f"auto_{name}_hist": hist,
            # a plain step is predicted as what it is: one token for one T1
            "auto_predicted_speedup": pooled_speedup(preds + [1.0] * t1_steps, costs + [1.0] * t1_steps),
            "auto_t1_steps": t1_steps,
            "auto_t1_s": t1,
            "auto_t1_mean_s": priced_t1(self.t1s[since:], costs),
            "auto_verify_scale": self.v_scale,
            "auto_rest": self.rest,
            "auto_alpha": self.acceptance.alpha,
            "auto_c": self.c,
            "auto_c_probe": self.c_probe,
        }


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


def pass_time(lm, ids, width: int) -> float:
    """Seconds of one pass of ``lm`` over ``ids[:width]`` on top of its cache, cropped back after."""
    n = lm.cache_len
    _sync(lm.device)
    t0 = _clock()
    lm.forward(ids[:width])
    _sync(lm.device)
    dt = _clock() - t0
    lm.crop(n)
    return dt


def measure_costs(target, draft, prompt_ids=None, widths=(1, 2, 4, 8, 16, 32, 64), draft_widths=(1, 2, 4, 8), repeats: int = 5) -> Costs:
    """Time target passes over ``widths`` new tokens and draft passes over ``draft_widths``: one
    warm-up round, then ``repeats`` rounds each timing every width of both models (interleaved, so
    load from other processes hits target and draft alike), medians compared. With ``prompt_ids``
    both models are prefilled on it first and left empty after; without, the passes run on top of
    whatever the caches hold and each is cropped back (so a decode in progress can measure in
    place). About 6 x (sum of the passes) — a few seconds on a CPU for a 1.5B target."""
    import torch

    g = torch.Generator().manual_seed(0)
    new = torch.randint(0, min(target.vocab_size, draft.vocab_size), (max(max(widths), max(draft_widths)),), generator=g)
    if prompt_ids is not None:
        target.prefill(prompt_ids)
        draft.prefill(prompt_ids)
    t: dict[int, list[float]] = {w: [] for w in widths}
    d: dict[int, list[float]] = {w: [] for w in draft_widths}
    for rnd in range(repeats + 1):  # round 0 warms up (allocations, oneDNN primitives)
        for lm, widths_, out in ((target, widths, t), (draft, draft_widths, d)):
            for w in widths_:
                dt = pass_time(lm, new, w)
                if rnd:
                    out[w].append(dt)
    if prompt_ids is not None:
        target.reset()
        draft.reset()
    tm = {w: statistics.median(x) for w, x in t.items()}
    dm = {w: statistics.median(x) for w, x in d.items()}
    t1 = tm.get(1) or min(tm.values())
    d1 = dm.get(1) or min(dm.values())
    return Costs(c=d1 / t1, v=VerifyCost({w: x / t1 for w, x in tm.items()}), vd=VerifyCost({w: x / d1 for w, x in dm.items()}),
                 target_pass_s=t1)


PROBE_TOKENS = 64  # prompt length of the cost probe (:func:`probe_costs`)
# target -> draft -> thread count -> costs, measured once per pair and thread count (a pass's seconds
# depend on the threads it runs on); weak keys: a freed model's entry goes with it (an id() key could
# be reused by the next model loaded and hand it the old pair's costs)
_PROBED: "weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[Any, dict[int, Costs]]]" = weakref.WeakKeyDictionary()


def probe_costs(target, draft) -> Costs:
    """:func:`measure_costs` on a random ``PROBE_TOKENS``-token prompt, once per (target, draft)
    pair and torch thread count per process: loaded models are memoised, so a sweep's jobs share one measurement (the
    decoders' ``prepare`` hook for k=auto, budget=auto and grow=cost)."""
    import torch

    per_threads = _PROBED.setdefault(target, weakref.WeakKeyDictionary()).setdefault(draft, {})
    threads = torch.get_num_threads()
    if threads not in per_threads:
        g = torch.Generator().manual_seed(0)
        probe = torch.randint(0, min(target.vocab_size, draft.vocab_size), (PROBE_TOKENS,), generator=g)
        per_threads[threads] = measure_costs(target, draft, probe)
    return per_threads[threads]
