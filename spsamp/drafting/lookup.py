"""Prompt lookup: draft tokens copied from the text so far, no draft model (Saxena 2023, "Prompt
Lookup Decoding"; transformers' ``generate(prompt_lookup_num_tokens=...)``).

For n = ``lookup_ngram`` down to 1, find the first earlier occurrence of the last n tokens of
prompt + output; propose the (up to) ``k`` tokens that followed it. The proposal is deterministic:
its draft distribution is one-hot at each token (``p_dist=None``), so exact rejection sampling
accepts x with probability q(x) and otherwise samples from q with x removed, renormalised — the
output is distributed as the target's at any temperature. Extraction, summarisation and code
editing repeat their input, which is where it pays.
"""

from __future__ import annotations

from typing import Any

import torch

from spsamp.config import ConfigError
from spsamp.proposals import Proposal


def lookup(seq: list[int], k: int, lookup_ngram: int, eos_ids: set[int] = frozenset(), lookup_min_ngram: int = 1) -> list[int]:
    """Up to ``k`` tokens that followed the first earlier match of ``seq``'s longest suffix n-gram
    (``lookup_min_ngram`` <= n <= ``lookup_ngram``), cut after an eos (tokens past it could never be output)."""
    if k < 1 or len(seq) < 2:
        return []
    ids = torch.tensor(seq, dtype=torch.long)
    for n in range(min(lookup_ngram, len(seq) - 1), max(lookup_min_ngram, 1) - 1, -1):
        # windows[i] = seq[i:i+n]; a match must leave at least one token after it
        hits = (ids[: len(seq) - 1].unfold(0, n, 1) == ids[-n:]).all(dim=1).nonzero().flatten()
        for start in hits.tolist():
            follow = seq[start + n : start + n + k]
            if follow:
                for j, t in enumerate(follow):
                    if t in eos_ids:
                        return follow[: j + 1]
                return follow
    return []


def check_lookup_params(lookup: Any, ngram: Any, min_ngram: Any) -> None:
    """``method.lookup`` / ``lookup_ngram`` / ``lookup_min_ngram`` of a lookup -> draft cascade (SpS and
    SpecExec): one line naming the field and the fix."""
    for key, value, least in (("lookup", lookup, 0), ("lookup_ngram", ngram, 1), ("lookup_min_ngram", min_ngram, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"method.{key}: must be an integer >= {least}, got {value!r} — e.g. method.lookup=10 method.lookup_ngram=3")
    if min_ngram > ngram:
        raise ConfigError(f"method.lookup_min_ngram: {min_ngram} is above method.lookup_ngram={ngram} — "
                          "set lookup_min_ngram <= lookup_ngram (e.g. 2 and 3)")


class PromptLookupDrafter:
    needs_model = False

    def __init__(self, k: int, lookup_ngram: int):
        self.k = k
        self.lookup_ngram = lookup_ngram

    sizer = None  # a fixed k: nothing to size

    def start(self, st: Any) -> None:
        pass

    def observe(self, step: Any) -> None:
        pass

    def size(self, st: Any) -> int:
        return self.k

    def propose(self, st: Any, size: int, max_depth: int, hidden: bool = False) -> Proposal:
        tokens = lookup(st.seq, min(size, max_depth), self.lookup_ngram, st.eos_ids)
        return Proposal.chain(torch.tensor(tokens, dtype=torch.long))  # p_dist=None: one-hot

    # a batch of rows (spsamp.loop.speculate_rows): each row's chain looked up in its own prompt + output

    def start_rows(self, target: Any, draft: Any, rows: int) -> None:
        pass

    def size_rows(self, rows: Any) -> int:
        return self.k

    def propose_rows(self, rows: Any, size: int) -> tuple[list[Proposal], list[int]]:
        return [Proposal.empty() if st.done else self.propose(st, size, st.room - 1) for st in rows.sts], []

    def observe_rows(self, step: Any) -> None:
        pass

    def row_metrics(self, row: int) -> dict[str, Any]:
        return {}
