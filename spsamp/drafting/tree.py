"""SpecExec's draft tree (Svirschevski et al. 2024, Sec. 3.1-3.2, Alg. 2 "build tree"): grow the
tree best-first by cumulative draft log-probability, so that with a budget of B nodes it holds
(approximately) the B most likely continuations under p.

Each round pops up to ``parallel_branches`` best candidates from a priority queue keyed by
log p(path) = sum of log p along the path, adds them to the tree, and expands them with ONE batched
draft forward (tree positions + tree mask, the same layout the target verifies); their top children
become new candidates. A child whose cumulative probability falls below ``branch_prune_threshold``
is pruned; nodes at ``max_depth`` are not expanded; growth stops at ``budget`` nodes.

Ranking distribution: the draft at the generation temperature (top-k/top-p applied as for the
target); at temperature 0 the draft's plain softmax (T=1), since a one-hot draft would collapse
the tree to a chain. The tree's shape never affects exactness (see acceptance.tree).
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch

from spsamp.acceptance.rejection import fit_logits
from spsamp.config import GenerationConfig
from spsamp.proposals import Proposal
from spsamp.sampling import logits_to_probs
from spsamp.verification import attention_masks


@dataclass
class TreeStats:
    """What one tree build did (aggregated by the decoder into DecodeStats.extra)."""

    size: int = 0  # nodes in the tree
    depth: int = 0  # deepest node
    leaves: int = 0  # nodes without children = root-to-leaf branches
    draft_calls: int = 0  # draft forwards (root forward included)
    expanded: int = 0  # nodes fed through the draft (their KV entries are in the draft cache)
    candidates: int = 0  # children considered (top children of expanded nodes)
    pruned: int = 0  # of those, dropped by branch_prune_threshold


class TreeDrafter:
    needs_model = True

    def __init__(self, budget: int, parallel_branches: int, branch_prune_threshold: float, max_depth: int):
        self.budget = budget
        self.parallel_branches = parallel_branches
        self.threshold = branch_prune_threshold
        self.log_threshold = math.log(branch_prune_threshold) if branch_prune_threshold > 0 else -math.inf
        self.max_depth = max_depth

    def size(self, st: Any) -> int:
        return self.budget

    def _probs(self, logits: torch.Tensor, gen: GenerationConfig, vocab: int) -> torch.Tensor:
        temp = gen.temperature if gen.temperature > 0 else 1.0
        return logits_to_probs(fit_logits(logits, vocab), temp, gen.top_k, gen.top_p)

    def propose(self, state: Any, size: int, max_depth: int, hidden: bool = False) -> Proposal:
        """Feed the pending tokens (ending with the root) to the draft, then grow a tree of at most
        ``size`` nodes and ``min(self.max_depth, max_depth)`` levels (no hidden states: no tree
        rule asks for them)."""
        depth_cap = min(self.max_depth, max_depth)
        if size < 1 or depth_cap < 1:
            return Proposal.empty()  # nothing could be used: not even the pending tokens are fed
        draft, gen, vocab, budget = state.draft, state.gen, state.vocab, size
        pending = state.seq[draft.cache_len :]
        st = TreeStats()
        tokens: list[int] = []
        parents: list[int] = []
        depths: list[int] = []
        path_lp: list[float] = []  # log p(path to node)
        slots: list[int] = []
        ancestors: list[list[int]] = []  # draft-cache slots of each node's ancestors (itself excluded)
        n_children: list[int] = []
        heap: list[tuple[float, int, int, int]] = []  # (-log p(path), tie-break, parent, token)
        tie = itertools.count()

        logits = draft.forward(torch.tensor(pending, dtype=torch.long), last_only=True).logits
        st.draft_calls = 1
        base = draft.cache_len  # prefix + root: every node sees all of it
        root_pos = base - 1
        key_pos = list(range(base))  # position of each draft-cache entry (sliding-window masks)
        self._push(heap, tie, self._probs(logits, gen, vocab), [-1], [0.0], budget, st)
        while heap and len(tokens) < budget:
            batch: list[int] = []
            while heap and len(batch) < self.parallel_branches and len(tokens) < budget:
                neg_lp, _, par, tok = heapq.heappop(heap)
                i = len(tokens)
                tokens.append(tok)
                parents.append(par)
                path_lp.append(-neg_lp)
                depths.append(1 if par < 0 else depths[par] + 1)
                slots.append(-1)
                n_children.append(0)
                ancestors.append([] if par < 0 else ancestors[par] + [slots[par]])
                if par >= 0:
                    n_children[par] += 1
                if depths[i] < depth_cap:
                    batch.append(i)
            if len(tokens) >= budget or not batch:
                break  # nothing more can be added: the last nodes need no draft pass
            # expand the batch in one draft forward: node j at position root_pos + depth(j), seeing
            # the prefix, its ancestors (all expanded earlier, so already cached) and itself
            cached = draft.cache_len
            visible = torch.zeros(len(batch), cached + len(batch), dtype=torch.bool)
            visible[:, :base] = True
            for j, i in enumerate(batch):
                if ancestors[i]:
                    visible[j, ancestors[i]] = True
                visible[j, cached + j] = True
                slots[i] = cached + j
            pos = torch.tensor([[root_pos + depths[i] for i in batch]], dtype=torch.long)
            key_pos += pos[0].tolist()
            ids = torch.tensor([tokens[i] for i in batch], dtype=torch.long)
            mask = attention_masks(draft, visible, pos[0], torch.tensor(key_pos, dtype=torch.long))
            logits = draft.forward(ids, position_ids=pos, attention_mask=mask).logits
            st.draft_calls += 1
            st.expanded += len(batch)
            self._push(heap, tie, self._probs(logits, gen, vocab), batch, [path_lp[i] for i in batch], budget - len(tokens), st)
        st.size = len(tokens)
        st.depth = max(depths, default=0)
        st.leaves = sum(1 for c in n_children if c == 0)
        return Proposal(
            tokens=torch.tensor(tokens, dtype=torch.long),
            parents=torch.tensor(parents, dtype=torch.long),
            slots=slots,
            draft_calls=st.draft_calls,
            stats=st,
            _depths=torch.tensor(depths, dtype=torch.long),
        )

    def _push(self, heap: list, tie: Any, probs: torch.Tensor, nodes: list[int], node_lp: list[float], room: int, st: TreeStats) -> None:
        # candidates: the top-`room` children of each expanded node (no more could ever be added);
        # log p(child path) = log p(parent path) + log p(token | parent path)
        m = min(room, probs.shape[-1])
        if m <= 0:
            return
        top_p, top_i = torch.topk(probs, m, dim=-1)
        for node, base_lp, row_lp, row_id in zip(nodes, node_lp, torch.log(top_p).tolist(), top_i.tolist()):
            for j, (lp, tok) in enumerate(zip(row_lp, row_id)):
                if lp == -math.inf:
                    break  # zero-probability children (top-k / top-p cut) are no candidates
                st.candidates += 1
                if base_lp + lp < self.log_threshold:
                    # sorted: every later child is below the threshold too
                    rest = sum(1 for x in row_lp[j:] if x != -math.inf)
                    st.candidates += rest - 1
                    st.pruned += rest
                    break
                heapq.heappush(heap, (-(base_lp + lp), next(tie), node, tok))
