"""Acceptance rules: given draft proposals and the target's distributions, decide what to keep.

Each rule is a short pure tensor function, swappable on its decoder (``decoder.acceptance``):
:func:`rejection_sampling` for chains (SpS), :func:`tree_descend` for trees (SpecExec).
"""

from spsamp.acceptance.rejection import ChainAcceptance, fit_vocab, rejection_sampling
from spsamp.acceptance.tree import tree_descend

__all__ = ["ChainAcceptance", "fit_vocab", "rejection_sampling", "tree_descend"]
