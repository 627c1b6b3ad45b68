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
- ``B > 1`` — pipelined (:func:`_pipelined`): every mismatch of the target's greedy answer is
  labelled against that answer, and every target token — the answers of several prompts and the
  swapped continuations of all their mismatches — is decoded as one batch of up to ``B`` rows
  (:mod:`spsamp.autojudge.greedy_rows`): one target forward per step for all of them, a finished
  row's slot taken at once by a waiting continuation or the next prompt's answer, so the batch
  stays full across prompts. A continuation stops at eos, at its budget, or as soon as ``stop``
  says its outcome is fixed (``final_answer``: the answer is stated; ``tests``: the code block
  has closed).
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Optional

import torch
from tqdm.auto import tqdm

from spsamp.acceptance.rejection import fit_logits
from spsamp.autojudge.checks import ImportanceCheck
from spsamp.autojudge.greedy_rows import GreedyRows, Row, batched_continuations, prefill_kv
from spsamp.autojudge.journal import MiningJournal, PromptEntry, Sample, prompt_sha
from spsamp.models import CausalLM

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
    ``batch`` = 1: the paper's walk, > 1: every token decoded in one batch of rows (module doc). With a
    ``journal`` each prompt is written as soon as it is labelled and prompts already there are read
    back, not mined again (:mod:`spsamp.autojudge.journal`); ``seconds`` then sums each prompt's own
    mining time. ``prompts`` may be an endless stream: with ``target_samples`` it is read only until
    that many mismatches are labelled (whole prompts: the last ones may overshoot). ``answer_k`` >= 1:
    the walk's answers and continuations are decoded speculatively with the draft, k tokens a pass."""
    decode = lambda ids: target.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    mined = MinedSet()
    wanted = (lambda: target_samples - len(mined)) if target_samples is not None else (lambda: None)
    t0 = time.perf_counter()
    if batch > 1:
        entries = _pipelined(target, draft, prompts, journal, wanted, max_new, check, decode, need_draft_hidden, batch)
    else:
        entries = _walked(target, draft, prompts, journal, wanted, max_new, check, decode, need_draft_hidden, answer_k)
    bar = tqdm(desc="autojudge mining", unit="prompt", disable=None)
    for pr, sha, entry, from_journal in entries:
        samples = entry.samples
        mined.prompt_shas[pr.id] = sha
        mined.resumed += from_journal
        mined.prompts += 1
        mined.answer_tokens += entry.answer_tokens
        mined.decoded_tokens += entry.decoded_tokens
        mined.seconds += entry.seconds
        so_far = len(mined) + len(samples)
        rate = 60 * so_far / max(mined.seconds, 1e-9)
        bar.update(1)
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


Mined = tuple[MiningPrompt, str, PromptEntry, bool]  # a prompt, its text hash, its samples, read back from the journal?


def _read_back(journal: Optional[MiningJournal], pr: MiningPrompt) -> tuple[str, Optional[PromptEntry]]:
    sha = prompt_sha(pr.text)
    return sha, journal.get(pr.id, sha) if journal is not None else None


def _bound(check: ImportanceCheck, pr: MiningPrompt, decode: Callable[[list[int]], str]) -> tuple[ImportanceCheck, Optional[Stop]]:
    """The check bound to ``pr``'s problem (outcome checks need it) and its stop over answer token ids."""
    bound = check.bind(pr.reference) if hasattr(check, "bind") else check
    stop = getattr(bound, "stop", None)
    return bound, (lambda ids: stop(decode(ids))) if stop is not None else None


def _walked(target: CausalLM, draft: CausalLM, prompts: Iterable[MiningPrompt], journal: Optional[MiningJournal],
            wanted: Callable[[], Optional[int]], max_new: int, check: ImportanceCheck, decode: Callable[[list[int]], str],
            need_draft_hidden: bool, answer_k: int) -> Iterator[Mined]:
    """The paper's walk, one prompt after another."""
    q, p = PrefixCache(target), PrefixCache(draft)
    for pr in prompts:
        sha, entry = _read_back(journal, pr)
        from_journal = entry is not None
        if entry is None:
            entry = _mine_one(q, p, pr, max_new, check, decode, need_draft_hidden, target.vocab_size, answer_k)
            if journal is not None:
                journal.put(pr.id, sha, entry)
        yield pr, sha, entry, from_journal
        left = wanted()
        if left is not None and left <= 0:
            return  # before the stream is read further: an endless source is read no further than needed


def _mine_one(q: PrefixCache, p: PrefixCache, pr: MiningPrompt, max_new: int, check: ImportanceCheck,
              decode: Callable[[list[int]], str], need_draft_hidden: bool, vocab: int, answer_k: int = 0) -> PromptEntry:
    t0 = time.perf_counter()
    bound, stop = _bound(check, pr, decode)
    samples, original, _ = mine_prompt(q, p, pr.ids.tolist(), max_new, bound, decode, need_draft_hidden, vocab, stop, answer_k)
    return PromptEntry(samples, len(original), 0, time.perf_counter() - t0)


@dataclass(eq=False)
class _Open:
    """A prompt being mined by :func:`_pipelined`."""

    pr: MiningPrompt
    sha: str
    check: ImportanceCheck
    stop: Optional[Stop]
    seconds: float = 0.0
    answer: Optional[list[int]] = None
    miss: list[Row] = field(default_factory=list)  # one row per mismatch (its continuation once it ends)
    h_p: list[Optional[torch.Tensor]] = field(default_factory=list)
    left: int = 0  # mismatch rows not ended yet
    entry: Optional[PromptEntry] = None
    from_journal: bool = False


def _pipelined(target: CausalLM, draft: CausalLM, prompts: Iterable[MiningPrompt], journal: Optional[MiningJournal],
               wanted: Callable[[], Optional[int]], max_new: int, check: ImportanceCheck, decode: Callable[[list[int]], str],
               need_draft_hidden: bool, batch: int) -> Iterator[Mined]:
    """Every target token, answers and swapped continuations of many prompts alike, decoded as rows of
    one batch (:class:`GreedyRows`): a prompt's answer is a row; when it ends, the draft's argmax along
    it gives the mismatches, each a row continuing from the answer row's own KV. Free slots go to
    waiting continuations first, then to new prompts while the mismatches expected from the prompts
    in flight fall short of ``wanted()``. Prompts are yielded in stream order, each written to the
    journal as soon as its last continuation is labelled; a step's time is shared among the prompts
    whose rows it decoded."""
    vocab = target.vocab_size
    engine = GreedyRows(target, batch, vocab)
    p = PrefixCache(draft)
    stream = iter(prompts)
    order: deque[_Open] = deque()  # admitted prompts, in stream order
    waiting: deque[Row] = deque()
    counts: list[int] = []  # mismatches per prompt so far: the guess for a prompt still answering

    def expected() -> float:
        guess = sum(counts) / len(counts) if counts else batch
        return sum(len(op.entry.samples) if op.entry else len(op.miss) if op.answer is not None else guess for op in order)

    def enough() -> bool:
        left = wanted()
        return left is not None and expected() >= left

    exhausted = False
    while True:
        while engine.free and waiting:
            engine.add(waiting.popleft())
        while engine.free and not exhausted and not enough():
            pr = next(stream, None)
            if pr is None:
                exhausted = True
                break
            sha, entry = _read_back(journal, pr)
            op = _Open(pr, sha, *_bound(check, pr, decode), entry=entry, from_journal=entry is not None)
            order.append(op)
            if entry is None:
                t0 = time.perf_counter()
                ids = pr.ids.tolist()
                engine.add(Row(prefill_kv(target, ids[:-1]), len(ids) - 1, ids[-1], max_new, op.stop, tag=op, keep_kv=True))
                op.seconds += time.perf_counter() - t0
            else:
                counts.append(len(entry.samples))
        while order and order[0].entry is not None:
            op = order.popleft()
            yield op.pr, op.sha, op.entry, op.from_journal
        if not engine.busy:
            if waiting or (not exhausted and not enough()):
                continue
            return
        share = Counter(row.tag for row in engine.rows if row is not None)
        t0 = time.perf_counter()
        ended = engine.step()
        dt = (time.perf_counter() - t0) / sum(share.values())
        for op, rows in share.items():
            op.seconds += dt * rows
        for row in ended:
            op = row.tag
            t0 = time.perf_counter()
            if op.answer is None:
                waiting.extend(_answered(op, row, p, max_new, need_draft_hidden, vocab, batch))
            else:
                op.left -= 1
            if op.left == 0:
                samples = _labelled(op, decode)
                op.seconds += time.perf_counter() - t0
                op.entry = PromptEntry(samples, len(op.answer), sum(len(r.cont) for r in op.miss), op.seconds)
                counts.append(len(samples))
                if journal is not None:
                    journal.put(op.pr.id, op.sha, op.entry)
            else:
                op.seconds += time.perf_counter() - t0


def _answered(op: _Open, row: Row, p: PrefixCache, max_new: int, need_draft_hidden: bool, vocab: int, batch: int) -> list[Row]:
    """The answer row ended: its mismatches with the draft's argmax, as rows continuing from its KV."""
    prompt, answer = op.pr.ids.tolist(), row.cont
    op.answer, n = answer, len(prompt)
    if not answer:
        return []
    # p's teacher-forced argmax at answer[i] comes from position n + i - 1
    out, start = p.run(prompt + answer, from_pos=n - 1)
    d_arg = fit_logits(out.logits, vocab).argmax(-1).tolist()
    miss = [(i, d_arg[n - 1 + i - start]) for i in range(len(answer)) if d_arg[n - 1 + i - start] != answer[i]]
    if need_draft_hidden and miss:
        # h_p: p's state with d_i as input after answer[:i]: its cache holds every prefix, so a zero budget
        _, h = batched_continuations(p.lm, [n + i for i, _ in miss], [d for _, d in miss], [0] * len(miss), lambda b, c: c, batch=batch)
        op.h_p = list(h)
    else:
        op.h_p = [None] * len(miss)
    stop = op.stop
    op.miss = [Row(row.out_kv, n + i, d, max_new - i - 1, None if stop is None else (lambda c, pre=answer[:i] + [d]: stop(pre + c)),
                   tag=op) for i, d in miss]
    op.left = len(op.miss)
    return op.miss


def _labelled(op: _Open, decode: Callable[[list[int]], str]) -> list[Sample]:
    """Every mismatch of ``op`` labelled by its check (swapped answer against the original); the rows'
    KV references go (the answer's KV is freed with the last one)."""
    answer, n = op.answer, len(op.pr.ids)
    samples = []
    for row, h_p in zip(op.miss, op.h_p):
        i, d = row.length - n, row.first
        samples.append((i, d, int(bool(op.check(answer, answer[:i] + [d] + row.cont, i, decode))), h_p, row.h_first))
        row.kv = []
    return samples


def split_prompt_ids(ids: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split mining prompts by id into judge-train / judge-validation (no prompt in both)."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * val_fraction)) if len(order) > 1 and val_fraction > 0 else 0
    return sorted(order[n_val:]), sorted(order[:n_val])
