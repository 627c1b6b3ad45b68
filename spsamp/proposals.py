"""What a drafter hands to a verifier: draft tokens arranged as a tree (a chain is a tree too).

Naming, fixed project-wide: **p = draft** distribution, **q = target** distribution.

Node ``i`` holds token ``tokens[i]``, drafted from ``p_dist[i]`` = p(. | prefix, path to its parent).
``parents[i]`` is the index of its parent node, or -1 for children of the root (the root is the
last accepted token, already in both KV caches' input). Nodes are topologically ordered
(parents before children), so a chain of k tokens has ``parents = [-1, 0, 1, ..., k-2]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class Proposal:
    tokens: torch.Tensor  # [n] long
    parents: torch.Tensor  # [n] long, -1 = child of the root
    p_dist: Optional[torch.Tensor] = None  # [n, V] draft distribution each token was drawn from

    @classmethod
    def chain(cls, tokens: torch.Tensor, p_dist: Optional[torch.Tensor] = None) -> "Proposal":
        n = tokens.numel()
        return cls(tokens=tokens, parents=torch.arange(-1, n - 1, dtype=torch.long), p_dist=p_dist)

    @property
    def size(self) -> int:
        return int(self.tokens.numel())

    @property
    def is_chain(self) -> bool:
        return bool((self.parents == torch.arange(-1, self.size - 1)).all())

    def depths(self) -> torch.Tensor:
        """Depth of every node (children of the root have depth 1)."""
        depth = torch.zeros(self.size, dtype=torch.long)
        for i, par in enumerate(self.parents.tolist()):
            depth[i] = 1 if par < 0 else depth[par] + 1
        return depth
