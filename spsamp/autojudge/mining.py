"""Label mining without manual annotation (Garipov et al. 2025, AutoJudge, Sec. 3.1 / Alg. 1).

For one prompt the target q answers greedily and the draft p's argmax is computed teacher-forced
along that answer. At a mismatch position i the draft token d_i replaces the target's token, q
continues greedily, and an importance check compares the swapped response's outcome with the
original's. Each mismatch yields one sample: the hidden states of p and q with d_i as input (see
:mod:`spsamp.autojudge.features`) and its label (1 = important). Two schedules
(``method.mining_batch``):

- ``1`` — the paper's walk (Alg. 1, :func:`mine_prompt`): mismatches left to right, one swapped
  continuation at a time; an unimportant swap becomes the current answer and later mismatches
  are searched along it.
- ``B > 1`` — batched (:func:`mine_prompt_batched`): every mismatch of the target's greedy answer
  is labelled against that answer, and the swapped continuations are decoded ``B`` at a time as
  one batch — each sequence with its own length, positions and KV (left-padded copies of the
  answer's cache, an attention mask over the padding), one target forward per step for all of
  them, a finished sequence's place taken by the next waiting one (continuous batching). A continuation stops at eos, at its budget, or as soon as ``stop`` says its outcome is
  fixed (the ``tests`` check: the code block has closed).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import torch
from tqdm.auto import tqdm

from spsamp.acceptance.rejection import fit_logits
from spsamp.autojudge.checks import ImportanceCheck
from spsamp.autojudge.journal import MiningJournal, PromptEntry, prompt_sha
from spsamp.models import CausalLM
from spsamp.models.adapter import new_cache

log = logging.getLogger(__name__)


@dataclass
class MiningPrompt:
    id: str
    text: str  # the user turn (hashed into the checkpoint to prove eval prompts are disjoint)
    ids: torch.Tensor  # encoded prompt, ending where the answer starts
    reference: Any = None  # what an outcome check needs (HumanEval: the problem with its tests)


@dataclass
class MinedSet:
    """Samples from many prompts: one row per walked mismatch."""

    h_p: list[torch.Tensor] = field(default_factory=list)
    h_q: list[torch.Tensor] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    prompt_ids: list[str] = field(default_factory=list)
    prompt_shas: dict[str, str] = field(default_factory=dict)  # every prompt mined (even one without mismatches) -> text hash
    positions: list[int] = field(default_factory=list)  # answer position of each mismatch (saved with the mined set)
    answer_tokens: int = 0
    prompts: int = 0
    seconds: float = 0.0  # wall time of mining (answers, continuations, checks, features)
    decoded_tokens: int = 0  # target tokens decoded for swapped continuations
    resumed: int = 0  # prompts read back from a mining journal instead of mined

    @property
    def samples_per_minute(self) -> Optional[float]:
        return 60.0 * len(self) / self.seconds if self.seconds > 0 else None

    def __len__(self) -> int:
        return len(self.labels)


class PrefixCache:
    """A CausalLM plus the token ids its KV cache holds; ``run`` feeds only what is new.

    Mining revisits prefixes of a few sequences (original answer, swapped answers); cropping to
    the longest common prefix instead of re-prefilling keeps each step one short forward.
    """

    def __init__(self, lm: CausalLM):
        self.lm = lm
        self.tokens: list[int] = []
        lm.reset()

    def run(self, seq: list[int], hidden: bool = False, from_pos: Optional[int] = None) -> tuple[Any, int]:
        """Forward ``seq``; returns (outputs for positions ``start..``, ``start``)."""
        common = 0
        for a, b in zip(self.tokens, seq):
            if a != b:
                break
            common += 1
        start = min(common, len(seq) - 1, len(seq) if from_pos is None else from_pos)
        self.lm.crop(start)
        out = self.lm.forward(torch.tensor(seq[start:], dtype=torch.long), hidden=hidden)
        self.tokens = list(seq)
        return out, start


Stop = Callable[[list[int]], bool]  # answer tokens so far -> is its outcome fixed (stop decoding)?


def greedy_continue(q: PrefixCache, seq: list[int], budget: int, stop: Optional[Stop] = None, answer_from: int = 0,
                    draft: Optional[PrefixCache] = None, k: int = 0, vocab: Optional[int] = None) -> tuple[list[int], torch.Tensor]:
    """Target's greedy continuation of ``seq`` (up to ``budget`` tokens, eos kept; or until
    ``stop(answer)`` with answer = ``seq[answer_from:] + cont``), and q's last-layer state at the
    last token of ``seq`` (the swapped-in draft token during mining).

    With a ``draft`` and ``k`` >= 1 the same greedy tokens are found speculatively: p proposes up
    to k tokens greedily, q scores them in one pass and keeps the prefix that matches its own
    argmax plus its next token. Exact in float32/float64; in bf16 a k-token pass can round a
    near-tie differently from one-token passes (as speculative decoding itself does).
    """
    out, _ = q.run(seq, hidden=True)
    h_last = out.hidden[-1].clone()
    cont: list[int] = []
    if seq[-1] in q.lm.eos_ids or budget < 1:
        return cont, h_last
    step = [int(out.logits[-1].argmax())]
    while True:
        for tok in step:
            cont.append(tok)
            if tok in q.lm.eos_ids or len(cont) >= budget or (stop is not None and stop(seq[answer_from:] + cont)):
                return cont, h_last
        here = seq + cont
        if draft is None or k < 1:
            out, _ = q.run(here)
            step = [int(out.logits[-1].argmax())]
            continue
        proposal: list[int] = []
        for _ in range(min(k, budget - len(cont) - 1)):  # a step yields at most len(proposal) + 1 tokens
            d_out, _ = draft.run(here + proposal)
            logits = d_out.logits[-1] if vocab is None else fit_logits(d_out.logits[-1], vocab)
            proposal.append(int(logits.argmax()))
        out, start = q.run(here + proposal, from_pos=len(here) - 1)
        g = out.logits[len(here) - 1 - start :].argmax(-1).tolist()  # q's choice after here, here + d_1, ...
        n = 0
        while n < len(proposal) and proposal[n] == g[n]:
            n += 1
        step = proposal[:n] + [g[n]]


@torch.inference_mode()
def batched_continuations(
    lm: CausalLM,
    lengths: list[int],
    firsts: list[int],
    budgets: list[int],
    answer_of: Callable[[int, list[int]], list[int]],
    stop: Optional[Stop] = None,
    vocab: Optional[int] = None,
    batch: Optional[int] = None,
) -> tuple[list[list[int]], torch.Tensor]:
    """Greedy continuations of sequences decoded as one batch: sequence b is the first ``lengths[b]``
    tokens held in ``lm``'s cache, then ``firsts[b]``, then up to ``budgets[b]`` greedy tokens.

    At most ``batch`` sequences (default: all) decode at a time, and one that finishes hands its
    place to the next waiting one (continuous batching): the batch stays full until the queue runs
    dry, instead of running down to its slowest row. Each row's KV comes from ``lm.cache`` without
    recomputation, right-aligned with the batch's columns (left padding, hidden by the attention
    mask), position ids continue each row from its own length, so one forward per step serves
    every row. Rows stop at eos, at their budget, or when ``stop(answer_of(b, cont))`` holds.
    Returns the continuations and q's last-layer state at each ``firsts[b]`` ``[N, H]``.
    """
    assert lm.cache_len >= max(lengths, default=0), "the cache must hold every prefix"
    dev = lm.device
    source = [(layer.keys, layer.values) for layer in lm.cache.layers]
    cache = new_cache(lm.model.config)  # the same layer types as lm.cache, which the rows are copied from
    conts: list[list[int]] = [[] for _ in lengths]
    h_first: list[Optional[torch.Tensor]] = [None] * len(lengths)
    waiting = list(range(len(lengths)))[::-1]  # popped from the end: in order
    rows: list[int] = []  # batch row -> sequence
    steps: list[int] = []  # forwards each row has had
    nxt: list[int] = []  # each row's next input token
    mask = torch.zeros((0, 0), dtype=torch.long, device=dev)  # [rows, cache columns], 1 = the row's own
    pos = torch.zeros((0, 1), dtype=torch.long, device=dev)
    kw = lm.cache_kwarg  # cache vs past_key_values: the name this model's forward declares
    while rows or waiting:
        new = [waiting.pop() for _ in range(min(len(waiting), (batch or len(lengths)) - len(rows)))]
        if new:  # admit: each new row's prefix KV copied in, right-aligned with the batch's columns
            ns = [lengths[b] for b in new]
            width = max(mask.shape[1], *ns)
            if rows and width > mask.shape[1]:  # a longer prefix: pad every row on the left
                _pad_left(cache, width - mask.shape[1])
            mask = torch.cat([mask.new_zeros((len(rows), width - mask.shape[1])), mask], dim=1)
            _append_rows(cache, [tuple(torch.cat([_right_aligned(x[:, :, :n], width) for n in ns]) for x in kv) for kv in source])
            cols = torch.arange(width, device=dev)
            mask = torch.cat([mask, (cols[None] >= width - torch.tensor(ns, device=dev)[:, None]).long()])
            pos = torch.cat([pos, torch.tensor(ns, dtype=torch.long, device=dev)[:, None]])
            rows, steps, nxt = rows + new, steps + [0] * len(new), nxt + [firsts[b] for b in new]
        ids = torch.tensor(nxt, dtype=torch.long, device=dev).unsqueeze(1)
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        out = lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                       output_hidden_states=bool(new), **{kw: cache})
        for r in range(len(rows) - len(new), len(rows)):
            h_first[rows[r]] = out.hidden_states[-1][r, -1].clone()
        logits = out.logits[:, -1]
        nxt = (logits if vocab is None else fit_logits(logits, vocab)).argmax(-1).tolist()
        keep = []
        for r, b in enumerate(rows):
            step, steps[r] = steps[r], steps[r] + 1
            if step >= budgets[b] or (step == 0 and firsts[b] in lm.eos_ids):
                continue  # budget spent (or the swapped token itself ended the answer)
            tok = nxt[r]
            conts[b].append(tok)
            if tok in lm.eos_ids or len(conts[b]) >= budgets[b] or (stop is not None and stop(answer_of(b, conts[b]))):
                continue
            keep.append(r)
        pos = pos + 1
        if len(keep) == len(rows):
            continue
        rows, steps, nxt = [rows[r] for r in keep], [steps[r] for r in keep], [nxt[r] for r in keep]
        if not keep:
            cache, mask, pos = new_cache(lm.model.config), mask.new_zeros((0, 0)), pos[:0]
            continue
        sel = torch.tensor(keep, dtype=torch.long, device=dev)
        cache.batch_select_indices(sel)
        mask, pos = mask.index_select(0, sel), pos.index_select(0, sel)
        lead = int(mask.any(dim=0).long().argmax())  # columns no remaining row holds (finished rows' prefixes): dropped
        if lead:
            mask = mask[:, lead:]
            _pad_left(cache, -lead)
    return conts, torch.stack(h_first) if h_first else torch.zeros(0, device=dev)


def _right_aligned(x: torch.Tensor, width: int) -> torch.Tensor:
    """``x`` ``[1, H, n, D]`` with ``width - n`` zero columns before it."""
    return torch.cat([x.new_zeros(x.shape[:2] + (width - x.shape[2], x.shape[3])), x], dim=2)


def _pad_left(cache: Any, cols: int) -> None:
    """Add ``cols`` zero columns before every row of ``cache`` (``cols`` < 0: drop the first -cols)."""
    for layer in cache.layers:
        if cols > 0:
            layer.keys, layer.values = (_right_aligned(x, x.shape[2] + cols) for x in (layer.keys, layer.values))
        else:
            layer.keys, layer.values = layer.keys[:, :, -cols:], layer.values[:, :, -cols:]


def _append_rows(cache: Any, rows: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Append rows to ``cache``: ``rows[li]`` = layer li's keys and values ``[b, H, T, D]``."""
    for li, (k, v) in enumerate(rows):
        layer = cache.layers[li]
        if layer.is_initialized:
            layer.keys, layer.values = torch.cat([layer.keys, k]), torch.cat([layer.values, v])
        else:
            cache.update(k, v, li)


def mine_prompt(
    target: PrefixCache,
    draft: PrefixCache,
    prompt: list[int],
    max_new: int,
    check: ImportanceCheck,
    decode: Callable[[list[int]], str],
    need_draft_hidden: bool = True,
    vocab: Optional[int] = None,
    stop: Optional[Stop] = None,
    answer_k: int = 0,
) -> tuple[list[tuple[int, int, int, Optional[torch.Tensor], torch.Tensor]], list[int], list[int]]:
    """Walk one prompt's mismatches (AutoJudge Alg. 1).

    Returns ``(samples, original_answer, final_answer)`` with samples
    ``(position, draft_token, label, h_p, h_q)``; label 1 = important. ``answer_k`` >= 1: target
    continuations are decoded speculatively with the draft (:func:`greedy_continue`).
    """
    n_prompt = len(prompt)
    spec = dict(draft=draft, k=answer_k, vocab=vocab)
    original, _ = greedy_continue(target, prompt, max_new, stop=stop, answer_from=n_prompt, **spec)
    answer = list(original)
    samples = []
    pos = 0
    while pos < len(answer):
        # p's teacher-forced argmax at answer[i] comes from position n_prompt + i - 1
        out, start = draft.run(prompt + answer, from_pos=n_prompt - 1 + pos)
        logits = out.logits if vocab is None else fit_logits(out.logits, vocab)  # draft ids the target can emit
        d_arg = logits.argmax(-1).tolist()
        miss = [i for i in range(pos, len(answer)) if d_arg[n_prompt - 1 + i - start] != answer[i]]
        if not miss:
            break
        i = miss[0]
        d = d_arg[n_prompt - 1 + i - start]
        swapped_prefix = prompt + answer[:i] + [d]
        cont, h_q = greedy_continue(target, swapped_prefix, max_new - i - 1, stop=stop, answer_from=n_prompt, **spec)
        swapped = answer[:i] + [d] + cont
        h_p = draft.run(swapped_prefix, hidden=True)[0].hidden[-1].clone() if need_draft_hidden else None
        important = bool(check(answer, swapped, i, decode))
        samples.append((i, d, int(important), h_p, h_q))
        if not important:
            answer = swapped  # same outcome: the swap is harmless, keep walking along it
        pos = i + 1
    return samples, original, answer


def mine_prompt_batched(
    target: PrefixCache,
    draft: PrefixCache,
    prompt: list[int],
    max_new: int,
    check: ImportanceCheck,
    decode: Callable[[list[int]], str],
    need_draft_hidden: bool = True,
    vocab: Optional[int] = None,
    batch: int = 16,
    stop: Optional[Stop] = None,
    answer_k: int = 0,
) -> tuple[list[tuple[int, int, int, Optional[torch.Tensor], torch.Tensor]], list[int], int]:
    """Label every mismatch of the target's greedy answer against that answer, decoding the
    swapped continuations ``batch`` at a time, a finished one's place taken by the next (see module doc); ``answer_k`` >= 1: the answer
    itself is decoded speculatively with the draft (:func:`greedy_continue`).

    Returns ``(samples, answer, decoded_tokens)``; samples as :func:`mine_prompt`'s.
    """
    n = len(prompt)
    answer, _ = greedy_continue(target, prompt, max_new, stop=stop, answer_from=n, draft=draft, k=answer_k, vocab=vocab)
    if not answer:
        return [], answer, 0
    # p's teacher-forced argmax at answer[i] comes from position n + i - 1
    out, start = draft.run(prompt + answer, from_pos=n - 1)
    logits = out.logits if vocab is None else fit_logits(out.logits, vocab)
    d_arg = logits.argmax(-1).tolist()
    miss = [(i, d_arg[n - 1 + i - start]) for i in range(len(answer)) if d_arg[n - 1 + i - start] != answer[i]]
    if not miss:
        return [], answer, 0
    lengths, firsts = [n + i for i, _ in miss], [d for _, d in miss]
    h_ps: list[Optional[torch.Tensor]] = [None] * len(miss)
    # h_p: p's state with d_i as input after answer[:i] — the draft's cache holds every prefix, so all
    # of them come from batched one-token forwards (a zero budget: no continuation)
    if need_draft_hidden:
        _, h = batched_continuations(draft.lm, lengths, firsts, [0] * len(miss), lambda b, cont: cont, batch=batch)
        h_ps = list(h)
        draft.tokens = []  # as for the target below: start the next prompt from a clean cache
        draft.lm.reset()
    target.run(prompt + answer)  # the cache holds every prefix the batch needs
    conts, h_q = batched_continuations(target.lm, lengths, firsts, [max_new - i - 1 for i, _ in miss],
                                       lambda b, cont: answer[: miss[b][0]] + [miss[b][1]] + cont, stop=stop, vocab=vocab, batch=batch)
    samples = [(i, d, int(bool(check(answer, answer[:i] + [d] + cont, i, decode))), hp, hq)
               for (i, d), cont, hq, hp in zip(miss, conts, h_q, h_ps)]
    decoded = sum(len(c) for c in conts)
    target.tokens = []  # the batch forwards replaced the adapter's cache object: start clean
    target.lm.reset()
    return samples, answer, decoded


def mine(
    target: CausalLM,
    draft: CausalLM,
    prompts: Iterable[MiningPrompt],
    max_new: int,
    check: ImportanceCheck,
    need_draft_hidden: bool = True,
    batch: int = 1,
    journal: Optional[MiningJournal] = None,
    target_samples: Optional[int] = None,
    answer_k: int = 0,
) -> MinedSet:
    """Mine labelled mismatches over ``prompts`` (greedy target answers of ``max_new`` tokens);
    ``batch`` = 1: the paper's walk, > 1: batched continuations (module doc). With a ``journal``
    each prompt is written as soon as it is labelled and prompts already there are read back, not
    mined again (:mod:`spsamp.autojudge.journal`); ``seconds`` then sums each prompt's own mining time.
    ``prompts`` may be an endless stream: with ``target_samples`` it is read only until that many
    mismatches are labelled (whole prompts: the last one may overshoot). ``answer_k`` >= 1: target
    answers (and the walk's continuations) are decoded speculatively with the draft, k tokens a pass."""
    q, p = PrefixCache(target), PrefixCache(draft)
    decode = lambda ids: target.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    mined = MinedSet()
    t0 = time.perf_counter()
    bar = tqdm(prompts, desc="autojudge mining", unit="prompt", disable=None)
    for pr in bar:
        sha = prompt_sha(pr.text)
        mined.prompt_shas[pr.id] = sha
        entry = journal.get(pr.id, sha) if journal is not None else None
        from_journal = entry is not None
        mined.resumed += from_journal
        if entry is None:
            entry = _mine_one(q, p, pr, max_new, check, decode, need_draft_hidden, target.vocab_size, batch, answer_k)
            if journal is not None:
                journal.put(pr.id, sha, entry)
        samples = entry.samples
        mined.prompts += 1
        mined.answer_tokens += entry.answer_tokens
        mined.decoded_tokens += entry.decoded_tokens
        mined.seconds += entry.seconds
        so_far = len(mined) + len(samples)
        rate = 60 * so_far / max(mined.seconds, 1e-9)
        bar.set_postfix(samples=so_far, per_min=f"{rate:.1f}")
        log.info("mining %s%s: %d answer tokens, %d mismatches, %d important (%d samples, %.1f samples/min so far)",
                 pr.id, " (read back from the journal)" if from_journal else "",
                 entry.answer_tokens, len(samples), sum(s[2] for s in samples), so_far, rate)
        for pos, _d, label, h_p, h_q in samples:
            mined.positions.append(pos)
            mined.labels.append(label)
            mined.prompt_ids.append(pr.id)
            mined.h_q.append(h_q)
            if h_p is not None:
                mined.h_p.append(h_p)
        if target_samples is not None and len(mined) >= target_samples:
            break  # before the stream is read further: an endless source is read no further than needed
    bar.close()
    target.reset()
    draft.reset()
    if target_samples is not None and len(mined) < target_samples:
        log.warning("autojudge mining: the prompts ran out after %d prompts with %d of the %d mismatches asked for",
                    mined.prompts, len(mined), target_samples)
    n1 = sum(mined.labels)
    log.info("autojudge mining: %d prompts (%d read back from the journal), %d answer tokens, %d mismatches (%d important) "
             "in %.1fs of mining (%.1fs in this job): %.1f samples/min",
             mined.prompts, mined.resumed, mined.answer_tokens, len(mined), n1, mined.seconds, time.perf_counter() - t0,
             mined.samples_per_minute or 0.0)
    return mined


def _mine_one(q: PrefixCache, p: PrefixCache, pr: MiningPrompt, max_new: int, check: ImportanceCheck,
              decode: Callable[[list[int]], str], need_draft_hidden: bool, vocab: int, batch: int, answer_k: int = 0) -> PromptEntry:
    t0 = time.perf_counter()
    bound = check.bind(pr.reference) if hasattr(check, "bind") else check  # outcome checks need the problem
    stop = getattr(bound, "stop", None)
    stop_ids = (lambda ids, stop=stop: stop(decode(ids))) if stop is not None else None
    decoded = 0
    if batch > 1:
        samples, original, decoded = mine_prompt_batched(q, p, pr.ids.tolist(), max_new, bound, decode, need_draft_hidden,
                                                         vocab, batch, stop_ids, answer_k)
    else:
        samples, original, _ = mine_prompt(q, p, pr.ids.tolist(), max_new, bound, decode, need_draft_hidden, vocab, stop_ids, answer_k)
    return PromptEntry(samples, len(original), decoded, time.perf_counter() - t0)


def split_prompt_ids(ids: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split mining prompts by id into judge-train / judge-validation (no prompt in both)."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * val_fraction)) if len(order) > 1 and val_fraction > 0 else 0
    return sorted(order[n_val:]), sorted(order[:n_val])
