"""Greedy continuations of many sequences as one batch, each row joining and leaving on its own.

A row is a prefix whose keys and values are already computed (any ``[1, H, >= n, D]`` tensors per
layer: another cache's, or a finished row's), the token fed after it and a budget. Rows sit
right-aligned in one KV cache (left padding hidden by the attention mask) with their own position
ids, so one target forward per step serves every row whatever its length. A row stops at eos, at
its budget or when its ``done`` says the outcome is fixed; its slot is handed straight to the next
row (its prefix written over the slot's columns), so the cache is only re-packed when no row is
waiting. Columns no row holds any more are dropped from the left.

Exact in float32/float64: each row's tokens are the ones a one-sequence greedy decode gives. In
bf16 a batched forward may round a near-tie differently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from spsamp.acceptance.rejection import fit_logits
from spsamp.models import CausalLM
from spsamp.models.adapter import new_cache

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [1, H, T, D]


@dataclass(eq=False)
class Row:
    """One sequence to continue greedily: ``kv[:, :, :length]`` then ``first`` then up to ``budget`` tokens."""

    kv: KV
    length: int
    first: int
    budget: int
    done: Optional[Callable[[list[int]], bool]] = None  # continuation so far -> is its outcome fixed?
    tag: Any = None
    keep_kv: bool = False  # hand back the row's own KV when it ends (prefix + first + cont[:-1])
    cont: list[int] = field(default_factory=list)
    h_first: Optional[torch.Tensor] = None  # last-layer state at ``first``
    out_kv: Optional[KV] = None
    steps: int = 0  # forwards this row has had


class GreedyRows:
    """At most ``batch`` rows decoded together; :meth:`add` queues a row, :meth:`step` runs one forward
    and returns the rows that ended."""

    def __init__(self, lm: CausalLM, batch: int, vocab: Optional[int] = None):
        self.lm, self.batch, self.vocab = lm, max(1, batch), vocab
        self.dev = lm.device
        self.cache = new_cache(lm.model.config)
        self.rows: list[Optional[Row]] = []  # batch row -> its sequence; None = a free slot
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.dev)  # [rows, columns], 1 = the row's own
        self.pos = torch.zeros((0,), dtype=torch.long, device=self.dev)  # each row's next position
        self.nxt: list[int] = []  # each row's next input token

    @property
    def busy(self) -> int:
        return sum(r is not None for r in self.rows)

    @property
    def free(self) -> int:
        return self.batch - self.busy

    @torch.inference_mode()
    def add(self, row: Row) -> None:
        """Place ``row`` in a free slot (its prefix written over the slot's columns) or a new one."""
        assert self.free > 0, "no free slot"
        n = row.length
        width = self.mask.shape[1]
        if n > width:  # a longer prefix than the batch holds: every row gets more columns on the left
            self._pad_left(n - width)
            width = n
        own = (torch.arange(width, device=self.dev) >= width - n).long()
        if None in self.rows:  # the prefix over the slot's last n columns; the ones before stay masked
            slot = self.rows.index(None)
            for layer, (k, v) in zip(self.cache.layers, row.kv):
                layer.keys[slot, :, width - n :], layer.values[slot, :, width - n :] = k[0, :, :n], v[0, :, :n]
            self.mask[slot], self.pos[slot] = own, n
            self.rows[slot], self.nxt[slot] = row, row.first
            return
        k_v = [tuple(_right_aligned(x[:, :, :n].to(self.dev), width) for x in kv) for kv in row.kv]
        for li, (k, v) in enumerate(k_v):
            layer = self.cache.layers[li]
            if layer.is_initialized:
                layer.keys, layer.values = torch.cat([layer.keys, k]), torch.cat([layer.values, v])
            else:
                self.cache.update(k, v, li)
        self.mask = torch.cat([self.mask, own[None]])
        self.pos = torch.cat([self.pos, torch.tensor([n], dtype=torch.long, device=self.dev)])
        self.rows.append(row)
        self.nxt.append(row.first)

    @torch.inference_mode()
    def step(self) -> list[Row]:
        """One forward for every row; returns the rows that ended (their slots are free)."""
        self._pack()
        if not self.rows:
            return []
        fresh = [r for r, row in enumerate(self.rows) if row.steps == 0]
        ids = torch.tensor(self.nxt, dtype=torch.long, device=self.dev)[:, None]
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        out = self.lm.model(input_ids=ids, attention_mask=self.mask, position_ids=self.pos[:, None], use_cache=True,
                            logits_to_keep=1, output_hidden_states=bool(fresh), **{self.lm.cache_kwarg: self.cache})
        for r in fresh:
            self.rows[r].h_first = out.hidden_states[-1][r, -1].clone()
        logits = out.logits[:, -1]
        nxt = (logits if self.vocab is None else fit_logits(logits, self.vocab)).argmax(-1).tolist()
        self.pos = self.pos + 1
        ended = []
        for r, row in enumerate(self.rows):
            row.steps += 1
            if not self._extend(row, nxt[r]):
                self.nxt[r] = nxt[r]
                continue
            if row.keep_kv:
                n = row.length + row.steps
                row.out_kv = [(layer.keys[r : r + 1, :, -n:].clone(), layer.values[r : r + 1, :, -n:].clone())
                              for layer in self.cache.layers]
            ended.append(row)
            self.rows[r] = None
            self.mask[r] = 0
        return ended

    def _extend(self, row: Row, tok: int) -> bool:
        """Append q's greedy token to ``row``; True when the row ends here."""
        if row.budget < 1 or (row.steps == 1 and row.first in self.lm.eos_ids):
            return True  # no budget (a forward only for h_first), or the fed token itself ended the answer
        row.cont.append(tok)
        return tok in self.lm.eos_ids or len(row.cont) >= row.budget or (row.done is not None and row.done(row.cont))

    def _pack(self) -> None:
        """Drop free slots (no row is waiting for them) and columns no row holds."""
        keep = [r for r, row in enumerate(self.rows) if row is not None]
        if len(keep) < len(self.rows):
            if not keep:
                self.__init__(self.lm, self.batch, self.vocab)
                return
            sel = torch.tensor(keep, dtype=torch.long, device=self.dev)
            self.cache.batch_select_indices(sel)
            self.mask, self.pos = self.mask.index_select(0, sel), self.pos.index_select(0, sel)
            self.rows, self.nxt = [self.rows[r] for r in keep], [self.nxt[r] for r in keep]
        lead = int(self.mask.any(dim=0).long().argmax()) if self.mask.shape[1] else 0
        if lead:
            self._pad_left(-lead)

    def _pad_left(self, cols: int) -> None:
        """Add ``cols`` zero columns before every row (``cols`` < 0: drop the first -cols)."""
        for layer in self.cache.layers:
            if not layer.is_initialized:
                continue
            if cols > 0:
                layer.keys, layer.values = (_right_aligned(x, x.shape[2] + cols) for x in (layer.keys, layer.values))
            else:
                layer.keys, layer.values = layer.keys[:, :, -cols:], layer.values[:, :, -cols:]
        if cols > 0:
            self.mask = torch.cat([self.mask.new_zeros((self.mask.shape[0], cols)), self.mask], dim=1)
        else:
            self.mask = self.mask[:, -cols:]


def _right_aligned(x: torch.Tensor, width: int) -> torch.Tensor:
    """``x`` ``[b, H, n, D]`` with ``width - n`` zero columns before it."""
    return torch.cat([x.new_zeros(x.shape[:2] + (width - x.shape[2], x.shape[3])), x], dim=2)


def cache_kv(lm: CausalLM) -> KV:
    """The keys and values ``lm``'s own cache holds (one sequence)."""
    return [(layer.keys, layer.values) for layer in lm.cache.layers]


def prefill_kv(lm: CausalLM, ids: list[int]) -> KV:
    """Keys and values of ``ids`` from one forward in a cache of their own (``lm``'s is left alone)."""
    cache = new_cache(lm.model.config)
    if ids:
        with torch.inference_mode():
            lm.model(input_ids=torch.tensor([ids], dtype=torch.long, device=lm.device), use_cache=True, logits_to_keep=1,
                     **{lm.cache_kwarg: cache})
    return [(layer.keys, layer.values) if layer.is_initialized else (_empty(lm), _empty(lm)) for layer in cache.layers]


def _empty(lm: CausalLM) -> torch.Tensor:
    cfg = lm.model.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return torch.zeros((1, heads, 0, dim), dtype=lm.model.dtype, device=lm.device)


def batched_continuations(
    lm: CausalLM,
    lengths: list[int],
    firsts: list[int],
    budgets: list[int],
    answer_of: Callable[[int, list[int]], list[int]],
    stop: Optional[Callable[[list[int]], bool]] = None,
    vocab: Optional[int] = None,
    batch: Optional[int] = None,
) -> tuple[list[list[int]], torch.Tensor]:
    """Greedy continuations of prefixes of the sequence ``lm``'s cache holds: sequence b is its first
    ``lengths[b]`` tokens, then ``firsts[b]``, then up to ``budgets[b]`` tokens, ending early when
    ``stop(answer_of(b, cont))`` holds; ``batch`` at a time (default all). Returns the continuations
    and q's last-layer state at each ``firsts[b]`` ``[N, H]``."""
    assert lm.cache_len >= max(lengths, default=0), "the cache must hold every prefix"
    kv = cache_kv(lm)
    engine = GreedyRows(lm, batch or len(lengths), vocab)
    rows = [Row(kv, n, f, budget, None if stop is None else (lambda c, b=b: stop(answer_of(b, c))))
            for b, (n, f, budget) in enumerate(zip(lengths, firsts, budgets))]
    waiting = list(reversed(rows))
    while waiting or engine.busy:
        while waiting and engine.free:
            engine.add(waiting.pop())
        engine.step()
    h = [row.h_first for row in rows]
    return [row.cont for row in rows], torch.stack(h) if h else torch.zeros(0, device=lm.device)
