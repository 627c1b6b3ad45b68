"""``method=hf_prompt_lookup``: transformers' prompt lookup decoding
(``generate(prompt_lookup_num_tokens=k, max_matching_ngram_size=lookup_ngram)``) as the reference row
for ``method=prompt_lookup``, on the very same loaded target. See :mod:`spsamp.decoders.hf_generate`
for how its counters are taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from spsamp.config import GenerationConfig
from spsamp.decoders.base import DecodeOutput, Decoder
from spsamp.decoders.hf_generate import hf_generate
from spsamp.decoders.prompt_lookup import PromptLookupDecoder
from spsamp.models import CausalLM


class HFPromptLookupDecoder(Decoder):
    @dataclass
    class Params(PromptLookupDecoder.Params):
        name: str = "hf_prompt_lookup"

    def generate(self, target: CausalLM, draft: Optional[CausalLM], prompt_ids: torch.Tensor, gen: GenerationConfig,
                 rng: torch.Generator) -> DecodeOutput:
        lookup = {"prompt_lookup_num_tokens": self.params.k, "max_matching_ngram_size": self.params.lookup_ngram}
        return hf_generate(target, prompt_ids, gen, rng, extra=lookup)
