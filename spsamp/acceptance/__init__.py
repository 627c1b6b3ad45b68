"""Acceptance rules: given a proposal and the target's pass over it, decide what to keep.

Each rule is a short pure tensor function wrapped in a :class:`spsamp.loop.AcceptanceRule` and
swappable on its decoder (``decoder.acceptance``): :func:`rejection_sampling` for chains (SpS,
prompt lookup), :func:`tree_descend` for trees (SpecExec); AutoJudge's judge rule lives with its
decoder.
"""

from spsamp.acceptance.rejection import ChainAcceptance, fit_logits, fit_vocab, rejection_sampling
from spsamp.acceptance.tree import LazyRows, TreeAcceptance, tree_descend

__all__ = ["ChainAcceptance", "LazyRows", "TreeAcceptance", "fit_logits", "fit_vocab", "rejection_sampling", "tree_descend"]
