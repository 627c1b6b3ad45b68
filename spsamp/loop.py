"""The one draft -> verify -> accept -> roll back -> count loop every speculative method runs.

A method is a pairing of a :class:`Drafter` (what to propose: a chain, a tree, or tokens looked up
without any draft model) and an :class:`AcceptanceRule` (what to keep: exact rejection sampling,
SpecExec's tree descent, AutoJudge's judge). :func:`speculate` is written once for all of them, in
the spirit of the official SpecExec ``SpecBase`` and transformers' ``CandidateGenerator``:

0. ``drafter.start(st)`` once per row: sizing state belongs to the row.
1. ``drafter.propose(st, drafter.size(st), max_depth=room - 1, hidden=rule.needs_hidden)``: a
   :class:`~spsamp.proposals.Proposal` (tokens + parents; draft probabilities, or ``None`` for a
   deterministic proposal, which is a one-hot p). ``size`` is asked every step: the hook where a
   cost model may choose k or the tree budget. No node deeper than the tokens still allowed
   (``max_new_tokens``) is ever drafted.
2. :func:`~spsamp.verification.verify`: one target pass over root + every node.
3. ``rule(proposal, target_forward, st)`` -> :class:`Verdict`: accepted node path and one token
   of the target's (correction, bonus or the target's own choice).
4. Both KV caches keep the prefix plus the accepted path (the draft also keeps entries it built
   for accepted nodes while drafting, ``Proposal.slots``); statistics count only tokens that
   reach the output (an EOS or the ``max_new_tokens`` cut discards the rest).
5. ``drafter.observe(Step(...))``: what the step proposed and kept, and the seconds it spent in
   each model and in between — all a drafter that sizes its steps learns from.

A batch of prompts (``generation.batch_size`` > 1) runs :func:`speculate_rows`: the same step with
the same two protocols — a :class:`Decoding` per row, one size for the whole step
(``drafter.size_rows``: a fixed k, or k=auto's choice from the batch's costs, 0 for a plain batched
step with no draft pass), each row's proposal (``drafter.propose_rows``), one target pass over
every row, the rule per row, and ``drafter.observe_rows`` (:class:`~spsamp.proposals.RowsStep`).
Rows accept different numbers of tokens, so the batch's caches are rolled back per row by masking
columns out (:mod:`spsamp.batching`), never by cropping; see :class:`Rows`.

Naming, fixed project-wide: **p = draft, q = target**.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import torch

from spsamp.batching import forward_cols, left_pad, pad_id, positions, roll_back, row_masks
from spsamp.config import GenerationConfig
from spsamp.models.adapter import Forward
from spsamp.proposals import Proposal, RowsStep, Step, TreeStats
from spsamp.sampling import logits_to_probs, sample, sample_rows
from spsamp.verification import verify


@dataclass
class DecodeStats:
    """Counters a decoder fills while it runs; the runner turns them into record columns.

    steps: target verification calls after the prefill (baseline: one per token after the first);
    proposed / accepted: draft tokens offered / kept in the output; rejections: steps that ended on
    a rejected draft token; accepted_lengths: per step, tokens that reached the output, the
    target's own token included (they sum to the new tokens after the first).
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
class StepTrace:
    """What one step proposed and kept (a tree drafter's build rides along for method metrics)."""

    proposed: int  # nodes drafted
    depth: int  # deepest node drafted
    kept_nodes: int  # accepted nodes kept in both caches (in the output, before its last token)
    reused: int  # of those, nodes whose draft KV entries (built while drafting) were kept
    stats: Optional[TreeStats] = None  # Proposal.stats


@dataclass
class Decoding:
    """The state one ``generate`` call carries: models, settings, output so far, timings, counters.

    ``seq`` is prompt + generated tokens. Between steps the target has seen ``seq[:-1]`` (the last
    token is the root of the next proposal) and the draft some prefix of it, ``seq[:draft.cache_len]``.
    ``target_s`` / ``draft_s`` sum the seconds spent in each model's passes, ``overhead_s`` each
    step's seconds after both (acceptance, cache upkeep, bookkeeping).
    """

    target: Any
    draft: Any
    gen: GenerationConfig
    rng: Optional[torch.Generator]
    timer: Timer
    stats: DecodeStats
    tokens: list[int]
    seq: list[int]
    vocab: int
    eos_ids: set[int]
    target_s: float = 0.0
    draft_s: float = 0.0
    overhead_s: float = 0.0
    done: bool = False
    trace: list[StepTrace] = field(default_factory=list)

    @property
    def room(self) -> int:
        return self.gen.max_new_tokens - len(self.tokens)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """q (or p) under this call's temperature / top-k / top-p: one path for both models."""
        return logits_to_probs(logits, self.gen.temperature, self.gen.top_k, self.gen.top_p)

    def extend(self, chunk: list[int]) -> list[int]:
        """Append one step's tokens, cut at eos and at the budget; return what was kept."""
        kept, self.done = truncate_at_eos(chunk, self.eos_ids, self.room)
        self.tokens += kept
        self.seq += kept
        return kept

    def count_plain_step(self) -> None:
        """One target pass that chose one token (plain decoding)."""
        self.stats.target_calls += 1
        self.stats.steps += 1
        self.stats.accepted_lengths.append(1)

    def output(self) -> DecodeOutput:
        return DecodeOutput(tokens=self.tokens, prefill_s=self.timer.prefill_s, ttft_s=self.timer.ttft_s, stats=self.stats)


def begin(
    target: Any, draft: Any, prompt_ids: torch.Tensor, gen: GenerationConfig, rng: Optional[torch.Generator]
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
    st = Decoding(target, draft, gen, rng, timer, stats, [], prompt_ids.tolist(), int(logits.shape[-1]), target.eos_ids,
                  target_s=timer.prefill_s, draft_s=draft_s)
    # x_1 ~ q(. | prompt): the target's own first token (argmax at T=0)
    first = int(sample(st.probs(logits), rng))
    timer.first_token()
    st.extend([first])
    return st


# ---- the two protocols ---------------------------------------------------------------------------


class Drafter(Protocol):
    """Proposes draft tokens for one step (chain, tree, or model-free).

    ``needs_model``: whether it reads a draft model (``st.draft``); a drafter that does feeds
    ``st.seq[st.draft.cache_len:]`` first (the root is its last token) and fills ``Proposal.slots``.
    """

    needs_model: bool

    def start(self, st: Decoding) -> None:
        """A row begins (after the prefill): a drafter that sizes its steps starts its estimates afresh."""
        ...

    def size(self, st: Decoding) -> int:
        """Tokens (chain) or nodes (tree) to propose this step: the per-step k / budget hook."""
        ...

    def propose(self, st: Decoding, size: int, max_depth: int, hidden: bool) -> Proposal:
        """At most ``size`` nodes, none deeper than ``max_depth``; with ``hidden``, the draft's last
        hidden state with each token as input where it was computed (``Proposal.hidden``)."""
        ...

    def observe(self, step: Step) -> None:
        """The step just verified and accepted: a drafter that sizes its steps learns from it."""
        ...


class RowsDrafter(Drafter, Protocol):
    """A drafter that also drafts for a batch of rows (:func:`speculate_rows`): one size per step for
    every row, each row's chain at most ``min(size, room - 1)`` tokens."""

    def start_rows(self, target: Any, draft: Any, rows: int) -> None:
        """A batch of ``rows`` rows begins (before its prefill: a cost probe may still use the
        models): sizing state belongs to the batch."""
        ...

    def size_rows(self, rows: "Rows") -> int:
        """The step's size for every row (0: a plain step, no draft pass)."""
        ...

    def propose_rows(self, rows: "Rows", size: int) -> tuple[list[Proposal], list[int]]:
        """Each row's proposal (empty for a finished row) and the tokens each draft pass fed; a
        drafter with a draft model feeds each row ``seq[rows.seen[i]:]`` first (ending with the root),
        sets ``rows.droot`` to the draft column of the roots (-1: no draft pass) and fills
        ``Proposal.slots`` with the draft column of each node it fed."""
        ...

    def observe_rows(self, step: RowsStep) -> None:
        """The batch's step just verified and accepted."""
        ...

    def row_metrics(self, row: int) -> dict[str, Any]:
        """Row ``row``'s ``sizing_*`` metrics after the batch (empty when nothing was sized)."""
        ...


@dataclass
class Verdict:
    path: list[int]  # accepted node indices, root to deepest
    token: int  # the target's token that ends the step (correction, bonus or its own choice)
    rejected: bool  # the step ended on a rejected draft token


class AcceptanceRule(Protocol):
    """Decides what to keep from a proposal given the target's pass over it.

    ``needs_hidden``: ask the drafter and the target for last hidden states (AutoJudge's judge).
    """

    needs_hidden: bool

    def __call__(self, proposal: Proposal, out: Forward, st: Decoding) -> Verdict: ...


# ---- the loop ------------------------------------------------------------------------------------


def keep_path(lm: Any, prefix: int, extra: list[int]) -> None:
    """Roll a KV cache back to its first ``prefix`` entries plus the entries ``extra`` (path order)."""
    if extra == list(range(prefix, prefix + len(extra))):
        lm.crop(prefix + len(extra))
    else:
        lm.keep_positions(torch.tensor(list(range(prefix)) + extra, dtype=torch.long))


def _count(st: "Decoding", prop: Proposal, v: "Verdict", kept: list[int], used: int, cached: int, reused: int) -> None:
    """One verified step into the row's counters and trace. Only what reached the output counts:
    tokens past an eos / the max_new_tokens cut are not accepted, nor proposed (their verdict
    changed nothing)."""
    s = st.stats
    s.target_calls += 1
    s.draft_calls += prop.draft_calls
    s.steps += 1
    s.proposed += prop.size - (len(v.path) - used)
    s.accepted += used
    s.rejections += int(v.rejected and len(kept) == len(v.path) + 1)
    s.accepted_lengths.append(len(kept))
    st.trace.append(StepTrace(prop.size, prop.max_depth, cached, reused, prop.stats))


def speculate(
    target: Any,
    draft: Any,
    prompt_ids: torch.Tensor,
    gen: GenerationConfig,
    rng: Optional[torch.Generator],
    drafter: Drafter,
    rule: AcceptanceRule,
) -> Decoding:
    """Decode one answer with ``drafter`` + ``rule``; returns the final state (``st.output()``)."""
    st = begin(target, draft if drafter.needs_model else None, prompt_ids, gen, rng)
    drafter.start(st)
    hidden = rule.needs_hidden
    while not st.done:
        base = len(st.seq)  # target holds seq[:-1]; verify feeds the root at base - 1, node i at base + i
        t0 = time.perf_counter()
        # a step yields its path + one target token: nodes deeper than room - 1 could never be used
        prop = drafter.propose(st, drafter.size(st), st.room - 1, hidden)
        t1 = time.perf_counter()
        out = verify(target, st.seq[-1], prop, hidden=hidden)
        t2 = time.perf_counter()
        st.draft_s += t1 - t0
        st.target_s += t2 - t1
        v = rule(prop, out, st)
        tokens = prop.tokens.tolist()
        kept = st.extend([tokens[i] for i in v.path] + [v.token])
        used = min(len(v.path), len(kept))  # accepted nodes that reached the output
        cached = v.path[: len(kept) - 1]  # of those, the ones now in seq[:-1]: both caches keep them
        keep_path(target, base, [base + i for i in cached])
        reused: list[int] = []
        if st.draft is not None:
            for i in cached:  # draft KV of accepted nodes built while drafting: keep, do not recompute
                if prop.slots is None or prop.slots[i] < 0:
                    break
                reused.append(prop.slots[i])
            keep_path(st.draft, base, reused)
        _count(st, prop, v, kept, used, len(cached), len(reused))
        overhead = time.perf_counter() - t2
        st.overhead_s += overhead
        drafter.observe(Step(prop, used, t1 - t0, t2 - t1, overhead))
    return st


# ---- a batch of rows -----------------------------------------------------------------------------


@dataclass
class Rows:
    """The state one batched call carries: a :class:`Decoding` per row (output, counters, generator;
    the timer and the models are the batch's) and each cache's padding mask ``[B, columns]``, 1 where
    a column holds one of the row's tokens. Rows share the caches' columns: a column a row rejected,
    or one fed while the row had nothing to feed, is a hole for it (0) and stays in the cache.

    The target holds each row's ``seq[:-1]``; the draft holds ``seq[:seen[i]]`` and is fed the rest,
    ending with the root, in the first draft pass of the next step that drafts: the draft is
    prefilled lazily, so a batch that never drafts never runs it, and after plain steps it catches
    up on their tokens. ``droot``: the draft column of the current step's roots (-1: no draft pass)."""

    sts: list[Decoding]
    pad: int
    tmask: torch.Tensor
    dmask: Optional[torch.Tensor]
    seen: list[int]
    droot: int = -1

    @property
    def live(self) -> list[int]:
        return [i for i, st in enumerate(self.sts) if not st.done]


def speculate_rows(
    target: Any,
    draft: Any,
    prompts: list[torch.Tensor],
    gen: GenerationConfig,
    rngs: list[torch.Generator],
    drafter: RowsDrafter,
    rule: AcceptanceRule,
) -> Rows:
    """Decode ``prompts`` together with ``drafter`` + ``rule`` (a chain rule: one verdict per row);
    returns the final state (``rows.sts[i].output()``).

    Per row the step is :func:`speculate`'s: row i's chain (at most ``min(size, room_i - 1)`` tokens,
    drawn with its own generator in the order it draws alone) and its root go through one target
    pass over all rows, ``rule`` keeps a prefix and one target token, and each cache keeps the
    accepted columns for that row and masks out the rest (:func:`spsamp.batching.roll_back`). A
    finished row feeds masked columns until the batch ends. The draft's prompt pass is the first
    draft pass of the first step that drafts (:class:`Rows`). The seconds in ``st.draft_s`` /
    ``st.target_s`` / ``st.overhead_s`` are the batch's, the same in every row."""
    if rule.needs_hidden:
        raise ValueError("speculate_rows: a rule that reads hidden states decodes one prompt at a time")
    b = len(prompts)
    draft = draft if drafter.needs_model else None
    drafter.start_rows(target, draft, b)
    timer = Timer()
    pad = pad_id(target.eos_ids)
    ids, mask = left_pad(prompts, pad)
    width = ids.shape[1]
    logits = target.prefill_rows(ids, row_masks(target, mask, width), positions(mask, width))
    timer.prefill_done()
    if draft is not None:
        draft.reset()  # prefilled lazily: the prompts are what its first pass catches up on
    draft_s, target_s, overhead_s = 0.0, timer.prefill_s, 0.0
    vocab = int(logits.shape[-1])
    sts = [Decoding(target, draft, gen, rng, timer, DecodeStats(target_calls=1), [], p.tolist(), vocab, target.eos_ids)
           for p, rng in zip(prompts, rngs)]
    rows = Rows(sts, pad, mask, mask.new_zeros((b, 0)) if draft is not None else None, [0] * b)
    for st, tok in zip(sts, sample_rows(sts[0].probs(logits), rngs)):  # x_1 ~ q(. | prompt), per row
        st.extend([tok])
    timer.first_token()
    while rows.live:
        live = rows.live
        bases = [len(st.seq) for st in sts]  # the target holds seq[:-1]: a row's root sits at base - 1
        t0 = time.perf_counter()
        props, draft_widths = drafter.propose_rows(rows, drafter.size_rows(rows))
        t1 = time.perf_counter()
        depth = max(p.size for p in props)
        cols = [[st.seq[-1]] + prop.tokens.tolist() + [pad] * (depth - prop.size) for st, prop in zip(sts, props)]
        valid = [[not st.done] + [j < prop.size for j in range(depth)] for st, prop in zip(sts, props)]
        before = rows.tmask.shape[1]
        out, rows.tmask = forward_cols(target, cols, valid, rows.tmask)
        t2 = time.perf_counter()
        kept_rows: list[Optional[int]] = [None] * b
        for i in live:
            st, prop = sts[i], props[i]
            v = rule(prop, Forward(out[i, : prop.size + 1]), st)
            kept = st.extend([cols[i][1 + j] for j in v.path] + [v.token])
            used = min(len(v.path), len(kept))
            cached = v.path[: len(kept) - 1]
            roll_back(rows.tmask, i, before + 1 + len(cached))
            reused: list[int] = []
            if rows.dmask is not None and rows.droot >= 0:
                for j in cached:  # draft columns of accepted nodes built while drafting: keep, do not recompute
                    if prop.slots is None or prop.slots[j] < 0:
                        break
                    reused.append(prop.slots[j])
                roll_back(rows.dmask, i, (reused[-1] if reused else rows.droot) + 1)
                rows.seen[i] = bases[i] + len(reused)
            _count(st, prop, v, kept, used, len(cached), len(reused))
            kept_rows[i] = used
        overhead = time.perf_counter() - t2
        draft_s, target_s, overhead_s = draft_s + t1 - t0, target_s + t2 - t1, overhead_s + overhead
        drafter.observe_rows(RowsStep(props, kept_rows, t1 - t0, t2 - t1, overhead, b * (depth + 1), draft_widths))
    for st in sts:
        st.draft_s, st.target_s, st.overhead_s = draft_s, target_s, overhead_s
    return rows
