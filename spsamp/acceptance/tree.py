"""SpecExec's exact tree acceptance: sample from the target and descend (Svirschevski et al. 2024,
Sec. 3.2, Alg. 1 "verification"; the same walk as SpecInfer's multi-step verification with a
deterministic tree).

Starting at the root, draw x ~ q(. | prefix, path). If x is a child of the current node, keep it
and descend; otherwise (or at a leaf) x is the last token of this step. Every kept or final token
is a sample from q given everything before it, whatever the tree is, so the output is distributed
exactly as the target's; the tree only decides how many tokens one target pass yields.

The walk reads at most depth + 1 of the tree's rows, so q is computed for those rows only
(:class:`LazyRows`): with a 150k-token vocabulary, turning all ``budget + 1`` rows into
probabilities costs several times the walk itself.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from spsamp.loop import Verdict
from spsamp.sampling import sample


class LazyRows:
    """``rows[i]`` = ``to_probs(logits[i])``, computed when first read."""

    def __init__(self, logits: torch.Tensor, to_probs: Callable[[torch.Tensor], torch.Tensor]):
        self.logits, self.to_probs = logits, to_probs
        self.read: dict[int, torch.Tensor] = {}

    def __getitem__(self, i: int) -> torch.Tensor:
        if i not in self.read:
            self.read[i] = self.to_probs(self.logits[i])
        return self.read[i]


def tree_descend(tokens: list[int], parents: list[int], q: Any, rng: torch.Generator | None) -> tuple[list[int], int]:
    """Returns (accepted node indices, root to deepest, final token).

    tokens / parents: the tree (parents -1 = child of the root, topological order); ``q[0]`` = q at
    the root, ``q[i+1]`` = q at node i (a ``[n+1, V]`` tensor or :class:`LazyRows`).
    """
    children: dict[tuple[int, int], int] = {(par, tok): i for i, (tok, par) in enumerate(zip(tokens, parents))}
    path: list[int] = []
    node = -1
    while True:
        x = int(sample(q[node + 1], rng))  # x ~ q(. | prefix, path to node)
        child = children.get((node, x))
        if child is None:
            return path, x
        path.append(child)
        node = child


class TreeAcceptance:
    """The loop's acceptance rule for trees around a pure walk
    ``fn(tokens, parents, q rows, rng) -> (path, final token)`` (default: :func:`tree_descend`)."""

    needs_hidden = False

    def __init__(self, fn: Callable[..., tuple[list[int], int]] = tree_descend):
        self.fn = fn

    def __call__(self, proposal: Any, out: Any, st: Any) -> Verdict:
        parents = proposal.parents.tolist()
        path, nxt = self.fn(proposal.tokens.tolist(), parents, LazyRows(out.logits, st.probs), st.rng)
        end = path[-1] if path else -1
        return Verdict(path, nxt, rejected=end in set(parents))  # the walk left a node that had children
