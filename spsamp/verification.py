"""One target pass over a :class:`~spsamp.proposals.Proposal` (chain or tree), and tree masks.

Tree attention (SpecInfer, Miao et al. 2024; SpecExec, Svirschevski et al. 2024, Sec. 3): the
root (the last accepted token) and all n draft nodes go through the target in **one** forward.
Node i sits at position ``prefix_len + depth(i)`` and attends to the prefix (the KV cache) and to
its own ancestors only, via a 4-D additive mask ``[1, 1, n+1, prefix_len + n + 1]``. Row ``0`` of
the result is q(. | prefix, root); row ``i+1`` is q(. | prefix, root, path to node i). A chain is
verified with the plain causal mask (same numbers, no mask tensor to build).

Sliding-window layers (Mistral, Qwen2 with ``use_sliding_window``, gpt-oss) see, besides the tree
rule, only keys less than ``sliding_window`` positions behind the query (transformers'
``sliding_window_overlay``); :func:`attention_masks` builds that mask by positions, per layer type.
The adapter keeps full-length caches on those layers (:func:`spsamp.models.adapter.new_cache`), so
cache index = position for the prefix.
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


def tree_visibility(anc: torch.Tensor, prefix_len: int) -> torch.Tensor:
    """Bool ``[n+1, prefix_len + n + 1]``: what queries [root, nodes...] see after ``prefix_len`` cached
    positions. The root sees the prefix and itself; node i sees the prefix, the root and ``anc[i]``."""
    n = anc.shape[0]
    visible = torch.zeros(n + 1, prefix_len + n + 1, dtype=torch.bool)
    visible[:, : prefix_len + 1] = True
    visible[1:, prefix_len + 1 :] = anc
    return visible


def tree_mask(anc: torch.Tensor, prefix_len: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask for :func:`tree_visibility` (a model without sliding-window layers)."""
    return additive(tree_visibility(anc, prefix_len), dtype)


def sliding_window(lm: Any) -> tuple[int | None, list[str] | None]:
    """(window, layer types) of a model with sliding-window layers; (None, None) otherwise.

    Layer types None with a window: every layer slides (Mistral's config has no ``layer_types``)."""
    config = getattr(getattr(lm, "model", None), "config", None)
    window = getattr(config, "sliding_window", None)
    if not window:
        return None, None
    types = getattr(config, "layer_types", None)
    if types is not None and "sliding_attention" not in types:
        return None, None
    return int(window), list(types) if types is not None else None


def attention_masks(
    lm: Any, visible: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The additive mask(s) ``lm`` needs for a forward where query i sees keys ``visible[i]``.

    q_pos ``[m]`` / k_pos ``[L]``: positions of the queries and of every key (cache, then new). A
    model with sliding-window layers also hides keys at ``k <= q - window`` from those layers: one
    windowed mask when every layer slides, else a ``{layer type: mask}`` dict, the form transformers'
    hybrid models (Qwen2, gpt-oss, Gemma) accept in place of the masks they would build.
    """
    dtype = model_dtype(lm)
    window, types = sliding_window(lm)
    if window is None:
        return additive(visible, dtype)
    windowed = additive(visible & (k_pos[None, :] > q_pos[:, None] - window), dtype)
    if types is None:
        return windowed
    return {"full_attention": additive(visible, dtype), "sliding_attention": windowed}


def additive(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool ``[m, L]`` (or per row of a batch, ``[B, m, L]``) visibility -> float ``[1, 1, m, L]``
    (``[B, 1, m, L]``) mask (0 = attend, dtype min = masked)."""
    mask = torch.zeros(visible.shape, dtype=dtype)
    mask.masked_fill_(~visible, torch.finfo(dtype).min)
    return mask[None, None] if mask.dim() == 2 else mask[:, None]


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
    visible = tree_visibility(ancestor_matrix(proposal.parents.tolist()), prefix)
    mask = attention_masks(target, visible, pos[0], torch.cat([torch.arange(prefix), pos[0]]))
    return target.forward(ids, hidden=hidden, position_ids=pos, attention_mask=mask)
