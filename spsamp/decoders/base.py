"""The decoder interface every method implements, and the statistics it reports.

A decoder turns a prompt into new token ids with a target model q (and, for speculative methods,
a draft model p). Naming is fixed project-wide: **q = target, p = draft**. Each method lives in
its own module named after its ``method=`` config option, with a ``Params`` dataclass that is its
config schema (``conf/method/<name>.yaml`` -> ``_target_`` -> the class -> ``Params``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import torch

from spsamp.config import GenerationConfig
from spsamp.models import CausalLM


@dataclass
class DecodeStats:
    """Counters a decoder fills while it runs; the runner turns them into record columns.

    steps: target verification calls after the prefill (baseline: one per token after the first);
    proposed / accepted: draft tokens offered / kept; rejections: steps that ended on a rejected
    draft token; accepted_lengths: per step, tokens kept including the target's own token.
    """

    target_calls: int = 0
    draft_calls: int = 0
    steps: int = 0
    proposed: int = 0
    accepted: int = 0
    rejections: int = 0
    accepted_lengths: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific metrics -> metrics_json


@dataclass
class DecodeOutput:
    tokens: list[int]
    prefill_s: float  # target prefill (the prompt forward)
    ttft_s: float  # call start -> first new token chosen
    stats: DecodeStats


class Decoder:
    """Base class: ``generate`` one answer. Subclasses set ``Params`` and ``needs_draft``."""

    needs_draft: ClassVar[bool] = False

    @dataclass
    class Params:
        name: str = "???"

    def __init__(self, **params: Any):
        self.params = self.Params(**params)

    @property
    def name(self) -> str:
        return self.params.name

    def prepare(self, target: CausalLM, draft: Optional[CausalLM], run: Any) -> None:
        """Once per job, after the models load and before warm-up (e.g. AutoJudge trains or loads
        its judge here). ``run`` is the validated :class:`spsamp.config.RunConfig`."""

    def generate(
        self,
        target: CausalLM,
        draft: Optional[CausalLM],
        prompt_ids: torch.Tensor,
        gen: GenerationConfig,
        rng: torch.Generator,
    ) -> DecodeOutput:
        raise NotImplementedError


class Timer:
    """Wall-clock marks for one ``generate`` call (prefill end, first token)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.prefill_s = 0.0
        self.ttft_s = 0.0

    def prefill_done(self) -> None:
        self.prefill_s = time.perf_counter() - self.start

    def first_token(self) -> None:
        self.ttft_s = time.perf_counter() - self.start


def truncate_at_eos(tokens: list[int], eos_ids: set[int], max_new_tokens: int) -> tuple[list[int], bool]:
    """Cut ``tokens`` after the first eos (kept, as HF ``generate`` keeps it) and at the budget.

    Returns the kept tokens and whether generation is finished.
    """
    for i, t in enumerate(tokens[:max_new_tokens]):
        if t in eos_ids:
            return tokens[: i + 1], True
    kept = tokens[:max_new_tokens]
    return kept, len(kept) >= max_new_tokens
