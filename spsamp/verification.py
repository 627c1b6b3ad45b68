"""One target pass over a :class:`~spsamp.proposals.Proposal` (chain or tree), and tree masks.

Tree attention (SpecInfer, Miao et al. 2024; SpecExec, Svirschevski et al. 2024, Sec. 3): the
root (the last accepted token) and all n draft nodes go through the target in **one** forward.
Node i sits at position ``prefix_len + depth(i)`` and attends to the prefix (the KV cache) and to
its own ancestors only, via a 4-D additive mask ``[1, 1, n+1, prefix_len + n + 1]``. Row ``0`` of
the result is q(. | prefix, root); row ``i+1`` is q(. | prefix, root, path to node i). A chain is
verified with the plain causal mask (same numbers, no mask tensor to build).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from spsamp.proposals import Proposal


def model_dtype(lm: Any) -> torch.dtype:
    """Float dtype of a model's activations (the additive mask must match it)."""
    dtype = getattr(lm, "dtype", None) or getattr(getattr(lm, "model", None), "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32


def ancestor_matrix(parents: Sequence[int]) -> torch.Tensor:
    """``A[i, j]`` = node j is node i or one of its ancestors (parents topologically ordered)."""
    n = len(parents)
    anc = torch.eye(n, dtype=torch.bool)
    for i, par in enumerate(parents):
        if par >= 0:
            anc[i] |= anc[par]
    return anc


def tree_mask(anc: torch.Tensor, prefix_len: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask for queries = [root, nodes...] after ``prefix_len`` cached positions.

    The root sees the prefix and itself; node i sees the prefix, the root and ``anc[i]``.
    """
    n = anc.shape[0]
    visible = torch.zeros(n + 1, prefix_len + n + 1, dtype=torch.bool)
    visible[:, : prefix_len + 1] = True
    visible[1:, prefix_len + 1 :] = anc
    return additive(visible, dtype)


def additive(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool ``[m, L]`` visibility -> float ``[1, 1, m, L]`` mask (0 = attend, dtype min = masked)."""
    mask = torch.zeros(visible.shape, dtype=dtype)
    mask.masked_fill_(~visible, torch.finfo(dtype).min)
    return mask[None, None]


def verify(target: Any, root: int, proposal: Proposal, hidden: bool = False) -> Any:
    """Run the target once over ``[root] + proposal.tokens``; return its :class:`Forward`: logits
    ``[n+1, V]`` and, with ``hidden``, last hidden states ``[n+1, H]`` (row 0 = the root).

    The target cache holds the prefix (everything before ``root``); afterwards it also holds the
    root and every node, and the caller keeps only the accepted path (``crop`` / ``keep_positions``).
    """
    ids = torch.empty(proposal.size + 1, dtype=torch.long)
    ids[0] = root
    ids[1:] = proposal.tokens
    if proposal.is_chain:
        return target.forward(ids, hidden=hidden)
    prefix = target.cache_len
    pos = torch.empty(1, proposal.size + 1, dtype=torch.long)
    pos[0, 0] = prefix
    pos[0, 1:] = proposal.depths() + prefix
    mask = tree_mask(ancestor_matrix(proposal.parents.tolist()), prefix, model_dtype(target))
    return target.forward(ids, hidden=hidden, position_ids=pos, attention_mask=mask)
