"""How well can the judge learn from n mined mismatches? Grouped cross-validated ROC-AUC against n.

Reads labelled mismatches from a mining journal directory (:mod:`spsamp.autojudge.journal`, one
recipe's ``<root>/<recipe key>/``) or from a judge's saved mined set, then for growing sample counts
n draws whole prompts in a random order until at least n mismatches are in, and scores the judge's
recipe (standardise + class-balanced logistic regression at one ``C``) by
:func:`~spsamp.autojudge.judge.grouped_cv_auc`: folds hold prompts out together, so the same
problem never lands in train and test. Each size is repeated over several prompt orders.

``C`` is fixed across sizes; by default it is the grid value with the best grouped CV AUC on the
whole set (so the largest size's number is slightly optimistic; smaller sizes are scored at a C
they did not choose). CLI: ``python -m spsamp.autojudge curve <journal dir | judge.safetensors>``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from spsamp.autojudge.features import make_features
from spsamp.autojudge.journal import read_dir
from spsamp.autojudge.judge import C_GRID, grouped_cv_auc

log = logging.getLogger(__name__)


@dataclass
class Mined:
    """Features ``[n, D]``, labels ``[n]`` and the prompt of each sample."""

    x: torch.Tensor
    y: torch.Tensor
    groups: list[str]


@dataclass
class CurvePoint:
    asked: int  # the sample count asked for
    samples: float  # mean samples actually used (whole prompts: at least ``asked``)
    prompts: float  # mean prompts used
    auc_mean: Optional[float]
    auc_min: Optional[float]
    auc_max: Optional[float]
    repeats: int  # prompt orders that gave an AUC (both classes present)


def read_journal(directory: str | Path, features: str = "concat") -> Mined:
    """Every sample of one journal recipe directory as judge features."""
    h_p, h_q, y, groups = [], [], [], []
    for pid, entry in read_dir(directory):
        for _pos, _d, label, hp, hq in entry.samples:
            if features == "concat" and hp is None:
                raise ValueError(f"{directory}: mined without draft states — use features='target'")
            h_p.append(hp)
            h_q.append(hq)
            y.append(label)
            groups.append(pid)
    if not y:
        raise ValueError(f"{directory}: no mined samples there (is it a recipe directory <root>/<key>/ of a mining journal?)")
    x = make_features(torch.stack(h_p) if features == "concat" else None, torch.stack(h_q), features)
    return Mined(x, torch.tensor(y, dtype=torch.float64), groups)


def read_mined_set(checkpoint: str | Path) -> Mined:
    """The mined set saved beside a judge (:func:`spsamp.autojudge.checkpoint.save_mined`)."""
    from spsamp.autojudge import checkpoint as ckpt

    tensors, ids = ckpt.load_mined(checkpoint)
    return Mined(tensors["features"], tensors["labels"], [ids[i] for i in tensors["prompt_index"].tolist()])


def best_c(m: Mined, grid: Sequence[float] = C_GRID, seed: int = 0) -> float:
    """The grid's C with the best grouped CV AUC on all of ``m`` (ties: the smaller C)."""
    best: tuple[float, float] = (-1.0, grid[len(grid) // 2])
    for c in grid:
        auc = grouped_cv_auc(m.x, m.y, m.groups, c, seed=seed)
        if auc is not None and auc > best[0]:
            best = (auc, c)
    return best[1]


def default_sizes(total: int) -> list[int]:
    """25, 50, 100, 200, ... below ``total``, then ``total``."""
    sizes, n = [], 25
    while n < total:
        sizes.append(n)
        n *= 2
    return sizes + [total]


def auc_curve(m: Mined, c: float, sizes: Optional[Sequence[int]] = None, repeats: int = 5, folds: int = 5) -> list[CurvePoint]:
    """Grouped CV ROC-AUC at each sample count of ``sizes`` (module doc)."""
    names = sorted(set(m.groups))
    index: dict[str, list[int]] = {p: [] for p in names}
    for i, p in enumerate(m.groups):
        index[p].append(i)
    points = []
    for n in sizes or default_sizes(len(m.y)):
        aucs, used, prompts = [], [], []
        for r in range(repeats if n < len(m.y) else 1):
            order = list(names)
            random.Random(r).shuffle(order)
            rows: list[int] = []
            k = 0
            while len(rows) < n and k < len(order):
                rows += index[order[k]]
                k += 1
            sel = torch.tensor(rows, dtype=torch.long)
            auc = grouped_cv_auc(m.x[sel], m.y[sel], [m.groups[i] for i in rows], c, folds=folds, seed=r)
            used.append(len(rows))
            prompts.append(k)
            if auc is not None:
                aucs.append(auc)
        points.append(CurvePoint(n, sum(used) / len(used), sum(prompts) / len(prompts),
                                 sum(aucs) / len(aucs) if aucs else None, min(aucs, default=None), max(aucs, default=None), len(aucs)))
    return points


def format_curve(points: list[CurvePoint], c: float) -> str:
    lines = ["grouped 5-fold CV ROC-AUC (prompts held out together), C=" + format(c, ".3g"),
             f"{'samples':>8} {'used':>7} {'prompts':>8} {'AUC mean':>9} {'min':>6} {'max':>6} {'orders':>6}"]
    for p in points:
        auc = f"{p.auc_mean:>9.3f} {p.auc_min:>6.3f} {p.auc_max:>6.3f}" if p.auc_mean is not None else f"{'-':>9} {'':>6} {'':>6}"
        lines.append(f"{p.asked:>8} {p.samples:>7.0f} {p.prompts:>8.1f} {auc} {p.repeats:>6}")
    return "\n".join(lines)


def plot_curve(points: list[CurvePoint], path: str | Path, title: str = "") -> Path:
    """ROC-AUC (mean, min-max band) against mined mismatches, log x axis."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry

    pts = [p for p in points if p.auc_mean is not None]
    xs = [p.samples for p in pts]
    fig = Figure(figsize=(5.5, 3.6), dpi=120, layout="constrained")
    ax = fig.subplots()
    ax.fill_between(xs, [p.auc_min for p in pts], [p.auc_max for p in pts], alpha=0.25, label="min-max over prompt orders")
    ax.plot(xs, [p.auc_mean for p in pts], marker="o", label="mean")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.axhline(0.75, color="grey", lw=0.8, ls="--", label="goal 0.75")
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:.0f}" for x in xs], fontsize=7)  # the sizes measured, not crowded powers of ten
    ax.minorticks_off()
    ax.set_xlabel("labelled mismatches")
    ax.set_ylabel("grouped CV ROC-AUC")
    ax.set_title(title or "AutoJudge judge vs mining size", fontsize=10)
    ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


CURVE_COLUMNS = ("asked", "samples", "prompts", "auc_mean", "auc_min", "auc_max", "repeats", "c", "mismatches", "important")


def write_curve(points: list[CurvePoint], c: float, m: Mined, out_dir: str | Path, title: str = "") -> Path:
    """The curve in a report's layout: ``<out_dir>/tables/auc_curve.csv`` (one row per size, with
    ``C`` and the whole set's mismatch and important counts) and ``<out_dir>/auc_curve.png``; returns
    the CSV's path."""
    import pandas as pd

    out = Path(out_dir)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    rows = [{**{k: getattr(p, k) for k in CURVE_COLUMNS[:7]}, "c": c, "mismatches": len(m.y), "important": int(m.y.sum())}
            for p in points]
    csv = out / "tables" / "auc_curve.csv"
    pd.DataFrame(rows, columns=list(CURVE_COLUMNS)).to_csv(csv, index=False)
    plot_curve(points, out / "auc_curve.png", title)
    return csv
