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
    accepted, the loop feeds it next step together with the target's bonus token."""

    needs_model = True

    def __init__(self, k: int):
        self.k = k

    def size(self, st: Any) -> int:
        return self.k

    def propose(self, st: Any, size: int, max_depth: int, hidden: bool) -> Proposal:
        draft, k = st.draft, max(0, min(size, max_depth))
        base = len(st.seq)  # after the pending tokens, node i sits at draft-cache slot base + i
        tokens = torch.empty(k, dtype=torch.long)
        rows: list[torch.Tensor] = []
        states: list[torch.Tensor] = []
        ids = torch.tensor(st.seq[draft.cache_len :], dtype=torch.long)
        for i in range(k):
            out = draft.forward(ids, last_only=True, hidden=hidden and i > 0)
            if hidden and i > 0:
                states.append(out.hidden[-1])  # state with x_i as input (node i - 1)
            # p_i = p(. | prefix, x_<i) under the same temperature/top-k/top-p as the target
            p_i = st.probs(fit_logits(out.logits[-1], st.vocab))
            ids = sample(p_i, st.rng).reshape(1)
            tokens[i] = ids[0]
            rows.append(p_i)
        # at T=0 every p_i is one-hot: a deterministic proposal, no [k, V] tensor needed
        p = torch.stack(rows) if rows and st.gen.temperature > 0 else None
        return Proposal.chain(
            tokens,
            p,
            hidden=torch.stack(states) if states else None,
            slots=[base + i for i in range(k - 1)] + [-1] * min(k, 1),
            draft_calls=k,
        )
