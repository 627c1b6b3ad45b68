"""Toy language models for exact-distribution tests: cheap objects with the CausalLM interface.

A ToyLM's next-token logits are a fixed pseudo-random function of the whole visible context (the
tokens it attends to), so its joint distribution over short continuations can be enumerated
exactly. Its "KV cache" is the list of tokens it has seen; a 4-D attention mask selects which of
them each query sees (tree verification), and position ids are checked against the context
length, so a decoder that builds a wrong tree mask or wrong positions gets wrong numbers.
"""

from __future__ import annotations

from typing import Iterable

import torch

from spsamp.models.adapter import Forward
from spsamp.sampling import logits_to_probs


class ToyLM:
    dtype = torch.float64

    def __init__(self, vocab: int, seed: int, scale: float = 1.0, eos_ids: Iterable[int] = ()):
        self.vocab, self.seed, self.scale = vocab, seed, scale
        self.eos_ids = set(eos_ids)
        self.cache: list[int] = []
        self.calls = 0
        self._table: dict[tuple[int, ...], torch.Tensor] = {}

    # ---- the CausalLM surface the decoders use ----
    @property
    def cache_len(self) -> int:
        return len(self.cache)

    @property
    def vocab_size(self) -> int:
        return self.vocab

    def reset(self) -> None:
        self.cache = []

    def crop(self, length: int) -> None:
        self.cache = self.cache[:length]

    def keep_positions(self, keep: torch.Tensor) -> None:
        self.cache = [self.cache[i] for i in keep.tolist()]

    def prefill(self, ids: torch.Tensor, hidden: bool = False) -> Forward:
        self.reset()
        return self.forward(ids, last_only=True)

    def forward(self, ids, *, last_only=False, hidden=False, position_ids=None, attention_mask=None) -> Forward:
        self.calls += 1
        new = ids.reshape(-1).tolist()
        start = len(self.cache)
        keys = self.cache + new
        rows = []
        masks = None if attention_mask is None else (attention_mask[0, 0] == 0).tolist()
        positions = None if position_ids is None else position_ids.reshape(-1).tolist()
        for i in range(len(new)):
            if masks is None:
                ctx = tuple(keys[: start + i + 1])
            else:
                assert masks[i][start + i], "a query must see itself"
                ctx = tuple(t for t, seen in zip(keys, masks[i]) if seen)
            if positions is not None:
                assert positions[i] == len(ctx) - 1, "position id != context length - 1"
            rows.append(self.logits(ctx))
        self.cache = keys
        logits = torch.stack(rows)
        return Forward(logits=logits[-1:] if last_only else logits)

    # ---- exact distribution ----
    def logits(self, ctx: tuple[int, ...]) -> torch.Tensor:
        if ctx not in self._table:
            g = torch.Generator().manual_seed(hash((self.seed,) + ctx) % (2**62))
            self._table[ctx] = self.scale * torch.randn(self.vocab, generator=g, dtype=torch.float64)
        return self._table[ctx]


def exact_joint(lm: ToyLM, prompt: list[int], max_new: int, temperature: float, top_k: int = 0, top_p: float = 1.0) -> dict:
    """{continuation tuple: probability} of sampling from ``lm`` until eos or ``max_new`` tokens."""
    out: dict[tuple[int, ...], float] = {}

    def walk(prefix: tuple[int, ...], prob: float) -> None:
        q = logits_to_probs(lm.logits(tuple(prompt) + prefix), temperature, top_k, top_p)
        for tok, pt in enumerate(q.tolist()):
            if pt == 0.0:
                continue
            seq = prefix + (tok,)
            if tok in lm.eos_ids or len(seq) == max_new:
                out[seq] = out.get(seq, 0.0) + prob * pt
            else:
                walk(seq, prob * pt)

    walk((), 1.0)
    return out


def chi_square_pvalue(samples: list[tuple[int, ...]], joint: dict, min_expected: float = 5.0) -> float:
    """Pearson goodness of fit of ``samples`` to ``joint``; cells with expected count below
    ``min_expected`` are pooled into one cell (the chi-square approximation needs >= 5)."""
    from scipy.stats import chisquare

    n = len(samples)
    counts: dict = {}
    for s in samples:
        counts[s] = counts.get(s, 0) + 1
    assert set(counts) <= set(joint), f"impossible sequences drawn: {set(counts) - set(joint)}"
    obs, exp, pool_o, pool_e = [], [], 0, 0.0
    for seq, prob in joint.items():
        if n * prob >= min_expected:
            obs.append(counts.get(seq, 0))
            exp.append(n * prob)
        else:
            pool_o += counts.get(seq, 0)
            pool_e += n * prob
    if pool_e > 0:
        obs.append(pool_o)
        exp.append(pool_e)
    scale = sum(obs) / sum(exp)  # chisquare wants equal sums; they differ only by float rounding
    return float(chisquare(obs, [e * scale for e in exp]).pvalue)




def assert_cache_is_prefill_of(lm, ids: list[int], atol: float = 1e-6) -> None:
    """``lm``'s KV cache equals a fresh prefill of exactly ``ids`` (every layer, keys and values).

    Tolerance 1e-6 although the tiny models run in float64: HF's eager Llama attention takes its
    softmax in float32 (``softmax(..., dtype=torch.float32)``), so a cache built token by token and
    one built in a single pass differ by ~1e-8 from layer 1 on — plain baseline decoding shows the
    same 2.5e-8 gap. A wrong token or position in the cache gives gaps of order 1.
    """
    from spsamp.models import CausalLM

    assert lm.cache_len == len(ids), f"{lm.name}: cache holds {lm.cache_len} positions, expected {len(ids)}"
    fresh = CausalLM(lm.model, lm.tokenizer, "fresh")
    fresh.forward(torch.tensor(ids))
    for layer, (got, want) in enumerate(zip(lm.cache.layers, fresh.cache.layers)):
        gap = (got.keys - want.keys).abs().max().item() if got.keys.shape == want.keys.shape else float("inf")
        assert gap <= atol, f"{lm.name} layer {layer}: keys differ by {gap:.3e}"
        gap = (got.values - want.values).abs().max().item()
        assert gap <= atol, f"{lm.name} layer {layer}: values differ by {gap:.3e}"


def priced(drafter, c: float, v: dict, vd: dict):
    """A sized drafter (k=auto, grow=cost) with fake measured costs (c, v(n), vd(w) points) that its
    rows' own timings cannot move (cost priors of near-infinite weight): its sizes then do not
    depend on this machine's timings — neither the probe's nor the run's own."""
    import dataclasses

    from spsamp.cost_model import PRIORS, Costs, VerifyCost

    drafter.costs = Costs(c=c, v=VerifyCost(v), vd=VerifyCost(vd))
    drafter.priors = dataclasses.replace(PRIORS, cost_prior_steps=1e12)
    return drafter


# ---- a drafter spy ----


class Spy:
    """Wraps a drafter and records every proposal (the path a case claims to exercise): its size,
    depth and draft passes, the proposal itself and the text it was made after."""

    def __init__(self, drafter):
        self.drafter, self.sizes, self.depths = drafter, [], []
        self.props, self.prefixes = [], []
        self.cut_short = 0  # proposals smaller than both the size asked for and the room left
        self.calls = 0  # draft passes spent (a chain with lookup spends fewer than its tokens)
        self.needs_model = drafter.needs_model

    @property
    def sizer(self):
        return self.drafter.sizer

    def start(self, st):
        self.drafter.start(st)

    def observe(self, step):
        self.drafter.observe(step)

    def size(self, st):
        return self.drafter.size(st)

    def propose(self, st, size, max_depth, hidden):
        self.prefixes.append(list(st.seq))
        prop = self.drafter.propose(st, size, max_depth, hidden)
        self.props.append(prop)
        self.sizes.append(prop.size)
        self.cut_short += prop.size < min(size, max_depth)
        self.depths.append(prop.max_depth)
        self.calls += prop.draft_calls
        return prop


def spied(decoder):
    decoder.drafter = Spy(decoder.drafter)
    return decoder
