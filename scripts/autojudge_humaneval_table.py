#!/usr/bin/env python
"""The headline table of docs/benchmarks/autojudge_humaneval.md from a sweep dir.

    .venv/bin/python scripts/autojudge_humaneval_table.py outputs/sweeps/autojudge_humaneval

One row per configuration (``spsamp.analysis.tables.quality_table``, the one summary definition),
only over the problems *every* configuration answered (a stopped chunk never compares unequal
sets), plus what the quality table does not hold: the room at k (k + 1 minus SpS's tokens per
target call: the most any acceptance rule could add) and tokens/s relative to SpS at the same k.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spsamp.analysis.load import load_records  # noqa: E402
from spsamp.analysis.tables import quality_table  # noqa: E402


def main() -> None:
    df = load_records(sys.argv[1])
    ok = df[df["status"] == "ok"]
    configs = ok.groupby(["method", "param_k", "param_threshold"], dropna=False)["prompt_id"].apply(set)
    common = set.intersection(*configs.tolist())
    q = quality_table(df[df["prompt_id"].isin(common)])
    sps = q[q["method"] == "speculative"].set_index("param_k")
    rows = []
    for _, r in q.iterrows():
        k = r.get("param_k")
        name = r["method"] if pd.isna(k) else f"{r['method']} k={int(k)}"
        if r["method"] == "autojudge":
            name += f", threshold={r['param_threshold']:.3g}"
        ref = sps.loc[k] if not pd.isna(k) and k in sps.index else None
        room = f"{k + 1 - ref['tokens_per_target_call']:.2f}" if ref is not None else "–"
        vs = f"{r['tokens_per_sec'] / ref['tokens_per_sec']:.2f}" if ref is not None else "–"
        jar = "–" if pd.isna(r.get("judge_accept_rate")) else f"{r['judge_accept_rate']:.2f}"
        rows.append(f"| {name} | {r['pass_at_1']:.3f} [{r['pass_at_1_lo']:.2f}, {r['pass_at_1_hi']:.2f}] | {int(r['new_tokens'])} | "
                    f"{r['tokens_per_target_call']:.2f} | {room} | {r['tokens_per_sec']:.2f} | {r['speedup']:.2f} | {vs} | {jar} | {r['checks']} |")
    print(f"{len(common)} problems answered by every configuration: {', '.join(sorted(common, key=lambda s: int(s.split('/')[-1])))}\n")
    print("| config | pass@1 [95 % CI] | new tokens | tokens / target call | room at k | tokens/s | speedup vs baseline | vs SpS (same k) | judge accept rate | checks |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
