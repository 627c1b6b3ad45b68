"""Lossy acceptance rules for chains: exact speculative sampling plus a rule that keeps some draft
tokens the exact test rejected. Naming: p = draft, q = target.

A step tests every draft token x_i twice: the exact ratio test (u_i < q_i(x_i)/p_i(x_i), the same
uniforms :func:`~spsamp.acceptance.rejection.rejection_sampling` draws) and a lenient rule; x_i is
kept when either passes, left to right. At the first token both reject, the step ends exactly as
SpS ends it (:func:`~spsamp.acceptance.rejection.correction`: the residual norm(max(q_i - p_i, 0))
when sampling, q's argmax at T=0); a fully kept chain earns q's bonus token. A rule that passes
nothing is therefore exact SpS, token for token with the same seed; every rule's knob has that end
and an accept-everything end:

- ``typical`` (Medusa, Cai et al. 2024, Sec. 2.3.1): keep x when q(x) > min(eps, delta * exp(-H(q))).
  One knob eps in [0, 1] with delta = sqrt(eps) / (1 - eps): Medusa's own pairing (delta = sqrt(eps),
  its defaults 0.09 / 0.3) stretched so that eps = 1 keeps nothing (threshold 1): exact SpS;
  eps = 0 keeps every token q gives any mass.
- ``topk``: keep x when it is among q's top_k tokens (ties kept). top_k = 0: exact SpS; at T=0
  top_k = 1 is exact too (the argmax); top_k = V keeps everything.
- ``ratio``: keep x when q(x) >= t * p(x). t in [0, 1]: t = 1 only keeps what the exact test keeps
  (q/p >= 1 passes it for every u < 1): exact SpS; t = 0 keeps everything.

What a rule reads: q and p as the step samples them. At T=0 q is one-hot and a rule could only match
argmaxes, so every rule reads q at temperature 1 there (the target's own distribution); p stays what
the greedy draft drew from, one-hot, so at T=0 ratio keeps x when q(x) >= t (t = 1: only a token the
target is sure of, its argmax; exact).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from spsamp.acceptance.rejection import correction, fit_vocab, ratio_test
from spsamp.loop import Verdict, truncate_at_eos
from spsamp.sampling import logits_to_probs


def typical_pass(x: torch.Tensor, p: Optional[torch.Tensor], q: torch.Tensor, eps: float) -> torch.Tensor:
    # H(q_i) = -sum_v q_i(v) log q_i(v); Medusa keeps x_i when q_i(x_i) > min(eps, delta * exp(-H(q_i)))
    # delta = sqrt(eps) / (1 - eps): eps = 1 -> threshold 1 (nothing passes), eps = 0 -> threshold 0
    entropy = -torch.special.xlogy(q, q).sum(-1)
    delta = float("inf") if eps >= 1 else eps**0.5 / (1 - eps)
    threshold = torch.clamp(delta * torch.exp(-entropy), max=eps)
    return q.gather(-1, x[:, None])[:, 0] > threshold


def topk_pass(x: torch.Tensor, p: Optional[torch.Tensor], q: torch.Tensor, top_k: int) -> torch.Tensor:
    # rank_i(x_i) = #{v : q_i(v) > q_i(x_i)}: x_i is among q_i's top-k when fewer than k tokens beat it
    q_x = q.gather(-1, x[:, None])
    return (q > q_x).sum(-1) < top_k


def ratio_pass(x: torch.Tensor, p: Optional[torch.Tensor], q: torch.Tensor, t: float) -> torch.Tensor:
    # keep x_i when q_i(x_i) >= t * p_i(x_i) (no division: p_i(x_i) > 0 since x_i ~ p_i); p = None is one-hot
    q_x = q.gather(-1, x[:, None])[:, 0]
    p_x = torch.ones_like(q_x) if p is None else p.gather(-1, x[:, None])[:, 0]
    return q_x >= t * p_x


RULES: dict[str, Callable[..., torch.Tensor]] = {"typical": typical_pass, "topk": topk_pass, "ratio": ratio_pass}


def lossy_rejection_sampling(
    draft_tokens: torch.Tensor, p: Optional[torch.Tensor], q: torch.Tensor, lenient: torch.Tensor, rng: torch.Generator | None
) -> tuple[int, int, torch.Tensor]:
    """Exact rejection sampling where a token the rule passes (``lenient [k]`` bool) is kept too.

    Returns (draft tokens kept, next token, ``beyond [k]``: kept tokens the exact test rejected).
    Shapes and devices as in :func:`~spsamp.acceptance.rejection.rejection_sampling`, whose uniforms
    (and so, with no token passed by the rule, whose every decision) this draws.
    """
    exact = ratio_test(draft_tokens, p, q, rng)
    kept = (exact | lenient.to(exact.device)).to(torch.int8).cumprod(0).bool()
    n = int(kept.sum())
    return n, correction(draft_tokens, p, q, n, rng), kept & ~exact


class LossyAcceptance:
    """The loop's acceptance rule (:class:`spsamp.loop.AcceptanceRule`) for one lossy rule over a chain.

    Counts for the row's metrics go to ``st.stats.extra`` (only tokens that reach the output):
    ``rule_accepted`` = draft tokens kept because the rule passed them (the exact test rejected them),
    ``rule_rejected`` = steps that ended on a token both rejected.
    """

    needs_hidden = False

    def __init__(self, rule: str, knob: Any):
        if rule not in RULES:
            raise ValueError(f"rule: unknown {rule!r} — use one of {sorted(RULES)}")
        self.rule, self.knob = rule, knob

    def __call__(self, proposal: Any, out: Any, st: Any) -> Verdict:
        k = proposal.size
        q = st.probs(out.logits[: k + 1])
        p = None if proposal.p_dist is None else fit_vocab(proposal.p_dist, st.vocab).to(device=q.device, dtype=q.dtype)
        x = proposal.tokens.to(q.device)
        # one-hot q (T=0) would leave a rule nothing to read but the argmax: it reads q at temperature 1
        seen = q[:k] if st.gen.temperature > 0 else logits_to_probs(out.logits[:k], 1.0)
        lenient = RULES[self.rule](x, p, seen, self.knob) if k else torch.zeros(0, dtype=torch.bool, device=q.device)
        n, nxt, beyond = lossy_rejection_sampling(proposal.tokens, p, q, lenient, st.rng)
        tokens = proposal.tokens.tolist()
        reached = truncate_at_eos(tokens[:n] + [nxt], st.eos_ids, st.room)[0]  # what the loop will keep
        extra = st.stats.extra
        extra["rule_accepted"] = extra.get("rule_accepted", 0) + int(beyond[: min(n, len(reached))].sum())
        extra["rule_rejected"] = extra.get("rule_rejected", 0) + int(n < k and len(reached) == n + 1)
        return Verdict(list(range(n)), nxt, rejected=n < k)
