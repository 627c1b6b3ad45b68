"""``method=baseline``: plain autoregressive decoding with the target alone.

The reference every other method is measured against: one target forward per token, sampled
through the shared :func:`spsamp.sampling.logits_to_probs`, so at temperature 0 it is greedy and
equals ``transformers`` ``generate(do_sample=False)`` token for token.

Batched (``generation.batch_size > 1``): the prompts are left-padded into one forward per token
(:mod:`spsamp.batching`: attention mask, per-row positions, one KV cache for the batch). A row that
ends (EOS or ``max_new_tokens``) stops taking tokens and stops being counted while the others go
on; its cache column keeps being fed its last token, whose output is ignored. Each row samples with
its own generator (:func:`spsamp.sampling.sample_rows`), so a row draws what it would alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from spsamp.batching import left_pad, pad_id, positions, row_masks
from spsamp.config import GenerationConfig
from spsamp.decoders.base import DecodeOutput, Decoder, DecodeStats, Timer, begin, truncate_at_eos
from spsamp.models import CausalLM
from spsamp.sampling import logits_to_probs, sample, sample_rows


def next_token(logits: torch.Tensor, gen: GenerationConfig, rng: torch.Generator) -> int:
    # x ~ q(. | prefix), with q = logits_to_probs(target logits) (argmax at T=0)
    q = logits_to_probs(logits, gen.temperature, gen.top_k, gen.top_p)
    return int(sample(q, rng))


class BaselineDecoder(Decoder):
    batchable = True

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

    def generate_batch(self, target: CausalLM, draft: Optional[CausalLM], prompts: list[torch.Tensor], gen: GenerationConfig,
                       rngs: list[torch.Generator]) -> list[DecodeOutput]:
        if len(prompts) == 1:
            return [self.generate(target, draft, prompts[0], gen, rngs[0])]
        return decode_rows(target, prompts, gen, rngs)


def decode_rows(target: CausalLM, prompts: list[torch.Tensor], gen: GenerationConfig, rngs: list[torch.Generator]) -> list[DecodeOutput]:
    """Plain decoding of a batch of prompts in one KV cache (see the module docstring)."""
    timer = Timer()
    ids, mask = left_pad(prompts, pad_id(target.eos_ids))
    logits = target.prefill_rows(ids, row_masks(target, mask, ids.shape[1]), positions(mask, ids.shape[1]))
    timer.prefill_done()
    n = len(prompts)
    tokens: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    stats = [DecodeStats(target_calls=1) for _ in range(n)]

    def choose(rows: list[int], logits: torch.Tensor) -> None:
        q = logits_to_probs(logits, gen.temperature, gen.top_k, gen.top_p)
        for i, tok in zip(rows, sample_rows(q, [rngs[i] for i in rows])):
            kept, done[i] = truncate_at_eos([tok], target.eos_ids, gen.max_new_tokens - len(tokens[i]))
            tokens[i] += kept

    choose(list(range(n)), logits)
    timer.first_token()
    last = torch.empty((n, 1), dtype=torch.long)  # on the CPU, as the masks: the adapter moves them
    while not all(done):
        last[:, 0] = torch.tensor([t[-1] for t in tokens], dtype=torch.long)
        mask = torch.cat([mask, mask.new_ones((n, 1))], dim=1)
        logits = target.forward_rows(last, row_masks(target, mask, 1), positions(mask, 1))[:, -1]
        live = [i for i in range(n) if not done[i]]
        choose(live, logits[live])
        for i in live:
            stats[i].target_calls += 1
            stats[i].steps += 1
            stats[i].accepted_lengths.append(1)
    return [DecodeOutput(tokens=t, prefill_s=timer.prefill_s, ttft_s=timer.ttft_s, stats=s) for t, s in zip(tokens, stats)]
