"""``method=lossy``: speculative sampling with a training-free lossy acceptance rule.

Lossy = SpS's :class:`ChainDrafter` (the draft p proposes k tokens) + :class:`LossyAcceptance`
(:mod:`spsamp.acceptance.lossy`): a draft token is kept when the exact ratio test keeps it or when
the chosen rule passes it, and the first token both reject ends the step exactly as SpS would. One
knob per rule sweeps from exact SpS to keeping every draft token:

- ``rule=typical`` (Medusa's typical acceptance), knob ``threshold`` = eps: 1 exact ... 0 everything;
- ``rule=topk`` (draft token among the target's top-k), knob ``top_k``: 0 exact ... V everything;
- ``rule=ratio`` (q(x) >= t * p(x)), knob ``threshold`` = t: 1 exact ... 0 everything.

At T=0 the rules read q at temperature 1 (a one-hot q has nothing but its argmax to read); the
greedy draft's p is one-hot, so there ratio keeps x when q(x) >= t.

Per row it records what the rule changed (``metrics_json``): ``rule_accepted`` (draft tokens kept
that exact SpS would have rejected), ``rule_exact_rejections`` (those plus the tokens that ended a
step, rejected by both) and ``rule_accept_rate``, their ratio: the share of the exact test's
rejections the rule overrode (as AutoJudge's ``judge_accept_rate`` is the share of mismatches its
judge accepted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spsamp.acceptance.lossy import RULES, LossyAcceptance
from spsamp.config import ConfigError
from spsamp.decoders.base import LoopDecoder
from spsamp.drafting.chain import ChainDrafter
from spsamp.loop import Decoding


class LossyDecoder(LoopDecoder):
    needs_draft = True
    lossless = False  # keeps draft tokens exact SpS would reject (exact only at a knob's exact end)

    @dataclass
    class Params:
        name: str = "lossy"
        rule: str = "typical"  # typical | topk | ratio (spsamp/acceptance/lossy.py)
        k: int = 4  # draft tokens per step
        # typical: eps, ratio: t; 1 = exact SpS, 0 = keep every draft token. 0.09 is Medusa's default eps
        threshold: float = 0.09
        top_k: int = 2  # topk: keep a draft token among the target's top_k; 0 = exact SpS

        def check(self) -> None:
            if self.rule not in RULES:
                raise ConfigError(f"method.rule: unknown {self.rule!r} — use one of {sorted(RULES)}")
            if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
                raise ConfigError(f"method.k: must be an integer >= 1, got {self.k!r} — use method=baseline for no drafting")
            if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) or not 0 <= self.threshold <= 1:
                raise ConfigError(f"method.threshold: must be in [0, 1], got {self.threshold!r} — 1 = exact SpS, 0 = keep every draft token")
            if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
                raise ConfigError(f"method.top_k: must be an integer >= 0, got {self.top_k!r} — 0 = exact SpS, e.g. 2")

        @property
        def knob(self) -> Any:
            return self.top_k if self.rule == "topk" else self.threshold

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.drafter = ChainDrafter(self.params.k)
        self.acceptance = LossyAcceptance(self.params.rule, self.params.knob)

    def generate(self, target: Any, draft: Any, prompt_ids: Any, gen: Any, rng: Any) -> Any:
        if isinstance(self.acceptance, LossyAcceptance):  # the settings of this call (a sweep edits params)
            self.acceptance.rule, self.acceptance.knob = self.params.rule, self.params.knob
        return super().generate(target, draft, prompt_ids, gen, rng)

    def metrics(self, st: Decoding) -> dict[str, Any]:
        counts = st.stats.extra
        accepted, rejected = counts.pop("rule_accepted", 0), counts.pop("rule_rejected", 0)
        seen = accepted + rejected
        return {
            **super().metrics(st),
            "rule": self.params.rule,
            "rule_knob": self.params.knob,
            "rule_accepted": accepted,  # draft tokens kept that exact SpS would have rejected
            "rule_exact_rejections": seen,  # draft tokens the exact test rejected (kept by the rule or ending a step)
            "rule_accept_rate": accepted / seen if seen else None,
        }
