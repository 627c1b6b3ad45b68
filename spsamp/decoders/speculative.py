"""``method=speculative``: exact speculative sampling, SpS (Leviathan et al. 2023, "Fast Inference
from Transformers via Speculative Decoding"; Chen et al. 2023, "Accelerating Large Language Model
Decoding with Speculative Sampling").

SpS = :class:`ChainDrafter` (the draft p proposes k tokens autoregressively) + the exact
:func:`rejection_sampling` rule (token i kept with probability min(1, q_i/p_i), the first rejection
resampled from norm(max(q - p, 0)), a full accept earns a bonus token from q), run by the one loop
(:func:`spsamp.loop.speculate`: one target pass over root + k tokens, both KV caches cut back to
the accepted tokens). The output is distributed exactly as the target's. The expected speedup
from acceptance and draft cost is in :mod:`spsamp.cost_model`. Batched (``generation.batch_size``
> 1, without ``stop_below`` / ``lookup``): :func:`spsamp.loop.speculate_rows` with the same drafter and
rule, the same step per row with ragged acceptance, rolled back by masking instead of cropping;
``k=auto`` chooses one k per batch step, 0 (a plain batched step) when no chain pays at that width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from spsamp.acceptance.rejection import ChainAcceptance
from spsamp.config import ADDED_LATER, ConfigError
from spsamp.decoders.base import LoopDecoder
from spsamp.models import CausalLM
from spsamp.drafting.chain import ChainDrafter
from spsamp.drafting.lookup import check_lookup_params


class SpeculativeDecoder(LoopDecoder):
    needs_draft = True
    batchable = True  # without stop_below or lookup (check_run refuses them): spsamp.loop.speculate_rows

    @dataclass
    class Params:
        name: str = "speculative"
        # draft tokens per step (the target verifies k + 1 positions in one pass); auto: the cost
        # model's best k, re-chosen every step from the row's own evidence (spsamp/drafting/sizing.py)
        k: Any = 4
        # end a step's chain after the first draft token whose draft probability is below this
        # (transformers' assistant_confidence_threshold; exact either way); null: always k tokens.
        # A fixed k only: k=auto prices plain chains
        stop_below: Optional[float] = field(default=None, metadata={ADDED_LATER: True})
        # before each draft pass, look up to this many tokens in prompt + output (what followed the
        # first earlier occurrence of the latest n-gram, lookup_min_ngram <= n <= lookup_ngram) and let
        # the draft check them in that same pass, keeping those it would have drawn itself: the same
        # chain for fewer draft passes (a lookup -> draft cascade, spsamp/drafting/chain.py); 0: off.
        # A guess the draft rejects makes its pass dearer (11 tokens cost ~1.6 single-token passes of
        # the int8 Qwen draft), and single-token matches rarely hold outside copied text: hence n >= 2
        # (options added after rows were written: at their defaults they stay out of a row's identity)
        lookup: int = field(default=0, metadata={ADDED_LATER: True})
        lookup_ngram: int = field(default=3, metadata={ADDED_LATER: True})
        lookup_min_ngram: int = field(default=2, metadata={ADDED_LATER: True})

        def check(self) -> None:
            if self.k != "auto" and (isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1):
                raise ConfigError(f"method.k: must be an integer >= 1 or auto, got {self.k!r} — use method=baseline for no drafting")
            if self.stop_below is not None:
                if isinstance(self.stop_below, bool) or not isinstance(self.stop_below, (int, float)) or not 0 < self.stop_below < 1:
                    raise ConfigError(f"method.stop_below: must be a probability in (0, 1) or null, got {self.stop_below!r} — e.g. method.stop_below=0.4")
                if self.k == "auto":
                    raise ConfigError("method.stop_below: k=auto sizes plain chains, not stopped ones — give a fixed cap "
                                      "(e.g. method.k=8) with method.stop_below, or drop method.stop_below for method.k=auto")
            check_lookup_params(self.lookup, self.lookup_ngram, self.lookup_min_ngram)

    @staticmethod
    def check_run(run: Any, params: Any) -> None:
        unbatched = [f"{n}={v}" for n, v, off in (("method.stop_below", params.stop_below, params.stop_below is None),
                                                   ("method.lookup", params.lookup, not params.lookup)) if not off]
        if run.generation.batch_size > 1 and unbatched:
            raise ConfigError(f"generation.batch_size: speculative batches plain chains only, got batch_size={run.generation.batch_size} "
                              f"with {', '.join(unbatched)} — use generation.batch_size=1 with them, or drop them (method.k=auto batches)")

    def prepare(self, target: CausalLM, draft: Optional[CausalLM], run: Any) -> None:
        if isinstance(self.drafter, ChainDrafter) and draft is not None:  # k=auto: the probe, as wide as the batch's passes
            self.drafter.prepare(target, draft, run.generation.batch_size if run is not None else 1)
        else:
            super().prepare(target, draft, run)

    def __init__(self, **params: Any):
        super().__init__(**params)
        p = self.params
        self.drafter = ChainDrafter(p.k, p.stop_below, p.lookup, p.lookup_ngram, p.lookup_min_ngram)
        self.acceptance = ChainAcceptance()
