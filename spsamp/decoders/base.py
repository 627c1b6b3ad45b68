"""The decoder interface every method implements.

A decoder turns a prompt into new token ids with a target model q (and, for speculative methods,
a draft model p). Naming is fixed project-wide: **q = target, p = draft**. Each method lives in
its own module named after its ``method=`` config option, with a ``Params`` dataclass that is its
config schema and the single source of its defaults (``conf/method/<name>.yaml`` -> ``_target_``
-> the class -> ``Params``). A speculative method is a :class:`LoopDecoder`: a drafter plus an
acceptance rule, run by the one loop in :mod:`spsamp.loop`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

import torch

from spsamp.acceptance.rejection import ChainAcceptance
from spsamp.config import GenerationConfig
from spsamp.loop import AcceptanceRule, DecodeOutput, DecodeStats, Decoding, Drafter, Timer, begin, speculate, speculate_rows, truncate_at_eos
from spsamp.models import CausalLM

__all__ = ["DecodeOutput", "DecodeStats", "Decoder", "Decoding", "LoopDecoder", "Timer", "begin", "truncate_at_eos"]


class Decoder:
    """Base class: ``generate`` one answer. Subclasses set ``Params`` and ``needs_draft``."""

    needs_draft: ClassVar[bool] = False  # loads the model preset's draft
    speculative: ClassVar[bool] = False  # proposes draft tokens (records proposed / accepted)
    # T=0 tokens equal baseline's and T>0 samples the target's distribution (tests/test_losslessness.py);
    # a lossy rule says False (an instance may decide from its params). scripts/gpu_smoke.sh reads it
    lossless: bool = True
    # decodes several prompts in one call (:meth:`generate_batch`); False: generation.batch_size > 1
    # is refused before any model loads (spsamp.config.validate)
    batchable: ClassVar[bool] = False

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

    def generate(self, target: CausalLM, draft: Optional[CausalLM], prompt_ids: torch.Tensor, gen: GenerationConfig,
                 rng: torch.Generator) -> DecodeOutput:
        raise NotImplementedError

    def generate_batch(self, target: CausalLM, draft: Optional[CausalLM], prompts: list[torch.Tensor], gen: GenerationConfig,
                       rngs: list[torch.Generator]) -> list[DecodeOutput]:
        """One output per prompt, decoded together (``rngs[i]``: prompt i's generator). A batch of one
        is :meth:`generate` itself, so ``batch_size=1`` runs exactly the unbatched path; a
        ``batchable`` decoder overrides this for more."""
        if len(prompts) == 1:
            return [self.generate(target, draft, prompts[0], gen, rngs[0])]
        raise NotImplementedError(f"{self.name} decodes one prompt at a time (generation.batch_size=1)")


class LoopDecoder(Decoder):
    """A speculative method: ``self.drafter`` + ``self.acceptance`` (both swappable), decoded by
    :func:`spsamp.loop.speculate`. Subclasses build the two from their ``Params`` and may add
    per-row metrics in :meth:`metrics`."""

    speculative = True
    drafter: Drafter
    acceptance: AcceptanceRule
    # wraps a bare acceptance function assigned to ``acceptance`` (the rule's pure tensor function)
    wrap_rule: ClassVar[Callable[[Callable[..., Any]], AcceptanceRule]] = ChainAcceptance

    def generate(self, target: CausalLM, draft: Optional[CausalLM], prompt_ids: torch.Tensor, gen: GenerationConfig,
                 rng: torch.Generator) -> DecodeOutput:
        if self.drafter.needs_model and draft is None:
            raise ValueError(f"{self.name} needs a draft model — pick a model preset with a draft")
        rule = self.acceptance if hasattr(self.acceptance, "needs_hidden") else type(self).wrap_rule(self.acceptance)
        st = speculate(target, draft, prompt_ids, gen, rng, self.drafter, rule)
        extra = self.metrics(st)  # may consume counters a rule left in st.stats.extra
        st.stats.extra = {**st.stats.extra, **extra}
        return st.output()

    def generate_batch(self, target: CausalLM, draft: Optional[CausalLM], prompts: list[torch.Tensor], gen: GenerationConfig,
                       rngs: list[torch.Generator]) -> list[DecodeOutput]:
        """A ``batchable`` method's batch: :func:`spsamp.loop.speculate_rows` with the same drafter and
        rule (the drafter's batch hooks, :class:`spsamp.loop.RowsDrafter`); a batch of one is :meth:`generate`."""
        if len(prompts) == 1 or not self.batchable:
            return super().generate_batch(target, draft, prompts, gen, rngs)
        if self.drafter.needs_model and draft is None:
            raise ValueError(f"{self.name} needs a draft model — pick a model preset with a draft")
        rule = self.acceptance if hasattr(self.acceptance, "needs_hidden") else type(self).wrap_rule(self.acceptance)
        rows = speculate_rows(target, draft, prompts, gen, rngs, self.drafter, rule)  # type: ignore[arg-type]
        outs = []
        for i, st in enumerate(rows.sts):
            # the seconds are the batch's: every row shares its passes
            st.stats.extra = {**st.stats.extra, "draft_time_s": st.draft_s, "target_time_s": st.target_s, **self.drafter.row_metrics(i)}  # type: ignore[attr-defined]
            outs.append(st.output())
        return outs

    def prepare(self, target: CausalLM, draft: Optional[CausalLM], run: Any) -> None:
        prepare = getattr(self.drafter, "prepare", None)
        if prepare is not None and draft is not None:
            prepare(target, draft)  # k=auto, grow=cost: measure c, v(n) and vd(w) once per job

    def metrics(self, st: Decoding) -> dict[str, Any]:
        """Per-row extras for ``metrics_json``; default: seconds in proposing / in target passes,
        and what k=auto / grow=cost chose (``sizing_*``)."""
        sizer = self.drafter.sizer
        return {"draft_time_s": st.draft_s, "target_time_s": st.target_s, **(sizer.metrics() if sizer is not None else {})}
