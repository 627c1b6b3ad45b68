"""``method=specexec``: SpecExec (Svirschevski et al. 2024, "SpecExec: Massively Parallel
Speculative Decoding for Interactive LLM Inference on Consumer Devices").

One step: the draft grows a best-first tree of up to ``budget`` nodes (:class:`TreeDrafter`), the
target scores root + every node in ONE forward with tree positions and a tree attention mask
(:func:`spsamp.verification.verify`), and :func:`tree_descend` samples from the target and walks
down the tree while the sample is a child (exact for any tree). Only the accepted path survives in
both KV caches (``keep_positions``). Same cache invariant as ``speculative``: the target has seen
``seq[:-1]``, the draft ``seq[:draft.cache_len]``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional

import torch

from spsamp.acceptance.tree import tree_descend
from spsamp.config import ConfigError, GenerationConfig
from spsamp.decoders.base import DecodeOutput, Decoder, begin
from spsamp.drafting.tree import TreeDrafter, TreeStats
from spsamp.models import CausalLM
from spsamp.sampling import logits_to_probs
from spsamp.verification import verify


def _keep(lm: Any, prefix: int, extra: list[int]) -> None:
    # roll a cache back to its first `prefix` entries plus the entries `extra` (in path order)
    if extra == list(range(prefix, prefix + len(extra))):
        lm.crop(prefix + len(extra))
    else:
        lm.keep_positions(torch.tensor(list(range(prefix)) + extra, dtype=torch.long))


class SpecExecDecoder(Decoder):
    needs_draft = True

    @dataclass
    class Params:
        name: str = "specexec"
        budget: int = 16  # draft tree nodes per step (tokens the target verifies besides the root)
        parallel_branches: int = 4  # leaves expanded per batched draft forward
        branch_prune_threshold: float = 0.0  # drop children whose cumulative draft prob is below this
        max_depth: int = 8  # deepest tree level

        def check(self) -> None:
            if self.budget < 1:
                raise ConfigError(f"method.budget: must be >= 1, got {self.budget} — set the tree size in nodes")
            if self.parallel_branches < 1:
                raise ConfigError(f"method.parallel_branches: must be >= 1, got {self.parallel_branches} — use 1 for a sequential build")
            if not 0.0 <= self.branch_prune_threshold < 1.0:
                raise ConfigError(
                    f"method.branch_prune_threshold: must be in [0, 1), got {self.branch_prune_threshold} — use 0 to disable pruning"
                )
            if self.max_depth < 1:
                raise ConfigError(f"method.max_depth: must be >= 1, got {self.max_depth} — set the deepest tree level")

    def __init__(self, **params: Any):
        super().__init__(**params)
        p = self.params
        self.drafter = TreeDrafter(p.budget, p.parallel_branches, p.branch_prune_threshold, p.max_depth)
        self.acceptance = tree_descend

    def generate(
        self,
        target: CausalLM,
        draft: Optional[CausalLM],
        prompt_ids: torch.Tensor,
        gen: GenerationConfig,
        rng: torch.Generator,
    ) -> DecodeOutput:
        assert draft is not None, "specexec needs a draft model"
        st = begin(target, draft, prompt_ids, gen, rng)
        temp, top_k, top_p = gen.temperature, gen.top_k, gen.top_p
        trees: list[TreeStats] = []
        path_nodes = path_hits = 0
        while not st.done:
            t0 = time.perf_counter()
            tree = self.drafter.propose(draft, st.seq[draft.cache_len :], self.params.budget, gen, st.vocab)
            t1 = time.perf_counter()
            base = len(st.seq)  # the draft now holds seq; tree nodes follow at their slots
            node_tokens, parents = tree.proposal.tokens.tolist(), tree.proposal.parents.tolist()
            # q at the root and at every node from one tree-masked target pass
            q_logits = verify(target, st.seq[-1], tree.proposal, tree.depths)
            st.draft_s += t1 - t0
            st.target_s += time.perf_counter() - t1
            q = logits_to_probs(q_logits, temp, top_k, top_p)
            path, nxt = self.acceptance(node_tokens, parents, q, rng)
            chunk = st.extend([node_tokens[i] for i in path] + [nxt])
            kept = path[: len(chunk) - 1]  # tree nodes now in seq[:-1]
            _keep(target, base, [base + i for i in kept])
            reused = []
            for i in kept:  # draft KV of accepted nodes built while drafting: keep, do not recompute
                if tree.slots[i] < 0:
                    break
                reused.append(tree.slots[i])
            _keep(draft, base, reused)
            ts = tree.stats
            trees.append(ts)
            path_nodes += len(kept)
            path_hits += len(reused)
            s = st.stats
            s.target_calls += 1
            s.draft_calls += ts.draft_calls
            s.steps += 1
            s.proposed += ts.size
            s.accepted += len(path)
            end = path[-1] if path else -1
            s.rejections += int(ts.size > 0 and end in set(parents))
            s.accepted_lengths.append(len(path) + 1)
        st.stats.extra = {**tree_metrics(trees, path_nodes, path_hits), "draft_time_s": st.draft_s, "target_time_s": st.target_s}
        return st.output()


def tree_metrics(trees: list[TreeStats], path_nodes: int, path_hits: int) -> dict[str, Any]:
    """Per-row SpecExec extras (defined in docs/records.md)."""
    if not trees:
        return {}
    n = len(trees)
    expansions = sum(t.draft_calls - 1 for t in trees)
    candidates = sum(t.candidates for t in trees)
    return {
        "tree_size_mean": sum(t.size for t in trees) / n,
        "tree_depth_mean": sum(t.depth for t in trees) / n,
        "depth_reached_max": max(t.depth for t in trees),
        "branch_prune_rate": sum(t.pruned for t in trees) / candidates if candidates else 0.0,
        "effective_parallelism": sum(t.expanded for t in trees) / expansions if expansions else 0.0,
        "cache_hit_rate": path_hits / path_nodes if path_nodes else None,
        "max_active_branches": max(t.leaves for t in trees),
    }
