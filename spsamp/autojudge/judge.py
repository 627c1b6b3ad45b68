"""The judge: standardised features -> P(important), by logistic regression (default) or a small MLP.

Garipov et al. 2025 (AutoJudge), Sec. 3.2 train a logistic regression on the mined hidden states
and pick the decision threshold on held-out data. Here: features are standardised with the
training mean/std; the L2 strength is chosen from a grid by validation ROC-AUC (validation
samples come from prompts not used for training); the loss is class-balanced binary cross-entropy
(important mismatches are the minority). Candidate thresholds are quantiles of P(important) on the
validation set.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Optional

import torch

log = logging.getLogger(__name__)

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
THRESHOLD_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
KINDS = ("logreg", "mlp")


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> Optional[float]:
    """ROC-AUC as the Mann-Whitney statistic (ties count 1/2); None with a single class."""
    labels = labels.bool()
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if n1 == 0 or n0 == 0:
        return None
    s = scores.double()
    ranks = torch.empty_like(s)
    order = torch.argsort(s)
    sorted_s = s[order]
    i = 0
    # average ranks over tied runs
    while i < len(sorted_s):
        j = i
        while j + 1 < len(sorted_s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@dataclass
class Judge:
    """Standardiser + classifier; ``tensors`` hold everything saved to safetensors."""

    kind: str
    tensors: dict[str, torch.Tensor]
    stats: dict = field(default_factory=dict)
    thresholds: list[float] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return int(self.tensors["scaler.mean"].numel())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tensors
        z = (x.double() - t["scaler.mean"]) / t["scaler.std"]
        if self.kind == "logreg":
            return z @ t["linear.weight"] + t["linear.bias"]
        h = torch.relu(z @ t["mlp.w1"] + t["mlp.b1"])
        return h @ t["mlp.w2"] + t["mlp.b2"]

    def p_important(self, x: torch.Tensor) -> torch.Tensor:
        """P(important) for features ``[n, D]`` -> ``[n]`` (float64)."""
        return torch.sigmoid(self.logits(x))


def _balanced_bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # each class weighs half the loss, so a 5% minority is not ignored
    n1 = y.sum().clamp(min=1)
    n0 = (1 - y).sum().clamp(min=1)
    w = torch.where(y > 0, 0.5 * len(y) / n1, 0.5 * len(y) / n0)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, y, weight=w)


def _fit_logreg(z: torch.Tensor, y: torch.Tensor, l2: float, seed: int) -> dict[str, torch.Tensor]:
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = _balanced_bce(z @ w + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return {"linear.weight": w.detach().clone(), "linear.bias": b.detach().clone().reshape(1)}


def _fit_mlp(z: torch.Tensor, y: torch.Tensor, l2: float, seed: int, hidden: int = 64, epochs: int = 300) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d = z.shape[1]
    w1 = (torch.randn(d, hidden, generator=g, dtype=torch.float64) / math.sqrt(d)).requires_grad_()
    b1 = torch.zeros(hidden, dtype=torch.float64, requires_grad=True)
    w2 = (torch.randn(hidden, generator=g, dtype=torch.float64) / math.sqrt(hidden)).requires_grad_()
    b2 = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w1, b1, w2, b2], lr=1e-2)
    for _ in range(epochs):
        opt.zero_grad()
        logits = torch.relu(z @ w1 + b1) @ w2 + b2
        loss = _balanced_bce(logits, y) + 0.5 * l2 * ((w1 * w1).sum() + (w2 * w2).sum())
        loss.backward()
        opt.step()
    return {"mlp.w1": w1.detach(), "mlp.b1": b1.detach(), "mlp.w2": w2.detach(), "mlp.b2": b2.detach().reshape(1)}


def train_judge(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    kind: str = "logreg",
    seed: int = 0,
    l2_grid: tuple[float, ...] = L2_GRID,
) -> Judge:
    """Fit a judge; choose the L2 strength by validation ROC-AUC; record the training statistics.

    With one class only in the training set the judge is the constant prior (no fit possible);
    without both classes in validation, the middle of the grid is used and ``val_auc`` is None.
    """
    if kind not in KINDS:
        raise ValueError(f"judge: unknown kind {kind!r} — use one of {KINDS}")
    if len(y_train) == 0:
        raise RuntimeError("autojudge: mining produced no training samples — raise method.mining_prompts or method.mining_max_tokens")
    x_train, x_val = x_train.double(), x_val.double()
    y_train, y_val = y_train.double(), y_val.double()
    mean = x_train.mean(0)
    std = x_train.std(0, unbiased=False).clamp(min=1e-6)
    scaler = {"scaler.mean": mean, "scaler.std": std}
    z_tr = (x_train - mean) / std
    n1 = int(y_train.sum())
    stats: dict = {
        "kind": kind,
        "train_samples": len(y_train),
        "train_important": n1,
        "train_important_frac": n1 / len(y_train),
        "val_samples": len(y_val),
        "val_important": int(y_val.sum()),
    }
    fit = _fit_logreg if kind == "logreg" else _fit_mlp
    if n1 == 0 or n1 == len(y_train):
        prior = min(max(n1 / len(y_train), 1e-4), 1 - 1e-4)
        log.warning("autojudge: training set has one class only (%d/%d important): constant judge", n1, len(y_train))
        d = x_train.shape[1]
        bias = torch.tensor([math.log(prior / (1 - prior))], dtype=torch.float64)
        judge = Judge("logreg", {**scaler, "linear.weight": torch.zeros(d, dtype=torch.float64), "linear.bias": bias})
        stats.update(l2=None, search=[], constant=True)
    else:
        search = []
        best: tuple[float, float, dict] | None = None
        for l2 in l2_grid:
            params = fit(z_tr, y_train, l2, seed)
            cand = Judge(kind, {**scaler, **params})
            auc = roc_auc(cand.logits(x_val), y_val) if len(y_val) else None
            search.append({"l2": l2, "val_auc": auc})
            key = auc if auc is not None else -1.0
            # ties keep the stronger penalty (later in the grid): the simpler model
            if best is None or key >= best[0]:
                best = (key, l2, params)
        assert best is not None
        if all(s["val_auc"] is None for s in search):
            l2 = l2_grid[len(l2_grid) // 2]
            best = (-1.0, l2, fit(z_tr, y_train, l2, seed))
        judge = Judge(kind, {**scaler, **best[2]})
        stats.update(l2=best[1], search=search, constant=False)
    with torch.no_grad():
        stats["train_loss"] = float(torch.nn.functional.binary_cross_entropy_with_logits(judge.logits(x_train), y_train))
        stats["train_auc"] = roc_auc(judge.logits(x_train), y_train)
        if len(y_val):
            stats["val_loss"] = float(torch.nn.functional.binary_cross_entropy_with_logits(judge.logits(x_val), y_val))
            stats["val_auc"] = roc_auc(judge.logits(x_val), y_val)
            p_val = judge.p_important(x_val)
            judge.thresholds = [float(torch.quantile(p_val, q)) for q in THRESHOLD_QUANTILES]
        else:
            stats["val_loss"] = None
            stats["val_auc"] = None
    judge.stats = stats
    log.info(
        "autojudge judge (%s): %d train samples (%.1f%% important), train loss %.4f, val AUC %s, l2 %s",
        kind, stats["train_samples"], 100 * stats["train_important_frac"], stats["train_loss"], stats["val_auc"], stats["l2"],
    )
    return judge
