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
class TreeStats:
    """What one tree build did (SpecExec's drafter; aggregated into the row's metrics)."""

    size: int = 0  # nodes in the tree
    depth: int = 0  # deepest node
    leaves: int = 0  # nodes without children = root-to-leaf branches
    draft_calls: int = 0  # draft forwards (root forward included)
    expanded: int = 0  # nodes fed through the draft (their KV entries are in the draft cache)
    candidates: int = 0  # children considered (top children of expanded nodes)
    pruned: int = 0  # of those, dropped by branch_prune_threshold
    cut: int = 0  # grow=cost: best-ranked nodes left unverified (not worth their verify cost)
    expected: float = 0.0  # grow=cost: the verified tree's value to the draft (sum of path probabilities)
    guessed: int = 0  # lookup tokens fed with the draft passes
    guess_kept: int = 0  # of those, nodes expanded by it (a top child of the node before it)


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
    stats: Optional[TreeStats] = None  # a tree drafter's build (None for a chain)
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


@dataclass
class Step:
    """A proposal's step after the loop verified it, as ``Drafter.observe`` receives it (spsamp.loop)."""

    proposal: Proposal
    kept: int  # draft tokens of the proposal that reached the output (its accepted path, cut at eos / the budget)
    draft_s: float  # seconds proposing
    target_s: float  # seconds in the verify pass
    overhead_s: float  # seconds after it: the acceptance rule, cache roll-back, bookkeeping


@dataclass
class RowsStep:
    """A batch's step after :func:`spsamp.loop.speculate_rows` verified it, as ``Drafter.observe_rows``
    receives it: each row's proposal and the draft tokens of it that reached the output (``kept[i]``
    is None for a row that had finished before the step), the batch's seconds proposing, in the
    verify pass and after it, the tokens the verify pass fed (``verify_width``: every row's columns,
    a finished row's masked ones included) and the tokens each draft pass fed (``draft_widths``)."""

    proposals: list[Proposal]
    kept: list[Optional[int]]
    draft_s: float
    target_s: float
    overhead_s: float
    verify_width: int
    draft_widths: list[int]
