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
from dataclasses import dataclass

import numpy as np

__all__ = [
    "expected_tokens_per_step", "predicted_speedup", "alpha_from_counts", "VerifyCost", "chain_speedup", "best_k",
    "expected_tree_accepted", "tree_draft_passes", "tree_speedup", "best_budget", "RankAcceptance", "AutoSize",
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


def _non_decreasing(values: list[float]) -> list[float]:
    """Least-squares non-decreasing fit (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in values:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m1, c1), (m2, c2) = blocks[-2], blocks.pop()
            blocks[-1] = [(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2]
    return [m for m, c in blocks for _ in range(int(c))]


def chain_speedup(alpha: float, k: int, c: float, v) -> float:
    """Leviathan et al. 2023, Thm. 3.8 with the measured verification cost in place of 1:

        speedup(k) = (1 - alpha^(k+1)) / ((1 - alpha) (k c + v(k+1)))

    (k draft passes of cost c, then one target pass over the root and k tokens)."""
    return float(expected_tokens_per_step(alpha, k)) / (k * c + v(k + 1))


def best_k(alpha: float, c: float, v, k_max: int = 16) -> tuple[int, float]:
    """The k in 1..k_max with the largest :func:`chain_speedup`; (k, predicted speedup). Ties go
    to the smaller k (less draft work wasted when alpha is overestimated)."""
    best = max(range(1, k_max + 1), key=lambda k: (round(chain_speedup(alpha, k, c, v), 12), -k))
    return best, chain_speedup(alpha, best, c, v)


def expected_tree_accepted(rank_probs: list[float], budget: int, max_depth: int = 64) -> float:
    """Expected accepted draft tokens of the best ``budget``-node tree under positional acceptance.

    Model (Sequoia, Chen et al. 2024, Sec. 3.1, "positional acceptance"): at every node the
    target's token is the draft's r-th most likely child with probability ``rank_probs[r-1]``,
    independently of depth. A node is accepted iff every edge on its path is, so its value is the
    product of its edges' rank probabilities and E[accepted] = sum of the tree's node values.
    Children are worth no more than their parent, so the ``budget`` largest values form a tree:
    growing best-first (SpecExec's rule, Svirschevski et al. 2024, Alg. 2) is optimal here. With a
    single rank probability alpha and max_depth = budget this is the chain: alpha + ... + alpha^B.
    """
    import heapq

    probs = [float(p) for p in rank_probs if p > 0]
    heap = [(-p, 1) for p in probs]  # (-value, depth) of candidate nodes
    heapq.heapify(heap)
    total = 0.0
    for _ in range(budget):
        if not heap:
            break
        neg, depth = heapq.heappop(heap)
        total += -neg
        if depth < max_depth:
            for p in probs:
                heapq.heappush(heap, (neg * p, depth + 1))
    return total


def tree_draft_passes(budget: int, width: int) -> int:
    """Draft forwards to grow a ``budget``-node tree ``width`` leaves at a time (spsamp.drafting.tree):
    the root pass, then one batched pass per round of ``width`` new nodes except the last round."""
    return 1 + max(0, budget - 1) // max(1, width)


def tree_speedup(rank_probs: list[float], budget: int, c: float, v, width: int = 1, max_depth: int = 64, vd=None) -> float:
    """Predicted speedup of SpecExec with a ``budget``-node tree over plain decoding:

        (1 + E[accepted](budget)) / (c (1 + rounds vd(width)) + v(budget + 1))

    rounds = batched expansion passes of ``width`` nodes (vd: their cost in draft single-token
    passes; default v's shape, both models being memory-bound alike)."""
    vd = vd or v
    rounds = tree_draft_passes(budget, width) - 1
    cost = c * (1 + rounds * vd(width)) + v(budget + 1)
    return (1.0 + expected_tree_accepted(rank_probs, budget, max_depth)) / cost


def best_budget(rank_probs: list[float], c: float, v, width: int = 1, max_depth: int = 64, budget_max: int = 64, vd=None) -> tuple[int, float]:
    """The budget in 1..budget_max with the largest :func:`tree_speedup`; (budget, predicted)."""
    scores = {b: tree_speedup(rank_probs, b, c, v, width, max_depth, vd) for b in range(1, budget_max + 1)}
    best = max(scores, key=lambda b: (round(scores[b], 12), -b))
    return best, scores[best]


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


class AutoSize:
    """``method.k=auto`` / ``method.budget=auto``: before each step, the size that maximises the
    predicted speedup under the measured costs and the acceptance observed so far; after it, the
    step's outcome. ``tree=False``: a chain (best :func:`chain_speedup`); ``tree=True``: a
    best-first tree grown ``width`` nodes per draft pass (best :func:`tree_speedup`)."""

    def __init__(self, c: float, v: VerifyCost, size_max: int, tree: bool = False, width: int = 1, max_depth: int = 64,
                 vd: VerifyCost | None = None, acceptance: RankAcceptance | None = None):
        self.c, self.v, self.vd = c, v, vd
        self.size_max, self.tree, self.width, self.max_depth = size_max, tree, width, max_depth
        self.acceptance = acceptance or RankAcceptance(max_rank=8 if tree else 1)
        self.chosen: list[int] = []
        self.predicted: list[float] = []

    def choose(self) -> int:
        if self.tree:
            size, pred = best_budget(self.acceptance.probs(), self.c, self.v, self.width, self.max_depth, self.size_max, self.vd)
        else:
            size, pred = best_k(self.acceptance.alpha, self.c, self.v, self.size_max)
        self.chosen.append(size)
        self.predicted.append(pred)
        return size

    def metrics(self, since: int = 0) -> dict[str, float | int | dict]:
        """What was chosen (steps from ``since`` on), for a record's ``metrics_json``."""
        sizes, preds = self.chosen[since:], self.predicted[since:]
        if not sizes:
            return {}
        name = "budget" if self.tree else "k"
        hist: dict[str, int] = {}
        for s in sizes:
            hist[str(s)] = hist.get(str(s), 0) + 1
        return {
            f"auto_{name}_mean": sum(sizes) / len(sizes),
            f"auto_{name}_last": sizes[-1],
            f"auto_{name}_hist": hist,
            "auto_predicted_speedup": sum(preds) / len(preds),
            "auto_alpha": self.acceptance.alpha,
            "auto_c": self.c,
        }


_clock = time.perf_counter  # tests replace it with fake timings


@dataclass
class Costs:
    """Measured pass costs: c, v (target, n tokens / 1 token), vd (draft, w tokens / 1 token)."""

    c: float
    v: VerifyCost
    vd: VerifyCost


def _sync(device) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)  # CUDA kernels run asynchronously: time their completion


def _pass_time(lm, ids, width: int) -> float:
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
                dt = _pass_time(lm, new, w)
                if rnd:
                    out[w].append(dt)
    if prompt_ids is not None:
        target.reset()
        draft.reset()
    tm = {w: statistics.median(x) for w, x in t.items()}
    dm = {w: statistics.median(x) for w, x in d.items()}
    t1 = tm.get(1) or min(tm.values())
    d1 = dm.get(1) or min(dm.values())
    return Costs(c=d1 / t1, v=VerifyCost({w: x / t1 for w, x in tm.items()}), vd=VerifyCost({w: x / d1 for w, x in dm.items()}))
