"""Batched speculative sampling with fixed k: a batch of prompts drafted and verified together.

The single-prompt loop (:func:`spsamp.loop.speculate`) rolls a cache back by cropping it; rows of
one batch accept different numbers of draft tokens, so here nothing is cropped or recomputed: each
cache column a row rejected is masked out for that row (its mask entry set to 0) and stays in the
cache as a hole, like left padding (:mod:`spsamp.batching`: per-row masks and positions count only
a row's valid columns). Both caches grow by the step's width every step; holes cost attention
width, not correctness.

Per row the step is the loop's: the draft proposes ``k_i = min(k, room_i - 1)`` tokens (sampled
with the row's own generator, in the same order as alone), the target verifies root + chain in one
pass, :func:`spsamp.acceptance.rejection.rejection_sampling` keeps a prefix and draws one token. A
row that kept its whole chain has a draft token the draft has not seen (the last one): it is fed
first in the next step's first draft pass, a column the other rows mask out. A finished row keeps
feeding masked columns until the batch ends. Without a draft model (prompt lookup) each row's chain
is looked up in its own prompt + output.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import torch

from spsamp.acceptance.rejection import fit_logits, fit_vocab, rejection_sampling
from spsamp.batching import left_pad, pad_id, positions, row_masks
from spsamp.config import GenerationConfig
from spsamp.loop import DecodeOutput, DecodeStats, Timer, truncate_at_eos
from spsamp.sampling import logits_to_probs, sample_rows


def _forward(lm: Any, cols: list[list[int]], valid: list[list[bool]], mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Feed ``cols`` ([B][n] ids) after ``lm``'s cache, ``valid`` saying which new columns count for
    each row; returns (logits ``[B, n, V]``, the grown mask)."""
    n = len(cols[0])
    mask = torch.cat([mask, torch.tensor(valid, dtype=mask.dtype)], dim=1)
    logits = lm.forward_rows(torch.tensor(cols, dtype=torch.long), row_masks(lm, mask, n), positions(mask, n))
    return logits, mask


def speculate_rows(target: Any, draft: Any, prompts: list[torch.Tensor], gen: GenerationConfig, rngs: list[torch.Generator],
                   k: int, rule: Any = rejection_sampling, propose: Optional[Callable[[list[int], int], list[int]]] = None) -> list[DecodeOutput]:
    """Decode ``prompts`` together with fixed-``k`` chains (module docstring); one output per row.
    ``rule``: the acceptance function, ``fn(draft_tokens, p | None, q, rng) -> (kept, next token)``.
    Without a ``draft``, ``propose(prompt + output, n)`` gives each row's chain of at most ``n``
    tokens, a deterministic proposal (prompt lookup: a one-hot p)."""
    def probs(logits: torch.Tensor) -> torch.Tensor:
        return logits_to_probs(logits, gen.temperature, gen.top_k, gen.top_p)

    timer, b = Timer(), len(prompts)
    pad = pad_id(target.eos_ids)
    ids, mask = left_pad(prompts, pad)
    width = ids.shape[1]
    logits = target.prefill_rows(ids, row_masks(target, mask, width), positions(mask, width))
    timer.prefill_done()
    t0 = time.perf_counter()
    if draft is not None:
        draft.prefill_rows(ids, row_masks(draft, mask, width), positions(mask, width))
    draft_s = time.perf_counter() - t0
    history = [p.tolist() for p in prompts]  # + tokens[i]: what a lookup searches
    tmask, dmask = mask, mask.clone()
    vocab = int(logits.shape[-1])
    tokens: list[list[int]] = [[] for _ in range(b)]
    done = [False] * b
    stats = [DecodeStats(target_calls=1, draft_calls=int(draft is not None)) for _ in range(b)]
    unseen: list[Optional[int]] = [None] * b  # a kept draft token the draft has not been fed

    def extend(i: int, chunk: list[int]) -> list[int]:
        kept, done[i] = truncate_at_eos(chunk, target.eos_ids, gen.max_new_tokens - len(tokens[i]))
        tokens[i] += kept
        return kept

    for i, tok in enumerate(sample_rows(probs(logits), rngs)):
        extend(i, [tok])
    timer.first_token()
    target_s = timer.prefill_s
    while not all(done):
        live = [i for i in range(b) if not done[i]]
        ks = [0 if done[i] else min(k, gen.max_new_tokens - len(tokens[i]) - 1) for i in range(b)]
        t0 = time.perf_counter()
        if draft is None:
            assert propose is not None, "speculate_rows needs a draft model or a propose function"
            found = [propose(history[i] + tokens[i], ks[i]) if ks[i] else [] for i in range(b)]
            ks = [len(f) for f in found]
        depth = max(ks)
        chain = [[pad] * depth for _ in range(b)]
        p_rows: list[list[torch.Tensor]] = [[] for _ in range(b)]
        if draft is None:
            for i, f in enumerate(found):
                chain[i][: len(f)] = f
        elif depth:
            # first pass: [the unseen token | a masked pad, the root]
            cols = [[unseen[i] if unseen[i] is not None else pad, tokens[i][-1]] for i in range(b)]
            valid = [[unseen[i] is not None and not done[i], not done[i]] for i in range(b)]
            for j in range(depth):
                out, dmask = _forward(draft, cols, valid, dmask)
                rows = [i for i in live if j < ks[i]]
                p = probs(fit_logits(out[:, -1], vocab))
                for i, tok in zip(rows, sample_rows(p[rows], [rngs[i] for i in rows])):
                    chain[i][j] = tok
                    p_rows[i].append(p[i])
                for i in rows:
                    stats[i].draft_calls += 1
                if j + 1 < depth:  # the last draft token is not fed: the target's verdict comes first
                    cols = [[chain[i][j]] for i in range(b)]
                    valid = [[j < ks[i]] for i in range(b)]
        t1 = time.perf_counter()
        cols = [[tokens[i][-1]] + chain[i] for i in range(b)]
        valid = [[not done[i]] + [j < ks[i] for j in range(depth)] for i in range(b)]
        before = tmask.shape[1]
        out, tmask = _forward(target, cols, valid, tmask)
        t2 = time.perf_counter()
        draft_s += t1 - t0
        target_s += t2 - t1
        dstart = dmask.shape[1] - depth  # the draft columns of this step's root, x_1 .. x_{depth-1}
        for i in live:
            q = probs(out[i, : ks[i] + 1])
            p = torch.stack(p_rows[i]).to(q.dtype) if p_rows[i] and gen.temperature > 0 else None
            p = None if p is None else fit_vocab(p, vocab)
            n, nxt = rule(torch.tensor(chain[i][: ks[i]], dtype=torch.long), p, q, rngs[i])
            kept = extend(i, chain[i][:n] + [nxt])
            roll_back(tmask, i, before + 1 + n)
            if draft is not None and depth:
                roll_back(dmask, i, dstart + 1 + n)
                unseen[i] = chain[i][n - 1] if n == depth else None
            used = min(n, len(kept))
            s = stats[i]
            s.target_calls += 1
            s.steps += 1
            s.proposed += ks[i] - (n - used)
            s.accepted += used
            s.rejections += int(n < ks[i] and len(kept) == n + 1)
            s.accepted_lengths.append(len(kept))
    for s in stats:
        s.extra = {"draft_time_s": draft_s, "target_time_s": target_s}  # the batch's: every row shares its passes
    return [DecodeOutput(tokens=t, prefill_s=timer.prefill_s, ttft_s=timer.ttft_s, stats=s) for t, s in zip(tokens, stats)]


def roll_back(mask: torch.Tensor, row: int, keep: int) -> None:
    """Roll ``row`` of a cache back to its first ``keep`` columns without recomputing anything: the
    columns after them become holes (masked out for that row, left in the cache)."""
    mask[row, keep:] = 0

