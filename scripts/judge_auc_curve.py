#!/usr/bin/env python
"""Validation ROC-AUC of the AutoJudge judge against mining size, from a judge's saved mined set.

    .venv/bin/python scripts/judge_auc_curve.py ~/.cache/spsamp/autojudge/<judge>.safetensors [--repeats 5]

Reads ``<judge>.mined.safetensors`` (written when the judge was trained) and the sidecar's prompt
split, keeps the validation prompts fixed, and refits the judge (same trainer: scikit-learn,
class-balanced logistic regression, C by validation AUC) on the first 1, 2, 4, ... of the training
prompts in a few random orders; prints mean validation AUC per size (no mining, seconds to run).
Beside it, the grouped 5-fold cross-validated AUC (every prompt held out once, the checkpoint's C;
``spsamp.autojudge.judge.grouped_cv_auc``) over the first n of *all* mined prompts: one fixed
validation split of a few dozen samples, on which C was also chosen, can flatter the judge.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from spsamp.autojudge import checkpoint as ckpt  # noqa: E402
from spsamp.autojudge.judge import grouped_cv_auc, train_judge  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--repeats", type=int, default=5, help="random orders of the training prompts per size")
    args = ap.parse_args()
    meta = json.loads(ckpt.sidecar_path(Path(args.checkpoint).expanduser()).read_text())
    tensors, ids = ckpt.load_mined(args.checkpoint)
    x, y, which = tensors["features"], tensors["labels"], tensors["prompt_index"]
    pid = [ids[i] for i in which.tolist()]
    val_ids = set(meta["split"]["judge_val_prompt_ids"])
    train_ids = sorted({p for p in pid if p not in val_ids})
    is_val = torch.tensor([p in val_ids for p in pid])
    print(f"{len(y)} samples ({int(y.sum())} important) from {len(train_ids)} train + {len(val_ids)} validation prompts")
    sizes = sorted({min(len(train_ids), 2**i) for i in range(0, 12)})
    c = meta.get("training", {}).get("C") or 1.0
    all_ids = sorted(set(pid))
    print(f"{'train prompts':>13} {'train samples':>13} {'val AUC mean':>12} {'min':>6} {'max':>6}   {'CV AUC (n prompts, C=' + format(c, '.3g') + ')':>26}")
    for n in sizes:
        aucs, samples = [], []
        for r in range(args.repeats if n < len(train_ids) else 1):
            order = list(train_ids)
            random.Random(r).shuffle(order)
            keep = set(order[:n])
            sel = torch.tensor([p in keep for p in pid])
            if sel.sum() == 0 or y[sel].min() == y[sel].max():
                continue  # one class only: nothing to fit
            judge = train_judge(x[sel], y[sel], x[is_val], y[is_val])
            if judge.stats["val_auc"] is not None:
                aucs.append(judge.stats["val_auc"])
                samples.append(int(sel.sum()))
        cvs = []
        for r in range(args.repeats):
            order = list(all_ids)
            random.Random(r).shuffle(order)
            keep = set(order[: max(n, 2)])
            sel = torch.tensor([p in keep for p in pid])
            cv = grouped_cv_auc(x[sel], y[sel], [p for p, s in zip(pid, sel.tolist()) if s], c, seed=r)
            if cv is not None:
                cvs.append(cv)
        cv_txt = f"{sum(cvs) / len(cvs):.3f} ({min(cvs):.3f}-{max(cvs):.3f})" if cvs else "-"
        if aucs:
            print(f"{n:>13} {sum(samples) / len(samples):>13.0f} {sum(aucs) / len(aucs):>12.3f} {min(aucs):>6.3f} {max(aucs):>6.3f}   {cv_txt:>26}")
        else:
            print(f"{n:>13} {'-':>13} {'(one class only)':>12} {'':>13}   {cv_txt:>26}")
    if len(all_ids) > max(sizes):
        cvs = [grouped_cv_auc(x, y, pid, c, seed=r) for r in range(args.repeats)]
        cvs = [v for v in cvs if v is not None]
        if cvs:
            print(f"all {len(all_ids)} mined prompts: CV AUC {sum(cvs) / len(cvs):.3f} ({min(cvs):.3f}-{max(cvs):.3f})")


if __name__ == "__main__":
    main()
