"""Rows of different lengths in one forward: left padding, the attention mask and per-row positions.

A batch of prompts is padded on the left, so every row's last prompt token sits in the last column
and each decode step appends one column for all rows. The padding is masked out and each row counts
its positions from its own first real token (``position_ids`` from the mask), so a row computes
what it would alone, up to float rounding of the longer sums.

The mask handed to the model is a 4-D additive one built here (:func:`row_masks`), not the 2-D
padding mask: under the 2-D mask transformers gives a padding query nothing to attend to, and
eager attention's float32 softmax turns a float64 model's all-masked row into NaN, which then
reaches real rows through the next layer's values (0 * NaN). Here a padding query sees itself.
The tensors live on the CPU (bookkeeping); :class:`~spsamp.models.adapter.CausalLM` moves them
to the model's device, as it does tree masks.
"""

from __future__ import annotations

from typing import Any

import torch

from spsamp.verification import additive, attention_masks, model_dtype, sliding_window


def left_pad(prompts: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``prompts`` (1-D id tensors) as ``ids [B, L]`` padded on the left with ``pad_id`` and the
    matching padding mask ``[B, L]`` (1 on real tokens), on the CPU."""
    width = max(int(p.numel()) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        n = int(p.numel())
        ids[i, width - n:] = p.cpu()
        mask[i, width - n:] = 1
    return ids, mask


def row_masks(lm: Any, mask: torch.Tensor, n: int) -> torch.Tensor | dict[str, torch.Tensor]:
    """The additive attention mask(s) ``[B, 1, n, L]`` for the last ``n`` columns of the padding
    mask ``[B, L]`` as queries: causal, padding keys hidden, a padding query seeing itself only
    (see the module docstring); sliding-window layers get their window by each row's positions."""
    width = mask.shape[1]
    causal = torch.ones((n, width), dtype=torch.bool).tril(width - n)
    own = torch.zeros((n, width), dtype=torch.bool)
    own[torch.arange(n), torch.arange(width - n, width)] = True
    pos = (mask.cumsum(dim=-1) - 1).clamp(min=0)
    if sliding_window(lm)[0] is None:  # one mask for all rows at once (per row only with windows)
        return additive((causal[None] & mask.bool()[:, None, :]) | own[None], model_dtype(lm))
    rows = [attention_masks(lm, (causal & mask[b].bool()[None, :]) | own, pos[b, -n:], pos[b]) for b in range(mask.shape[0])]
    if isinstance(rows[0], dict):
        return {kind: torch.cat([r[kind] for r in rows]) for kind in rows[0]}
    return torch.cat(rows)


def positions(mask: torch.Tensor, n: int) -> torch.Tensor:
    """Position ids ``[B, n]`` of the last ``n`` columns of ``mask``: each row's count of real tokens
    before the column (padding columns get 0; they are masked out anyway)."""
    return (mask.cumsum(dim=-1) - 1).clamp(min=0)[:, -n:]


def padding(lengths: list[int]) -> int:
    """Padding tokens a left-padded batch of prompts of these lengths carries."""
    return len(lengths) * max(lengths) - sum(lengths) if lengths else 0


def pad_id(eos_ids: set[int]) -> int:
    """The id left padding is filled with (masked out, so any id would do): the smallest eos id, as
    the transformers reference (:func:`spsamp.decoders.hf_generate.reference_config`) sets ``pad_token_id``."""
    return min(eos_ids) if eos_ids else 0


def forward_cols(lm: Any, cols: list[list[int]], valid: list[list[bool]], mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Feed ``cols`` ([B][n] ids) after ``lm``'s cache, ``valid`` saying which new columns count for
    each row; returns (logits ``[B, n, V]``, the padding mask grown by the ``n`` columns)."""
    n = len(cols[0])
    mask = torch.cat([mask, torch.tensor(valid, dtype=mask.dtype)], dim=1)
    logits = lm.forward_rows(torch.tensor(cols, dtype=torch.long), row_masks(lm, mask, n), positions(mask, n))
    return logits, mask


def roll_back(mask: torch.Tensor, row: int, keep: int) -> None:
    """Roll ``row`` of a batch's cache back to its first ``keep`` columns without recomputing anything:
    the columns after them become holes (masked out for that row, left in the cache; positions and
    masks count only a row's valid columns, so a hole is like left padding)."""
    mask[row, keep:] = 0
