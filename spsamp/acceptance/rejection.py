"""Exact speculative sampling's acceptance rule (Leviathan et al. 2023, Alg. 1 / Thm. 3.5;
Chen et al. 2023, Alg. 2 "modified rejection sampling").

Naming: p = draft, q = target. For draft tokens x_1..x_k drawn from p_1..p_k and target rows
q_1..q_{k+1} (row i conditioned on the prefix and x_<i):
- accept x_i with probability min(1, q_i(x_i) / p_i(x_i)), left to right;
- at the first rejection i, emit one token from the residual norm(max(q_i - p_i, 0));
- if all k are accepted, emit a bonus token from q_{k+1}.
Every emitted token is then distributed exactly as q (the rule is lossless). At temperature 0 both
p and q are one-hot, so the ratio is 1 on an argmax match and 0 on a miss, and the residual is q.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

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
    draft_tokens: torch.Tensor, p: torch.Tensor, q: torch.Tensor, rng: torch.Generator | None
) -> tuple[int, int]:
    """Leviathan et al. 2023, Algorithm 1. Returns (number of draft tokens kept, next token).

    draft_tokens ``[k]``, p ``[k, V]`` (the rows they were drawn from), q ``[k+1, V]``; p and q on
    one device (the target's), ``rng`` on that device too.
    """
    k = draft_tokens.numel()
    if k:
        rows = torch.arange(k, device=q.device)
        x = draft_tokens.to(q.device)
        p_x, q_x = p[rows, x], q[rows, x]
        # accept x_i iff u_i < q_i(x_i)/p_i(x_i), written without the division (p_i(x_i) > 0: x_i ~ p_i);
        # u is drawn where q lives, with the row generator that lives there too (spsamp.sampling)
        u = torch.rand(k, generator=rng, dtype=q.dtype, device=q.device)
        kept = (u * p_x < q_x).to(torch.int8).cumprod(0)
        n = int(kept.sum())
    else:
        n = 0
    if n == k:
        return n, int(sample(q[k], rng))  # all accepted: bonus token x ~ q_{k+1}
    # first rejection at i = n: x ~ norm(max(q_i - p_i, 0)), the part of q that p under-covers
    residual = (q[n] - p[n]).clamp_(min=0)
    total = residual.sum()
    if not bool(total > 0):  # q_i == p_i up to rounding: a rejection had probability ~0; q is exact
        return n, int(sample(q[n], rng))
    return n, int(sample(residual / total, rng))


class ChainRule(Protocol):
    def __call__(
        self, draft_tokens: torch.Tensor, p: torch.Tensor, q: torch.Tensor, rng: torch.Generator | None
    ) -> tuple[int, int]: ...


class ChainAcceptance:
    """A swappable chain acceptance rule (default: exact :func:`rejection_sampling`).

    Lossy rules (AutoJudge) subclass this or pass their own function with the same signature:
    ``rule(draft_tokens [k], p [k, V], q [k+1, V], rng) -> (n_kept, next_token)``.
    """

    def __init__(self, rule: Callable[..., tuple[int, int]] = rejection_sampling):
        self.rule = rule

    def __call__(self, draft_tokens, p, q, rng):  # type: ignore[no-untyped-def]
        return self.rule(draft_tokens, p, q, rng)
