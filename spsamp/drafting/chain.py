"""Chain drafting for exact speculative sampling (Leviathan et al. 2023, Alg. 1, lines 1-3):
x_i ~ p(. | prefix, x_<i) for i = 1..k, autoregressively with the draft's KV cache."""

from __future__ import annotations

from typing import Any

import torch

from spsamp.acceptance.rejection import fit_logits
from spsamp.proposals import Proposal
from spsamp.sampling import sample


class ChainDrafter:
    """Draft ``k`` tokens with ``k`` draft forwards. The k-th token is not fed back: if all k are
    accepted, the loop feeds it next step together with the target's bonus token.

    stop_below: end the chain early, after the first token whose draft probability p_i(x_i) is below
    it (transformers' ``assistant_confidence_threshold``): an unlikely draft token is likely rejected,
    so the passes after it are mostly wasted. Still exact: the stop depends only on the draft's own
    tokens, so given the accepted prefix the next output is q's either way (bonus token or ratio test).
    With a stop, the proposal's ``stats`` is the list of which tokens the draft was sure of (all of
    them judged, the last too), for k=auto's pricing of the stop (spsamp.cost_model.stopped_chain).
    """

    needs_model = True

    def __init__(self, k: int, stop_below: float | None = None):
        self.k, self.stop_below = k, stop_below

    def size(self, st: Any) -> int:
        return self.k

    @staticmethod
    def _confidence(st: Any, logits: torch.Tensor, p_i: torch.Tensor, token: torch.Tensor) -> float:
        # greedy p_i is one-hot, so the draft's confidence there is its untempered softmax
        return float(p_i[token] if st.gen.temperature > 0 else torch.softmax(logits.float(), -1)[token])

    def propose(self, st: Any, size: int, max_depth: int, hidden: bool) -> Proposal:
        draft, k = st.draft, max(0, min(size, max_depth))
        base = len(st.seq)  # after the pending tokens, node i sits at draft-cache slot base + i
        tokens = torch.empty(k, dtype=torch.long)
        rows: list[torch.Tensor] = []
        states: list[torch.Tensor] = []
        ids = torch.tensor(st.seq[draft.cache_len :], dtype=torch.long)
        sure: list[bool] = []
        for i in range(k):
            out = draft.forward(ids, last_only=True, hidden=hidden and i > 0)
            if hidden and i > 0:
                states.append(out.hidden[-1])  # state with x_i as input (node i - 1)
            # p_i = p(. | prefix, x_<i) under the same temperature/top-k/top-p as the target
            logits = fit_logits(out.logits[-1], st.vocab)
            p_i = st.probs(logits)
            ids = sample(p_i, st.rng).reshape(1)
            tokens[i] = ids[0]
            rows.append(p_i)
            if self.stop_below is not None:
                sure.append(self._confidence(st, logits, p_i, ids[0]) >= self.stop_below)
                if not sure[-1] and i < k - 1:
                    k, tokens = i + 1, tokens[: i + 1]
                    break
        # at T=0 every p_i is one-hot: a deterministic proposal, no [k, V] tensor needed
        p = torch.stack(rows) if rows and st.gen.temperature > 0 else None
        return Proposal.chain(
            tokens,
            p,
            hidden=torch.stack(states) if states else None,
            slots=[base + i for i in range(k - 1)] + [-1] * min(k, 1),
            draft_calls=k,
            stats=sure if self.stop_below is not None else None,
        )
