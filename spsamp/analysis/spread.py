"""How much each configuration's speedup moves between launches of the same study.

``python -m spsamp.analysis spread A B [C ...]``: each argument is one launch (a sweep dir). A launch
that is a comparison contributes each arm's paired speedup (:func:`spsamp.analysis.paired.paired_speedups`,
keyed by arm); a launch of separate plain jobs contributes each configuration's geometric mean of
per-prompt ratios to its matched baseline job (:func:`spsamp.analysis.tables.speedups`, keyed by
config label) — the same estimator, so the two kinds of launch can be set side by side. The spread
is each launch over the first, in percent.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from spsamp.analysis.load import load_records
from spsamp.analysis.paired import geomean, paired_speedups
from spsamp.analysis.tables import speedups


def launch_speedups(df: pd.DataFrame) -> pd.Series:
    """Speedup over plain decoding per arm (comparison rows) or per config (plain jobs)."""
    out: dict[str, float] = {}
    arms = df[df["arm"].notna()] if "arm" in df.columns else df.iloc[:0]
    if not arms.empty:
        sp = paired_speedups(arms)
        for r in sp[sp["arm"] != sp["reference_arm"]].itertuples():
            out[str(r.arm)] = float(r.speedup)
    plain = df[df["arm"].isna()] if "arm" in df.columns else df
    if not plain.empty:
        per_prompt = speedups(plain)
        if not per_prompt.empty:
            for config, rows in per_prompt.groupby("config"):
                out[str(config)] = geomean(rows["speedup"])
    return pd.Series(out, dtype=float)


def launch_spread(launches: Sequence[str]) -> pd.DataFrame:
    """One column of speedups per launch, then ``spread_<n>_pct`` (launch n over the first)."""
    cols = {str(path): launch_speedups(load_records(path, metrics=False)) for path in launches}
    table = pd.DataFrame(cols)
    first = table.columns[0]
    for n, col in enumerate(table.columns[1:], start=2):
        table[f"spread_{n}_pct"] = 100 * (table[col] / table[first] - 1)
    return table
