"""``method=hf_assisted``: transformers' assisted generation (``generate(assistant_model=draft)``)
as a reference row for SpS.

The library's speculative loop (Leviathan et al. 2023 at T > 0, greedy matching at T = 0) with the
same draft and target objects as ``method=speculative``, ``num_assistant_tokens=k`` and a constant
schedule with no confidence early-stop, so the two differ only in their implementation. See
:mod:`spsamp.decoders.hf_generate` for how its counters are taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from spsamp.config import ConfigError, GenerationConfig
from spsamp.decoders.base import DecodeOutput, Decoder
from spsamp.decoders.hf_generate import hf_generate
from spsamp.models import CausalLM


class HFAssistedDecoder(Decoder):
    needs_draft = True

    @dataclass
    class Params:
        name: str = "hf_assisted"
        k: int = 4  # num_assistant_tokens: draft tokens per step, as method=speculative's k

        def check(self) -> None:
            if self.k < 1:
                raise ConfigError(f"method.k: must be >= 1, got {self.k} — use method=hf_generate for no drafting")

    def generate(self, target: CausalLM, draft: Optional[CausalLM], prompt_ids: torch.Tensor, gen: GenerationConfig,
                 rng: torch.Generator) -> DecodeOutput:
        assert draft is not None, "hf_assisted needs a draft model"
        return hf_generate(target, prompt_ids, gen, rng, assistant=draft, k=self.params.k)
