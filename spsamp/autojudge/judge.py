"""The judge: standardised features -> P(important) by logistic regression, trained with scikit-learn.

Garipov et al. 2025 (AutoJudge), Sec. 3.2 and their released ``train_head_*.py``: features are
standardised (``StandardScaler``), a ``LogisticRegression`` is fitted for each inverse L2 strength C
on the grid ``(10^0.5)^-i``, i = 14..1, and the C with the best validation ROC-AUC wins; candidate
thresholds are quantiles of P(important) on the validation set. Here the regression is
class-balanced (``class_weight="balanced"``: important mismatches are the minority) and validation
samples come from mining prompts not used for training.

At inference only the fitted numbers are used — scaler mean/scale, coefficients, intercept — as
float64 torch tensors, moved once to the features' device: a CUDA run computes the judge on the
GPU and nothing is pickled (see :mod:`spsamp.autojudge.checkpoint`).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

log = logging.getLogger(__name__)

C_GRID = tuple(10 ** (-0.5 * i) for i in range(14, 0, -1))  # 1e-7 .. 10^-0.5, as the official code
THRESHOLD_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
KINDS = ("logreg",)
TENSORS = ("scaler.mean", "scaler.scale", "linear.weight", "linear.bias")


def roc_auc(scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> Optional[float]:
    """sklearn's ROC-AUC; None with a single class."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(int)
    s = np.asarray(scores.cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, s))


@dataclass
class Judge:
    """Scaler + logistic regression; ``tensors`` (CPU, float64) are what the checkpoint stores."""

    kind: str
    tensors: dict[str, torch.Tensor]
    stats: dict = field(default_factory=dict)
    thresholds: list[float] = field(default_factory=list)
    _on: dict = field(default_factory=dict, repr=False, compare=False)  # device -> tensors there

    @property
    def dim(self) -> int:
        return int(self.tensors["scaler.mean"].numel())

    def _at(self, device: torch.device) -> dict[str, torch.Tensor]:
        key = str(device)
        if key not in self._on:
            self._on[key] = {k: v.to(device) for k, v in self.tensors.items()}
        return self._on[key]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """w . (x - mean) / scale + b for features ``[n, D]``, on x's device."""
        t = self._at(x.device)
        z = (x.double() - t["scaler.mean"]) / t["scaler.scale"]
        return z @ t["linear.weight"] + t["linear.bias"]

    def p_important(self, x: torch.Tensor) -> torch.Tensor:
        """P(important) for features ``[n, D]`` -> ``[n]`` (float64, on x's device)."""
        return torch.sigmoid(self.logits(x))


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().double().numpy()


def _from_sklearn(scaler, model) -> dict[str, torch.Tensor]:
    return {
        "scaler.mean": torch.from_numpy(np.array(scaler.mean_, dtype=np.float64)),
        "scaler.scale": torch.from_numpy(np.array(scaler.scale_, dtype=np.float64)),
        "linear.weight": torch.from_numpy(np.array(model.coef_[0], dtype=np.float64)),
        "linear.bias": torch.from_numpy(np.array(model.intercept_, dtype=np.float64)).reshape(1),
    }


def train_judge(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    kind: str = "logreg",
    seed: int = 0,
    c_grid: tuple[float, ...] = C_GRID,
) -> Judge:
    """Fit a judge; choose C by validation ROC-AUC; record the training statistics.

    With one class only in the training set the judge is the constant prior (nothing to fit);
    without both classes in validation, the middle of the grid is used and ``val_auc`` is None.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if kind not in KINDS:
        raise ValueError(f"judge: unknown kind {kind!r} — use one of {KINDS}")
    if len(y_train) == 0:
        raise RuntimeError("autojudge: mining produced no training samples — raise method.mining_prompts or method.mining_max_tokens")
    xt, yt = _numpy(x_train), _numpy(y_train).astype(int)
    xv, yv = _numpy(x_val), _numpy(y_val).astype(int)
    scaler = StandardScaler().fit(xt)
    zt = scaler.transform(xt)
    zv = scaler.transform(xv) if len(yv) else xv
    n1 = int(yt.sum())
    stats: dict = {
        "kind": kind, "trainer": "sklearn StandardScaler + LogisticRegression(class_weight='balanced')",
        "train_samples": len(yt), "train_important": n1, "train_important_frac": n1 / len(yt),
        "val_samples": len(yv), "val_important": int(yv.sum()) if len(yv) else 0,
    }
    scale = torch.from_numpy(np.array(scaler.scale_, dtype=np.float64))
    mean = torch.from_numpy(np.array(scaler.mean_, dtype=np.float64))
    if n1 == 0 or n1 == len(yt):
        prior = min(max(n1 / len(yt), 1e-4), 1 - 1e-4)
        log.warning("autojudge: training set has one class only (%d/%d important): constant judge", n1, len(yt))
        tensors = {"scaler.mean": mean, "scaler.scale": scale, "linear.weight": torch.zeros(xt.shape[1], dtype=torch.float64),
                   "linear.bias": torch.tensor([math.log(prior / (1 - prior))], dtype=torch.float64)}
        stats.update(C=None, search=[], constant=True)
    else:
        search, best = [], None
        for c in c_grid:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed).fit(zt, yt)
            auc = roc_auc(model.decision_function(zv), yv) if len(yv) else None
            converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
            search.append({"C": c, "val_auc": auc, "converged": converged})
            key = auc if auc is not None else -1.0
            if best is None or key > best[0]:  # ties keep the smaller C (stronger penalty, earlier in the grid)
                best = (key, c, model)
        assert best is not None
        if all(s["val_auc"] is None for s in search):
            c = c_grid[len(c_grid) // 2]
            best = (-1.0, c, LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed).fit(zt, yt))
        tensors = _from_sklearn(scaler, best[2])
        stats.update(C=best[1], search=search, constant=False)
    judge = Judge(kind, tensors)
    with torch.no_grad():
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        lt = judge.logits(torch.from_numpy(xt))
        stats["train_loss"] = float(bce(lt, torch.from_numpy(yt).double()))
        stats["train_auc"] = roc_auc(lt, yt)
        if len(yv):
            lv = judge.logits(torch.from_numpy(xv))
            stats["val_loss"] = float(bce(lv, torch.from_numpy(yv).double()))
            stats["val_auc"] = roc_auc(lv, yv)
            judge.thresholds = [float(torch.quantile(torch.sigmoid(lv), q)) for q in THRESHOLD_QUANTILES]
        else:
            stats["val_loss"] = stats["val_auc"] = None
    stats["threshold_quantiles"] = list(THRESHOLD_QUANTILES)
    judge.stats = stats
    log.info(
        "autojudge judge: %d train samples (%.1f%% important), %d val samples, train AUC %s, val AUC %s, C %s",
        stats["train_samples"], 100 * stats["train_important_frac"], stats["val_samples"], stats["train_auc"], stats["val_auc"], stats["C"],
    )
    return judge


def grouped_cv_auc(x: torch.Tensor, y: torch.Tensor, groups: list[str], c: float, folds: int = 5, seed: int = 0) -> Optional[float]:
    """Out-of-fold ROC-AUC of the judge's recipe at a fixed ``C``, prompts held out together
    (scikit-learn ``GroupKFold`` over prompt ids shuffled by ``seed``; scores pooled over folds).

    The judge's ``val_auc`` is measured on one validation split and is also the quantity C was
    chosen by, so on a few hundred samples it can flatter the judge; this estimate uses every
    mined prompt as held-out data once. None when there are fewer than two prompts or one class.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xs, ys = _numpy(x), _numpy(y).astype(int)
    names = sorted(set(groups))
    if len(names) < 2 or ys.min() == ys.max():
        return None
    order = np.random.RandomState(seed).permutation(len(names))
    g = np.array([order[names.index(p)] for p in groups])
    scores = np.zeros(len(ys))
    for tr, te in GroupKFold(n_splits=min(folds, len(names))).split(xs, ys, g):
        if ys[tr].min() == ys[tr].max():  # one class in this fold's training part: its prior, no ranking
            scores[te] = 0.0
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence notes at tiny C are the search's business, not this estimate's
            model = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed))
            scores[te] = model.fit(xs[tr], ys[tr]).decision_function(xs[te])
    return roc_auc(scores, ys)
