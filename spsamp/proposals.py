"""What a drafter hands to the verifier and the acceptance rule: draft tokens arranged as a tree (a
chain is a tree too), plus whatever a rule needs.

Naming, fixed project-wide: **p = draft** distribution, **q = target** distribution.

Node ``i`` holds token ``tokens[i]``, drafted from ``p_dist[i]`` = p(. | prefix, path to its parent).
``p_dist`` is ``None`` for a deterministic proposal (prompt lookup, or a greedy draft): p is then
one-hot at each token, which the rejection rule uses without materialising it. ``parents[i]`` is
the index of the parent node, or -1 for children of the root (the root is the last accepted
token). Nodes are topologically ordered (parents before children), so a chain of k tokens has
``parents = [-1, 0, 1, ..., k-2]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch


@dataclass
class Proposal:
    tokens: torch.Tensor  # [n] long
    parents: torch.Tensor  # [n] long, -1 = child of the root
    p_dist: Optional[torch.Tensor] = None  # [n, V] draft distribution each token was drawn from; None = one-hot
    hidden: Optional[torch.Tensor] = None  # [m, H] draft last hidden state with node j < m as input (on request)
    slots: Optional[list[int]] = None  # draft-cache index of each node, -1 if never fed to the draft
    draft_calls: int = 0  # draft forwards spent on this proposal
    # the tokens each draft pass fed, its pending ones counted as one (a lookup chain's: 1 + its guess;
    # a tree's: the batch + its guess), so the cost model prices pass j at vd(w_j) single-token
    # passes (None: a plain chain, one per draft call)
    pass_widths: Optional[list[int]] = None
    stats: Any = None  # the drafter's own per-step stats (e.g. TreeStats)
    _depths: Optional[torch.Tensor] = field(default=None, repr=False)

    @classmethod
    def chain(cls, tokens: torch.Tensor, p_dist: Optional[torch.Tensor] = None, **kw: Any) -> "Proposal":
        n = tokens.numel()
        return cls(tokens=tokens, parents=torch.arange(-1, n - 1, dtype=torch.long), p_dist=p_dist, **kw)

    @classmethod
    def empty(cls) -> "Proposal":
        return cls.chain(torch.empty(0, dtype=torch.long))

    @property
    def size(self) -> int:
        return int(self.tokens.numel())

    @property
    def is_chain(self) -> bool:
        return bool((self.parents == torch.arange(-1, self.size - 1)).all())

    @property
    def max_depth(self) -> int:
        return int(self.depths().max()) if self.size else 0

    def depths(self) -> torch.Tensor:
        """Depth of every node (children of the root have depth 1)."""
        if self._depths is None:
            depth = torch.zeros(self.size, dtype=torch.long)
            for i, par in enumerate(self.parents.tolist()):
                depth[i] = 1 if par < 0 else depth[par] + 1
            self._depths = depth
        return self._depths


def tree_path(tokens: list[int], parents: list[int], after: list[int]) -> list[int]:
    """Indices of a proposal's nodes the output went through (root down), from ``after``: the
    tokens that followed the root in the output."""
    children = {(par, tok): i for i, (tok, par) in enumerate(zip(tokens, parents))}
    path: list[int] = []
    node = -1
    for tok in after:
        node = children.get((node, tok), -2)
        if node == -2:
            break
        path.append(node)
    return path
