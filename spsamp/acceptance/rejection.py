"""Exact speculative sampling's acceptance rule (Leviathan et al. 2023, Alg. 1 / Thm. 3.5;
Chen et al. 2023, Alg. 2 "modified rejection sampling").

Naming: p = draft, q = target. For draft tokens x_1..x_k drawn from p_1..p_k and target rows
q_1..q_{k+1} (row i conditioned on the prefix and x_<i):
- accept x_i with probability min(1, q_i(x_i) / p_i(x_i)), left to right;
- at the first rejection i, emit one token from the residual norm(max(q_i - p_i, 0));
- if all k are accepted, emit a bonus token from q_{k+1}.
Every emitted token is then distributed exactly as q (the rule is lossless). At temperature 0 both
p and q are one-hot, so the ratio is 1 on an argmax match and 0 on a miss, and the residual is q.
A deterministic proposal (``p=None``: prompt lookup, a greedy draft) is a one-hot p: x_i is kept
with probability q_i(x_i), and the residual is q_i with x_i removed, renormalised.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from spsamp.loop import Verdict
from spsamp.sampling import sample


def fit_vocab(probs: torch.Tensor, vocab: int) -> torch.Tensor:
    """Pad (with zero mass) or truncate the last dim of ``probs`` to ``vocab`` entries.

    Draft and target may have different LM-head widths (padding rows). Tokens a model cannot
    produce get probability 0 on its side; a draft wider than the target is cut before its
    softmax (see :func:`fit_logits`), so both sides stay normalised over the same ids.
    """
    v = probs.shape[-1]
    if v == vocab:
        return probs
    if v > vocab:
        return probs[..., :vocab]
    return torch.nn.functional.pad(probs, (0, vocab - v))


def fit_logits(logits: torch.Tensor, vocab: int) -> torch.Tensor:
    """Draft logits restricted/padded to the target's ``vocab`` (pad = -inf: zero probability)."""
    v = logits.shape[-1]
    if v == vocab:
        return logits
    if v > vocab:
        return logits[..., :vocab]
    return torch.nn.functional.pad(logits, (0, vocab - v), value=float("-inf"))


def rejection_sampling(
    draft_tokens: torch.Tensor, p: Optional[torch.Tensor], q: torch.Tensor, rng: torch.Generator | None
) -> tuple[int, int]:
    """Leviathan et al. 2023, Algorithm 1. Returns (number of draft tokens kept, next token).

    draft_tokens ``[k]``, p ``[k, V]`` (the rows they were drawn from) or ``None`` (one-hot at each
    draft token), q ``[k+1, V]``; p and q on one device (the target's), ``rng`` on that device too.
    """
    n = int(ratio_test(draft_tokens, p, q, rng).to(torch.int8).cumprod(0).sum())  # kept up to the first rejection
    return n, correction(draft_tokens, p, q, n, rng)


def ratio_test(draft_tokens: torch.Tensor, p: Optional[torch.Tensor], q: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
    """The exact test of every draft token at once -> bool ``[k]`` (shapes as in :func:`rejection_sampling`)."""
    k = draft_tokens.numel()
    if k == 0:
        return torch.zeros(0, dtype=torch.bool, device=q.device)  # no uniform drawn: the stream stays where it was
    rows = torch.arange(k, device=q.device)
    x = draft_tokens.to(q.device)
    q_x = q[rows, x]
    p_x = torch.ones_like(q_x) if p is None else p[rows, x]
    # accept x_i iff u_i < q_i(x_i)/p_i(x_i), written without the division (p_i(x_i) > 0: x_i ~ p_i);
    # u is drawn where q lives, with the row generator that lives there too (spsamp.sampling)
    u = torch.rand(k, generator=rng, dtype=q.dtype, device=q.device)
    return u * p_x < q_x


def correction(draft_tokens: torch.Tensor, p: Optional[torch.Tensor], q: torch.Tensor, n: int, rng: torch.Generator | None) -> int:
    """The token that ends a step whose first ``n`` draft tokens were kept: a bonus token from
    q_{k+1} when all k were, else the exact correction at the first rejection (shapes as in
    :func:`rejection_sampling`)."""
    if n == draft_tokens.numel():
        return int(sample(q[n], rng))  # all accepted: bonus token x ~ q_{k+1}
    # first rejection at i = n: x ~ norm(max(q_i - p_i, 0)), the part of q that p under-covers
    if p is None:
        residual = q[n].clone()
        residual[draft_tokens[n]] = 0.0
    else:
        residual = (q[n] - p[n]).clamp_(min=0)
    total = residual.sum()
    if not bool(total > 0):  # q_i == p_i up to rounding: a rejection had probability ~0; q is exact
        return int(sample(q[n], rng))
    return int(sample(residual / total, rng))


class ChainAcceptance:
    """The loop's acceptance rule for chains (:class:`spsamp.loop.AcceptanceRule`) around a pure
    function ``fn(draft_tokens [k], p [k, V] | None, q [k+1, V], rng) -> (n_kept, next_token)``
    (default: exact :func:`rejection_sampling`)."""

    needs_hidden = False

    def __init__(self, fn: Callable[..., tuple[int, int]] = rejection_sampling):
        self.fn = fn

    def __call__(self, proposal: Any, out: Any, st: Any) -> Verdict:
        k = proposal.size
        q = st.probs(out.logits[: k + 1])
        p = None if proposal.p_dist is None else fit_vocab(proposal.p_dist, st.vocab).to(device=q.device, dtype=q.dtype)
        n, nxt = self.fn(proposal.tokens, p, q, st.rng)
        return Verdict(list(range(n)), nxt, rejected=n < k)
