"""``method=hf_assisted``: transformers' assisted generation (``generate(assistant_model=draft)``)
as a reference row for SpS.

The library's speculative loop (Leviathan et al. 2023 at T > 0, greedy matching at T = 0) with the
same draft and target objects as ``method=speculative``. Two schedules:

- ``schedule=constant`` (the default): ``num_assistant_tokens=k``, a constant schedule and no
  confidence early-stop, so the row differs from ``method=speculative`` only in its implementation;
- ``schedule=transformers_default``: what a transformers user gets without setting anything, i.e.
  ``num_assistant_tokens_schedule`` and ``assistant_confidence_threshold`` (adapted per step from
  the draft's confidence when scikit-learn is installed) as the installed version ships them, and
  ``num_assistant_tokens`` too when ``k`` is null (``method=hf_assisted_default``). The values used
  are resolved the way transformers resolves them and recorded per row (``metrics_json``).

See :mod:`spsamp.decoders.hf_generate` for how its counters are taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from transformers import GenerationConfig as HFGenerationConfig

from spsamp.config import ADDED_LATER, ConfigError, GenerationConfig
from spsamp.decoders.base import DecodeOutput, Decoder
from spsamp.decoders.hf_generate import hf_generate
from spsamp.models import CausalLM

SCHEDULES = ("constant", "transformers_default")
# the assistant settings transformers fills in from its own defaults when a config leaves them unset
ASSISTANT_KEYS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")


def assistant_settings(k: Optional[int], schedule: str) -> dict[str, Any]:
    """The three assistant settings a ``generate`` call runs with: ``k`` and the schedule set here,
    the rest left unset (None) for transformers to fill from ``GenerationConfig`` defaults."""
    if schedule == "constant":
        # a constant k per step and no confidence early-stop (0.0 is falsy: no stop, no adaptation)
        return {"num_assistant_tokens": k, "num_assistant_tokens_schedule": "constant", "assistant_confidence_threshold": 0.0}
    return {"num_assistant_tokens": k, "num_assistant_tokens_schedule": None, "assistant_confidence_threshold": None}


def resolved_settings(cfg: HFGenerationConfig) -> dict[str, Any]:
    """What transformers' ``AssistedCandidateGenerator`` starts from, given the assistant's config:
    its unset fields filled from ``GenerationConfig._get_default_generation_params`` (defaults only)."""
    defaults = HFGenerationConfig._get_default_generation_params()
    return {key: getattr(cfg, key) if getattr(cfg, key) is not None else defaults[key] for key in ASSISTANT_KEYS}


class HFAssistedDecoder(Decoder):
    needs_draft = True

    @dataclass
    class Params:
        name: str = "hf_assisted"
        # num_assistant_tokens: draft tokens per step, as method=speculative's k; null: transformers'
        # own default (schedule=transformers_default only)
        k: Optional[int] = 4
        # constant: k every step, no confidence stop (SpS's schedule); transformers_default: the
        # installed transformers' schedule and confidence threshold (see the module docstring)
        schedule: str = field(default="constant", metadata={ADDED_LATER: True})

        def check(self) -> None:
            if self.schedule not in SCHEDULES:
                raise ConfigError(f"method.schedule: unknown {self.schedule!r} — use one of {SCHEDULES}")
            if self.k is None:
                if self.schedule == "constant":
                    raise ConfigError("method.k: null needs schedule=transformers_default — set method.k=4, or use method=hf_assisted_default")
            elif isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
                raise ConfigError(f"method.k: must be an integer >= 1 or null, got {self.k!r} — use method=hf_generate for no drafting")

    def generate(self, target: CausalLM, draft: Optional[CausalLM], prompt_ids: torch.Tensor, gen: GenerationConfig,
                 rng: torch.Generator) -> DecodeOutput:
        assert draft is not None, "hf_assisted needs a draft model"
        settings = assistant_settings(self.params.k, self.params.schedule)
        out = hf_generate(target, prompt_ids, gen, rng, assistant=draft, extra=settings)
        used = resolved_settings(HFGenerationConfig(**settings))
        out.stats.extra = {**out.stats.extra, **{f"hf_{key}": value for key, value in used.items()}}
        return out
