"""``method=prompt_lookup``: speculative decoding with no draft model (Saxena 2023, "Prompt Lookup
Decoding"; transformers' ``generate(prompt_lookup_num_tokens=k)``, here ``method=hf_prompt_lookup``).

Prompt lookup = :class:`PromptLookupDrafter` (up to ``k`` tokens that followed the latest
``lookup_ngram``-gram's first earlier occurrence in prompt + output; the same knob, by the same
name, as SpS's and SpecExec's lookup cascades) + the exact
:func:`rejection_sampling` rule with a one-hot draft distribution: lossless at any temperature.
Batched (``generation.batch_size`` > 1): :func:`spsamp.loop.speculate_rows` with the same drafter
and rule, each row's chain looked up in its own prompt + output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spsamp.acceptance.rejection import ChainAcceptance
from spsamp.config import FORMERLY, ConfigError
from spsamp.decoders.base import LoopDecoder
from spsamp.drafting.lookup import PromptLookupDrafter


class PromptLookupDecoder(LoopDecoder):
    needs_draft = False
    batchable = True

    @dataclass
    class Params:
        name: str = "prompt_lookup"
        k: int = 10  # tokens copied per step at most (transformers' prompt_lookup_num_tokens)
        # longest suffix n-gram matched (transformers' max_matching_ngram_size); once called max_ngram
        lookup_ngram: int = field(default=2, metadata={FORMERLY: "max_ngram"})

        def check(self) -> None:
            if self.k < 1:
                raise ConfigError(f"method.k: must be >= 1, got {self.k} — use method=baseline for no drafting")
            if self.lookup_ngram < 1:
                raise ConfigError(f"method.lookup_ngram: must be >= 1, got {self.lookup_ngram} — e.g. 2")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.drafter = PromptLookupDrafter(self.params.k, self.params.lookup_ngram)
        self.acceptance = ChainAcceptance()
