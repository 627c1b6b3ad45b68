"""``method=specexec``: SpecExec (Svirschevski et al. 2024, "SpecExec: Massively Parallel
Speculative Decoding for Interactive LLM Inference on Consumer Devices").

SpecExec = :class:`TreeDrafter` (a best-first tree of up to ``budget`` nodes by cumulative draft
probability) + :func:`tree_descend` (sample from the target, walk down while the sample is a
child: exact for any tree), run by the one loop: the target scores root + every node in ONE
forward with tree positions and a tree attention mask, and only the accepted path survives in
both KV caches (draft entries built for accepted nodes while drafting are kept, not recomputed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spsamp.acceptance.tree import TreeAcceptance
from spsamp.config import ADDED_LATER, ConfigError
from spsamp.decoders.base import LoopDecoder
from spsamp.drafting.lookup import check_lookup_params
from spsamp.drafting.tree import TreeDrafter
from spsamp.loop import Decoding


class SpecExecDecoder(LoopDecoder):
    needs_draft = True
    wrap_rule = TreeAcceptance

    @dataclass
    class Params:
        name: str = "specexec"
        # draft tree nodes per step (tokens the target verifies besides the root); with grow=cost, the cap.
        # An integer (typed Any so that the retired `auto` gets its own error line, naming grow=cost)
        budget: Any = 16
        parallel_branches: int = 4  # leaves expanded per batched draft forward
        branch_prune_threshold: float = 0.0  # drop children whose cumulative draft probability is below this (0 = off)
        max_depth: int = 8  # deepest tree level
        # budget: grow until `budget` nodes (the paper's rule); cost: `budget` is a cap, each step's
        # passes and verified nodes are chosen from the row's costs (drafting/tree.py, drafting/sizing.py)
        grow: str = field(default="budget", metadata={ADDED_LATER: True})
        # per draft pass, feed up to this many tokens looked up in prompt + output + the path to the
        # pass's best node; those that are top children of the node before them are expanded in that
        # pass (a lookup -> draft cascade, spsamp/drafting/tree.py; SpS's method.lookup); 0: off
        lookup: int = field(default=0, metadata={ADDED_LATER: True})
        lookup_ngram: int = field(default=3, metadata={ADDED_LATER: True})
        lookup_min_ngram: int = field(default=2, metadata={ADDED_LATER: True})

        def check(self) -> None:
            if self.budget == "auto":
                raise ConfigError("method.budget: auto is gone — use method.grow=cost with method.budget as its cap (e.g. 16)")
            if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget < 1:
                raise ConfigError(f"method.budget: must be an integer >= 1, got {self.budget!r} — set the tree size in nodes")
            if self.parallel_branches < 1:
                raise ConfigError(f"method.parallel_branches: must be >= 1, got {self.parallel_branches} — use 1 for a sequential build")
            if not 0.0 <= self.branch_prune_threshold < 1.0:
                raise ConfigError(
                    f"method.branch_prune_threshold: must be in [0, 1), got {self.branch_prune_threshold} — use 0 to disable pruning"
                )
            if self.grow not in ("budget", "cost"):
                raise ConfigError(f"method.grow: must be budget or cost, got {self.grow!r} — budget grows every tree to "
                                  "method.budget nodes, cost sizes each tree from measured pass costs")
            if self.max_depth < 1:
                raise ConfigError(f"method.max_depth: must be >= 1, got {self.max_depth} — set the deepest tree level")
            check_lookup_params(self.lookup, self.lookup_ngram, self.lookup_min_ngram)

    def __init__(self, **params: Any):
        super().__init__(**params)
        p = self.params
        self.drafter = TreeDrafter(p.budget, p.parallel_branches, p.branch_prune_threshold, p.max_depth,
                                   grow=p.grow, lookup=p.lookup, lookup_ngram=p.lookup_ngram, lookup_min_ngram=p.lookup_min_ngram)
        self.acceptance = TreeAcceptance()

    def metrics(self, st: Decoding) -> dict[str, Any]:
        """Per-row SpecExec extras (defined in docs/records.md)."""
        steps = [t for t in st.trace if t.stats is not None]
        if not steps:
            return super().metrics(st)
        trees = [t.stats for t in steps]
        n = len(trees)
        expansions = sum(t.draft_calls - 1 for t in trees)
        candidates = sum(t.candidates for t in trees)
        path_nodes, reused = sum(t.kept_nodes for t in steps), sum(t.reused for t in steps)
        return {
            "tree_size_mean": sum(t.size for t in trees) / n,
            "tree_depth_mean": sum(t.depth for t in trees) / n,
            "depth_reached_max": max(t.depth for t in trees),
            "branch_prune_rate": sum(t.pruned for t in trees) / candidates if candidates else 0.0,
            "effective_parallelism": sum(t.expanded for t in trees) / expansions if expansions else 0.0,
            "cache_hit_rate": reused / path_nodes if path_nodes else None,
            "max_active_branches": max(t.leaves for t in trees),
            "draft_passes_mean": sum(t.draft_calls for t in trees) / n,
            **({"lookup_offered": sum(t.guessed for t in trees), "lookup_kept": sum(t.guess_kept for t in trees)}
               if self.params.lookup else {}),
            **({"tree_cut_mean": sum(t.cut for t in trees) / n} if self.params.grow == "cost" else {}),
            **super().metrics(st),
        }
