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
from spsamp.decoders.base import DecodeOutput, DecodeStats, Decoder, Timer
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

    def generate(
        self,
        target: CausalLM,
        draft: Optional[CausalLM],
        prompt_ids: torch.Tensor,
        gen: GenerationConfig,
        rng: torch.Generator,
    ) -> DecodeOutput:
        timer, stats = Timer(), DecodeStats()
        logits = target.prefill(prompt_ids).logits[-1]
        timer.prefill_done()
        stats.target_calls = 1
        tokens = [next_token(logits, gen, rng)]
        timer.first_token()
        token = torch.empty(1, dtype=torch.long)
        while len(tokens) < gen.max_new_tokens and tokens[-1] not in target.eos_ids:
            token[0] = tokens[-1]
            logits = target.forward(token).logits[-1]
            tokens.append(next_token(logits, gen, rng))
            stats.target_calls += 1
            stats.steps += 1
            stats.accepted_lengths.append(1)
        return DecodeOutput(tokens=tokens, prefill_s=timer.prefill_s, ttft_s=timer.ttft_s, stats=stats)
