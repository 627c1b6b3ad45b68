"""Chain drafting for exact speculative sampling (Leviathan et al. 2023, Alg. 1, lines 1-3):
x_i ~ p(. | prefix, x_<i) for i = 1..k, autoregressively with the draft's KV cache."""

from __future__ import annotations

from typing import Any

import torch

from spsamp.acceptance.rejection import fit_logits
from spsamp.config import GenerationConfig
from spsamp.proposals import Proposal
from spsamp.sampling import logits_to_probs, sample


class ChainDrafter:
    """Draft ``k`` tokens; ``k`` draft forwards (the k-th token is not fed back: if all k are
    accepted the decoder feeds it next step together with the target's bonus token)."""

    def propose(
        self, draft: Any, pending: list[int], k: int, gen: GenerationConfig, rng: torch.Generator | None, vocab: int
    ) -> Proposal:
        tokens = torch.empty(k, dtype=torch.long)
        rows: list[torch.Tensor] = []
        ids = torch.tensor(pending, dtype=torch.long)
        for i in range(k):
            logits = fit_logits(draft.forward(ids, last_only=True).logits[-1], vocab)
            # p_i = p(. | prefix, x_<i) under the same temperature/top-k/top-p as the target
            p_i = logits_to_probs(logits, gen.temperature, gen.top_k, gen.top_p)
            ids = sample(p_i, rng).reshape(1)
            tokens[i] = ids[0]
            rows.append(p_i)
        p = torch.stack(rows) if rows else torch.empty(0, vocab)
        return Proposal.chain(tokens, p)
