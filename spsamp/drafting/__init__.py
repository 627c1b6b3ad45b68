"""Drafters: propose the tokens a step verifies, as a chain (SpS, AutoJudge), a tree (SpecExec) or
looked up in the text so far without any draft model (prompt lookup).

Every drafter follows :class:`spsamp.loop.Drafter`: ``start(st)`` (a row begins), ``size(st)`` (k or
the tree budget, asked every step), ``propose(st, size, max_depth, hidden) -> Proposal`` and
``observe(step)`` (the step just verified; sized drafters learn from it, :mod:`spsamp.drafting.sizing`).
A drafter with a draft model feeds the tokens that model has not seen yet (ending with the root =
last accepted token) and appends its own work to the draft's KV cache; the loop rolls the cache
back to the accepted path.
"""

from spsamp.drafting.chain import ChainDrafter
from spsamp.drafting.lookup import PromptLookupDrafter
from spsamp.drafting.tree import TreeDrafter, TreeStats

__all__ = ["ChainDrafter", "PromptLookupDrafter", "TreeDrafter", "TreeStats"]
