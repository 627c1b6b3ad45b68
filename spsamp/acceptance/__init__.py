"""Acceptance rules: given a proposal and the target's pass over it, decide what to keep.

Each rule is a short pure tensor function wrapped in a :class:`spsamp.loop.AcceptanceRule` and
swappable on its decoder (``decoder.acceptance``): :func:`rejection_sampling` for chains (SpS,
prompt lookup), :func:`tree_descend` for trees (SpecExec), :class:`LossyAcceptance` for the
training-free lossy rules (typical, top-k, probability ratio: :mod:`spsamp.acceptance.lossy`);
AutoJudge's judge rule lives with its decoder.
"""

from spsamp.acceptance.lossy import LossyAcceptance, lossy_rejection_sampling
from spsamp.acceptance.rejection import ChainAcceptance, correction, fit_logits, fit_vocab, ratio_test, rejection_sampling
from spsamp.acceptance.tree import LazyRows, TreeAcceptance, tree_descend

__all__ = ["ChainAcceptance", "LazyRows", "LossyAcceptance", "TreeAcceptance", "correction", "fit_logits", "fit_vocab",
           "lossy_rejection_sampling", "ratio_test", "rejection_sampling", "tree_descend"]
