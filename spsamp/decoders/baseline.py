"""``method=baseline``: plain autoregressive decoding with the target alone.

The reference every other method is measured against: one target forward per token, sampled
through the shared :func:`spsamp.sampling.logits_to_probs`, so at temperature 0 it is greedy and
equals ``transformers`` ``generate(do_sample=False)`` token for token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from spsamp.config import GenerationConfig
from spsamp.decoders.base import DecodeOutput, Decoder, begin
from spsamp.models import CausalLM
from spsamp.sampling import logits_to_probs, sample


def next_token(logits: torch.Tensor, gen: GenerationConfig, rng: torch.Generator) -> int:
    # x ~ q(. | prefix), with q = logits_to_probs(target logits) (argmax at T=0)
    q = logits_to_probs(logits, gen.temperature, gen.top_k, gen.top_p)
    return int(sample(q, rng))


class BaselineDecoder(Decoder):
    @dataclass
    class Params:
        name: str = "baseline"

    def generate(self, target: CausalLM, draft: Optional[CausalLM], prompt_ids: torch.Tensor, gen: GenerationConfig,
                 rng: torch.Generator) -> DecodeOutput:
        st = begin(target, None, prompt_ids, gen, rng)
        token = torch.empty(1, dtype=torch.long)
        while not st.done:
            token[0] = st.tokens[-1]
            logits = target.forward(token).logits[-1]
            st.extend([next_token(logits, gen, rng)])
            st.count_plain_step()
        return st.output()
