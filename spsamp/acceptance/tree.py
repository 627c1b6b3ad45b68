"""SpecExec's exact tree acceptance: sample from the target and descend (Svirschevski et al. 2024,
Sec. 3.2, Alg. 1 "verification"; the same walk as SpecInfer's multi-step verification with a
deterministic tree).

Starting at the root, draw x ~ q(. | prefix, path). If x is a child of the current node, keep it
and descend; otherwise (or at a leaf) x is the last token of this step. Every kept or final token
is a sample from q given everything before it, whatever the tree is, so the output is distributed
exactly as the target's; the tree only decides how many tokens one target pass yields.
"""

from __future__ import annotations

import torch

from spsamp.sampling import sample


def tree_descend(
    tokens: list[int], parents: list[int], q: torch.Tensor, rng: torch.Generator | None
) -> tuple[list[int], int]:
    """Returns (accepted node indices, root to deepest, final token).

    tokens / parents: the tree (parents -1 = child of the root, topological order); q ``[n+1, V]``:
    row 0 = q at the root, row i+1 = q at node i.
    """
    # one independent draw per row, all at once: the walk reads each row at most once, so this is
    # the same as drawing lazily along the path (and costs one sampling call per step)
    draws = sample(q, rng).tolist()
    children: dict[tuple[int, int], int] = {(par, tok): i for i, (tok, par) in enumerate(zip(tokens, parents))}
    path: list[int] = []
    node = -1
    while True:
        x = draws[node + 1]
        child = children.get((node, x))
        if child is None:
            return path, x
        path.append(child)
        node = child
