"""``method=speculative``: exact speculative sampling, SpS (Leviathan et al. 2023, "Fast Inference
from Transformers via Speculative Decoding"; Chen et al. 2023, "Accelerating Large Language Model
Decoding with Speculative Sampling").

One step: the draft p proposes k tokens autoregressively (:class:`ChainDrafter`), the target q
scores the root and all k tokens in one forward (:func:`spsamp.verification.verify`), and a chain
acceptance rule (default :func:`rejection_sampling`; swappable via ``self.acceptance``, which is
where AutoJudge plugs in) keeps a prefix plus one token of the target's. Both KV caches are then
cut back to the accepted tokens. The output is distributed exactly as the target's.

Cache invariant between steps (``seq`` = prompt + generated): the target has seen ``seq[:-1]``;
the draft has seen ``seq[:draft.cache_len]`` and is fed the rest next step (one token, or two
when all k drafts were accepted: the k-th draft token was never fed to the draft).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from spsamp.acceptance.rejection import ChainAcceptance, fit_vocab
from spsamp.config import ConfigError, GenerationConfig
from spsamp.decoders.base import DecodeOutput, DecodeStats, Decoder, Timer
from spsamp.drafting.chain import ChainDrafter
from spsamp.models import CausalLM
from spsamp.sampling import logits_to_probs, sample
from spsamp.verification import verify


def expected_tokens_per_step(alpha: float, k: int) -> float:
    """Leviathan et al. 2023, Eq. (1): E[tokens per target call] = (1 - alpha^(k+1)) / (1 - alpha)."""
    if alpha >= 1.0:
        return float(k + 1)
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


def expected_speedup(alpha: float, k: int, c: float) -> float:
    """Leviathan et al. 2023, Thm. 3.8: expected walltime improvement
    (1 - alpha^(k+1)) / ((1 - alpha)(k c + 1)), with alpha the per-token acceptance rate and
    c = (draft forward time) / (target forward time). Assumes the target pass over k+1 tokens
    costs the same as over one token (memory-bound decoding)."""
    return expected_tokens_per_step(alpha, k) / (k * c + 1.0)


def alpha_from_acceptance(accepted: int, proposed: int, rejections: int) -> float:
    """Per-token acceptance alpha estimated from counts (Leviathan et al. 2023, Sec. 3.1: alpha =
    E[beta]): every proposed token that was actually tested either passed (accepted) or failed
    (the one rejection of its step); tokens after a rejection were never tested."""
    tested = accepted + rejections
    return accepted / tested if tested else 0.0


def first_eos(chunk: list[int], eos_ids: set[int]) -> int:
    """Index just past the first eos in ``chunk`` (len(chunk) if none)."""
    for i, t in enumerate(chunk):
        if t in eos_ids:
            return i + 1
    return len(chunk)


class SpeculativeDecoder(Decoder):
    needs_draft = True

    @dataclass
    class Params:
        name: str = "speculative"
        k: int = 4  # draft tokens per step

        def check(self) -> None:
            if self.k < 1:
                raise ConfigError(f"method.k: must be >= 1, got {self.k} — use method=baseline for no drafting")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self.drafter = ChainDrafter()
        self.acceptance = ChainAcceptance()

    def generate(
        self,
        target: CausalLM,
        draft: Optional[CausalLM],
        prompt_ids: torch.Tensor,
        gen: GenerationConfig,
        rng: torch.Generator,
    ) -> DecodeOutput:
        assert draft is not None, "speculative needs a draft model"
        timer, stats = Timer(), DecodeStats()
        temp, top_k, top_p = gen.temperature, gen.top_k, gen.top_p
        logits = target.prefill(prompt_ids).logits[-1]
        timer.prefill_done()
        vocab = logits.shape[-1]
        draft.prefill(prompt_ids)
        stats.target_calls, stats.draft_calls = 1, 1
        tokens = [int(sample(logits_to_probs(logits, temp, top_k, top_p), rng))]
        timer.first_token()
        seq = prompt_ids.tolist() + tokens
        done = tokens[-1] in target.eos_ids or len(tokens) >= gen.max_new_tokens
        while not done:
            # never draft past max_new_tokens: a step yields at most k + 1 tokens
            k = min(self.params.k, gen.max_new_tokens - len(tokens) - 1)
            prop = self.drafter.propose(draft, seq[draft.cache_len :], k, gen, rng, vocab)
            # q_1..q_{k+1} from one target pass over [root, x_1..x_k]
            q_logits = verify(target, seq[-1], prop)
            q = logits_to_probs(q_logits, temp, top_k, top_p)
            p = fit_vocab(prop.p_dist, vocab).to(q.dtype)  # type: ignore[arg-type]
            n, nxt = self.acceptance(prop.tokens, p, q, rng)
            chunk = prop.tokens[:n].tolist() + [nxt]
            cut = first_eos(chunk, target.eos_ids)
            chunk = chunk[: min(cut, gen.max_new_tokens - len(tokens))]
            tokens += chunk
            seq += chunk
            # roll back: target keeps seq[:-1]; draft keeps what it saw of the accepted path
            target.crop(len(seq) - 1)
            draft.crop(min(draft.cache_len, len(seq) - 1))
            stats.target_calls += 1
            stats.draft_calls += k
            stats.steps += 1
            stats.proposed += k
            stats.accepted += n
            stats.rejections += int(n < k)
            stats.accepted_lengths.append(n + 1)
            done = cut < n + 1 or len(tokens) >= gen.max_new_tokens
        return DecodeOutput(tokens=tokens, prefill_s=timer.prefill_s, ttft_s=timer.ttft_s, stats=stats)
