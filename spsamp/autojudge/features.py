"""Judge features: last-layer hidden states of the draft p and the target q at a mismatching token.

Garipov et al. 2025 (AutoJudge), Sec. 3.2: the classifier reads the models' hidden states at the
position of the draft token that differs from the target's choice. Here that is the final-layer
state (``CausalLM.forward(..., hidden=True)``) of each model *with the draft token as input*, so
the judge sees which token was proposed, in context. Modes: ``concat`` = [h_p ; h_q] (default),
``target`` = h_q only (no draft state needed).
"""

from __future__ import annotations

from typing import Optional

import torch

FEATURE_MODES = ("concat", "target")


def feature_dim(mode: str, draft_hidden: int, target_hidden: int) -> int:
    return target_hidden + (draft_hidden if mode == "concat" else 0)


def make_features(h_p: Optional[torch.Tensor], h_q: torch.Tensor, mode: str) -> torch.Tensor:
    """``[n, D]`` float32 features from draft states ``h_p [n, Hp]`` and target states ``h_q [n, Hq]``."""
    if mode == "target":
        return h_q.float()
    if mode == "concat":
        assert h_p is not None, "concat features need the draft's hidden states"
        return torch.cat([h_p.float(), h_q.float()], dim=-1)
    raise ValueError(f"features: unknown mode {mode!r} — use one of {FEATURE_MODES}")
