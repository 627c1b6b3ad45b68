"""Drafters: propose tokens with the draft model p, as a chain (SpS) or a tree (SpecExec).

A drafter reads the draft's KV cache plus the tokens it has not seen yet (``pending``, ending with
the root = last accepted token), appends its own work to that cache, and returns a
:class:`~spsamp.proposals.Proposal`. The decoder rolls the cache back to the accepted path.
"""

from spsamp.drafting.chain import ChainDrafter
from spsamp.drafting.tree import TreeDrafter, TreeStats

__all__ = ["ChainDrafter", "TreeDrafter", "TreeStats"]
