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
from spsamp.sampling import logits_to_probs, sample


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


@dataclass
class Decoding:
    """The state every decode loop carries: output so far, timings, counters.

    ``seq`` is prompt + generated tokens. Between steps of a draft-and-verify loop the target has
    seen ``seq[:-1]`` (the last token is the root of the next proposal) and the draft some prefix of
    it. ``target_s`` / ``draft_s`` sum the seconds spent in each model's passes (cost model input).
    """

    timer: Timer
    stats: DecodeStats
    tokens: list[int]
    seq: list[int]
    vocab: int
    max_new_tokens: int
    eos_ids: set[int]
    target_s: float = 0.0
    draft_s: float = 0.0
    done: bool = False

    @property
    def room(self) -> int:
        return self.max_new_tokens - len(self.tokens)

    def extend(self, chunk: list[int]) -> list[int]:
        """Append one step's tokens, cut at eos and at the budget; return what was kept."""
        kept, self.done = truncate_at_eos(chunk, self.eos_ids, self.room)
        self.tokens += kept
        self.seq += kept
        return kept

    def count_chain_step(self, k: int, n: int) -> None:
        """One verification of k draft tokens that kept n of them plus the target's own token."""
        s = self.stats
        s.target_calls += 1
        s.steps += 1
        s.proposed += k
        s.accepted += n
        s.rejections += int(n < k)
        s.accepted_lengths.append(n + 1)

    def output(self) -> DecodeOutput:
        return DecodeOutput(tokens=self.tokens, prefill_s=self.timer.prefill_s, ttft_s=self.timer.ttft_s, stats=self.stats)


def begin(
    target: CausalLM, draft: Optional[CausalLM], prompt_ids: torch.Tensor, gen: GenerationConfig, rng: torch.Generator
) -> Decoding:
    """Prefill the target (and the draft) on the prompt and choose the first token from q."""
    timer, stats = Timer(), DecodeStats()
    logits = target.prefill(prompt_ids).logits[-1]
    timer.prefill_done()
    stats.target_calls = 1
    draft_s = 0.0
    if draft is not None:
        t0 = time.perf_counter()
        draft.prefill(prompt_ids)
        draft_s = time.perf_counter() - t0
        stats.draft_calls = 1
    # x_1 ~ q(. | prompt): the target's own first token (argmax at T=0)
    first = int(sample(logits_to_probs(logits, gen.temperature, gen.top_k, gen.top_p), rng))
    timer.first_token()
    state = Decoding(timer, stats, [], prompt_ids.tolist(), int(logits.shape[-1]), gen.max_new_tokens, target.eos_ids,
                     target_s=timer.prefill_s, draft_s=draft_s)
    state.extend([first])
    return state
