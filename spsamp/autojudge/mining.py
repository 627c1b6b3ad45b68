"""Label mining without manual annotation (Garipov et al. 2025, AutoJudge, Sec. 3.1 / Alg. 1).

For one prompt: the target q answers greedily; the draft p's argmax is computed teacher-forced
along that answer; the mismatches are walked left to right. At mismatch position i the draft
token d_i replaces the target's token, q continues greedily, and an importance check compares the
swapped response with the current one. Same outcome -> label 0 (unimportant) and the swapped
response becomes current (later mismatches are searched along it); different -> label 1 and the
current response is kept. Each mismatch yields one sample: the hidden states of p and q with d_i
as input (see :mod:`spsamp.autojudge.features`) and its label.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from tqdm.auto import tqdm

from spsamp.acceptance.rejection import fit_logits
from spsamp.autojudge.checks import ImportanceCheck
from spsamp.models import CausalLM

log = logging.getLogger(__name__)


def prompt_sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class MiningPrompt:
    id: str
    text: str  # the user turn (hashed into the checkpoint to prove eval prompts are disjoint)
    ids: torch.Tensor  # encoded prompt, ending where the answer starts


@dataclass
class MinedSet:
    """Samples from many prompts: one row per walked mismatch."""

    h_p: list[torch.Tensor] = field(default_factory=list)
    h_q: list[torch.Tensor] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    prompt_ids: list[str] = field(default_factory=list)
    answer_tokens: int = 0
    prompts: int = 0

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


def greedy_continue(q: PrefixCache, seq: list[int], budget: int) -> tuple[list[int], torch.Tensor]:
    """Target's greedy continuation of ``seq`` (up to ``budget`` tokens, eos kept), and q's last-layer
    state at the last token of ``seq`` (the swapped-in draft token during mining)."""
    out, _ = q.run(seq, hidden=True)
    h_last = out.hidden[-1].clone()
    cont: list[int] = []
    if seq[-1] in q.lm.eos_ids:
        return cont, h_last
    while len(cont) < budget:
        tok = int(out.logits[-1].argmax())
        cont.append(tok)
        if tok in q.lm.eos_ids or len(cont) >= budget:
            break
        out, _ = q.run(seq + cont)
    return cont, h_last


def mine_prompt(
    target: PrefixCache,
    draft: PrefixCache,
    prompt: list[int],
    max_new: int,
    check: ImportanceCheck,
    decode: Callable[[list[int]], str],
    need_draft_hidden: bool = True,
    vocab: Optional[int] = None,
) -> tuple[list[tuple[int, int, int, Optional[torch.Tensor], torch.Tensor]], list[int], list[int]]:
    """Walk one prompt's mismatches (AutoJudge Alg. 1).

    Returns ``(samples, original_answer, final_answer)`` with samples
    ``(position, draft_token, label, h_p, h_q)``; label 1 = important.
    """
    n_prompt = len(prompt)
    original, _ = greedy_continue(target, prompt, max_new)
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
        cont, h_q = greedy_continue(target, swapped_prefix, max_new - i - 1)
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
    prompts: list[MiningPrompt],
    max_new: int,
    check: ImportanceCheck,
    need_draft_hidden: bool = True,
) -> MinedSet:
    """Mine labelled mismatches over ``prompts`` (greedy target answers of ``max_new`` tokens)."""
    q, p = PrefixCache(target), PrefixCache(draft)
    decode = lambda ids: target.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    mined = MinedSet()
    for pr in tqdm(prompts, desc="autojudge mining", unit="prompt", disable=None):
        samples, original, _ = mine_prompt(q, p, pr.ids.tolist(), max_new, check, decode, need_draft_hidden, target.vocab_size)
        mined.prompts += 1
        mined.answer_tokens += len(original)
        log.debug("mining %s: %d answer tokens, %d mismatches, %d important", pr.id, len(original), len(samples), sum(s[2] for s in samples))
        for _pos, _d, label, h_p, h_q in samples:
            mined.labels.append(label)
            mined.prompt_ids.append(pr.id)
            mined.h_q.append(h_q)
            if h_p is not None:
                mined.h_p.append(h_p)
    target.reset()
    draft.reset()
    n1 = sum(mined.labels)
    log.info("autojudge mining: %d prompts, %d answer tokens, %d mismatches (%d important)", mined.prompts, mined.answer_tokens, len(mined), n1)
    return mined


def split_prompt_ids(ids: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split mining prompts by id into judge-train / judge-validation (no prompt in both)."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * val_fraction)) if len(order) > 1 and val_fraction > 0 else 0
    return sorted(order[n_val:]), sorted(order[:n_val])
