"""``method=speculative``: exact speculative sampling, SpS (Leviathan et al. 2023, "Fast Inference
from Transformers via Speculative Decoding"; Chen et al. 2023, "Accelerating Large Language Model
Decoding with Speculative Sampling").

One step: the draft p proposes k tokens autoregressively (:class:`ChainDrafter`), the target q
scores the root and all k tokens in one forward (:func:`spsamp.verification.verify`), and a chain
acceptance rule (default :func:`rejection_sampling`; swappable via ``self.acceptance``, which is
where AutoJudge plugs in) keeps a prefix plus one token of the target's. Both KV caches are then
cut back to the accepted tokens. The output is distributed exactly as the target's. The
expected speedup from acceptance and draft cost is in :mod:`spsamp.cost_model`.

Cache invariant between steps (``seq`` = prompt + generated): the target has seen ``seq[:-1]``;
the draft has seen ``seq[:draft.cache_len]`` and is fed the rest next step (one token, or two
when all k drafts were accepted: the k-th draft token was never fed to the draft).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional

import torch

from spsamp.acceptance.rejection import ChainAcceptance, fit_vocab
from spsamp.config import ConfigError, GenerationConfig
from spsamp.decoders.base import DecodeOutput, Decoder, begin
from spsamp.drafting.chain import ChainDrafter
from spsamp.models import CausalLM
from spsamp.sampling import logits_to_probs
from spsamp.verification import verify


class SpeculativeDecoder(Decoder):
    needs_draft = True

    @dataclass
    class Params:
        name: str = "speculative"
        k: int = 4  # draft tokens per step

        def check(self) -> None:
            if self.k < 1:
                raise ConfigError(f"method.k: must be >= 1, got {self.k} — use method=baseline for no drafting")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.drafter = ChainDrafter()
        self.acceptance = ChainAcceptance()

    def generate(
        self,
        target: CausalLM,
        draft: Optional[CausalLM],
        prompt_ids: torch.Tensor,
        gen: GenerationConfig,
        rng: torch.Generator,
    ) -> DecodeOutput:
        assert draft is not None, "speculative needs a draft model"
        st = begin(target, draft, prompt_ids, gen, rng)
        temp, top_k, top_p = gen.temperature, gen.top_k, gen.top_p
        while not st.done:
            # never draft past max_new_tokens: a step yields at most k + 1 tokens
            k = min(self.params.k, st.room - 1)
            t0 = time.perf_counter()
            prop = self.drafter.propose(draft, st.seq[draft.cache_len :], k, gen, rng, st.vocab)
            t1 = time.perf_counter()
            # q_1..q_{k+1} from one target pass over [root, x_1..x_k]
            q_logits = verify(target, st.seq[-1], prop)
            st.draft_s += t1 - t0
            st.target_s += time.perf_counter() - t1
            q = logits_to_probs(q_logits, temp, top_k, top_p)
            p = fit_vocab(prop.p_dist, st.vocab).to(q.device, q.dtype)  # type: ignore[arg-type]
            n, nxt = self.acceptance(prop.tokens, p, q, rng)
            st.extend(prop.tokens[:n].tolist() + [nxt])
            # roll back: target keeps seq[:-1]; draft keeps what it saw of the accepted path
            target.crop(len(st.seq) - 1)
            draft.crop(min(draft.cache_len, len(st.seq) - 1))
            st.stats.draft_calls += k
            st.count_chain_step(k, n)
        st.stats.extra = {"draft_time_s": st.draft_s, "target_time_s": st.target_s}
        return st.output()
