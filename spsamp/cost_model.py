"""The speculative-sampling cost model of Leviathan et al. 2023 ("Fast Inference from Transformers via
Speculative Decoding", ICML 2023), used to predict speedups from a measured acceptance rate.

Notation as in the paper: alpha = expected probability that the target accepts one draft token
(assumed i.i.d. across positions), k (the paper's gamma) = draft tokens proposed per step,
c = cost of one draft forward pass divided by the cost of one target forward pass.
Functions accept floats or numpy arrays (broadcast elementwise).
"""

from __future__ import annotations

import numpy as np

__all__ = ["expected_tokens_per_step", "predicted_speedup", "alpha_from_counts"]


def expected_tokens_per_step(alpha, k):
    """Expected tokens produced per target call, Leviathan et al. 2023, Eq. (1):

        E[tokens/step] = (1 - alpha^(k+1)) / (1 - alpha)

    (the accepted draft prefix plus the target's own correction/bonus token); at alpha = 1 the
    limit k + 1 is returned, at alpha = 0 exactly 1.
    """
    a = np.asarray(alpha, dtype=float)
    kk = np.asarray(k, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        geo = (1.0 - a ** (kk + 1.0)) / (1.0 - a)
    out = np.where(np.isclose(a, 1.0), kk + 1.0, geo)
    return out.item() if out.ndim == 0 else out


def predicted_speedup(alpha, k, c):
    """Expected walltime improvement over target-only decoding, Leviathan et al. 2023, Theorem 3.8:

        speedup = (1 - alpha^(k+1)) / ((1 - alpha) (k c + 1))

    One step costs k draft passes (k c target-pass units) plus one target pass that verifies all
    k tokens in parallel (assumed to cost the same as a one-token pass).
    """
    kk = np.asarray(k, dtype=float)
    out = np.asarray(expected_tokens_per_step(alpha, k), dtype=float) / (kk * np.asarray(c, dtype=float) + 1.0)
    return out.item() if out.ndim == 0 else out


def alpha_from_counts(accepted, rejections):
    """Maximum-likelihood alpha from per-token accept/reject tests of a chain decoder.

    Each step tests draft tokens in order until the first rejection (a truncated geometric, the
    i.i.d. model behind Eq. (1)), so the tests performed are ``accepted + rejections`` and the MLE
    of the per-token acceptance probability is ``accepted / (accepted + rejections)``. Unlike
    ``accepted / proposed`` it is not biased down by draft tokens after a rejection, which are
    never tested. NaN when no test was performed.
    """
    a = np.asarray(accepted, dtype=float)
    r = np.asarray(rejections, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(a + r > 0, a / (a + r), np.nan)
    return out.item() if out.ndim == 0 else out
