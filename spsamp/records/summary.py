"""The one summary of records: per configuration, counts over all its rows and rates pooled over its
``ok`` rows. Every summary spsamp prints or writes is this table with different grouping keys:
``summary.parquet`` in a run dir (:data:`STORE_KEYS`), the end-of-sweep table
(``spsamp.analysis.summary.sweep_summary``, which adds ratios between configurations) and the
report's and notebook's per-method table (``spsamp.analysis.tables.method_summary``, which adds the
spread over prompts).

Rates are pooled (sums over rows, then one division), not means of per-row rates, so a long answer
weighs by its tokens: ``tokens_per_sec`` = all new tokens / all wall time (prefill included).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from spsamp.records.schema import CORE_FIELDS

# column -> meaning (the README's summary table is written from this)
SUMMARY_COLUMNS: dict[str, str] = {
    "rows": "rows of the configuration, any status",
    "ok": "rows with status ok",
    "errors": "rows with status error",
    "prompts": "distinct (prompt_id, turn) among the ok rows",
    "new_tokens": "new tokens over the ok rows",
    "wall_s": "wall time over the ok rows (prefill included)",
    "tokens_per_sec": "new_tokens / wall_s",
    "median_ttft_s": "median time to first token over the ok rows",
    "acceptance": "accepted / proposed draft tokens, pooled (null without a drafter)",
    "tokens_per_target_call": "new_tokens / target forward passes (baseline: ~1)",
    "draft_calls_per_token": "draft forward passes / new_tokens (null without a draft model)",
    "checked": "ok rows whose answer was checked (task_correct not null; 0 on datasets without a checker)",
    "passed": "checked rows with task_correct true",
    "pass_at_1": "passed / checked (null when nothing was checked)",
    "pass_at_1_lo": "lower end of the 95 % Wilson score interval of pass_at_1",
    "pass_at_1_hi": "upper end of the 95 % Wilson score interval of pass_at_1",
}
_COUNTS = ("rows", "ok", "errors", "prompts", "new_tokens", "checked", "passed")
# what a run dir's summary.parquet is grouped by
STORE_KEYS = ["arm", "method", "method_params", "model", "draft_model", "dataset"]
_SUMMED = ("new_tokens", "wall_time_s", "proposed", "accepted", "target_calls", "draft_calls")


def _sum(s: pd.Series) -> float:
    return s.sum(min_count=1)


def _ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    num, den = num.astype(float), den.astype(float)
    return (num / den).where(den > 0)


def wilson_interval(passed: float, n: float, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of the proportion ``passed / n`` (Wilson 1927): unlike the normal
    approximation it stays inside [0, 1] and is sensible at 0 or n successes and at small n."""
    if not n:
        return (np.nan, np.nan)
    p = passed / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def correct_values(s: pd.Series) -> pd.Series:
    """``task_correct`` as floats: 1.0 / 0.0, NaN where unchecked (null)."""
    return s.map(lambda v: np.nan if v is None or (isinstance(v, float) and np.isnan(v)) else float(bool(v))).astype(float)


def summarize(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """One row per distinct ``by`` (nulls group together): ``by`` then :data:`SUMMARY_COLUMNS`."""
    by = list(by)
    df = df.copy()
    for c in by + ["status", "prompt_id", "turn", "ttft_s", "task_correct"]:
        if c not in df.columns:
            df[c] = None
    ok = df["status"].eq("ok")
    work = df[by].copy()
    work["_status"] = df["status"]
    work["_ok"] = ok.astype(int)
    work["_err"] = df["status"].eq("error").astype(int)
    work["_prompt"] = (df["prompt_id"].astype(str) + "#" + df["turn"].astype(str)).where(ok)
    for c in _SUMMED + ("ttft_s",):
        col = pd.to_numeric(df[c], errors="coerce") if c in df.columns else pd.Series(np.nan, index=df.index)
        work[f"_{c}"] = col.where(ok)
    work["_correct"] = correct_values(df["task_correct"]).where(ok)
    if work.empty:
        return pd.DataFrame(columns=by + list(SUMMARY_COLUMNS))
    g = work.groupby(by, dropna=False, sort=False)
    out = g.agg(
        rows=("_status", "size"), ok=("_ok", "sum"), errors=("_err", "sum"), prompts=("_prompt", "nunique"),
        new_tokens=("_new_tokens", "sum"), wall_s=("_wall_time_s", "sum"), median_ttft_s=("_ttft_s", "median"),
        proposed=("_proposed", _sum), accepted=("_accepted", _sum),
        target_calls=("_target_calls", _sum), draft_calls=("_draft_calls", _sum),
        checked=("_correct", "count"), passed=("_correct", "sum"),
    ).reset_index()
    out["tokens_per_sec"] = _ratio(out["new_tokens"], out["wall_s"])
    out["acceptance"] = _ratio(out["accepted"], out["proposed"])
    out["tokens_per_target_call"] = _ratio(out["new_tokens"], out["target_calls"])
    out["draft_calls_per_token"] = _ratio(out["draft_calls"], out["new_tokens"])
    out["pass_at_1"] = _ratio(out["passed"], out["checked"])
    ci = [wilson_interval(k, n) for k, n in zip(out["passed"].astype(float), out["checked"].astype(float))]
    out["pass_at_1_lo"] = [c[0] for c in ci]
    out["pass_at_1_hi"] = [c[1] for c in ci]
    for c in _COUNTS:
        out[c] = out[c].astype("int64")
    return out[by + list(SUMMARY_COLUMNS)]


def summary_schema(by: Sequence[str] = STORE_KEYS) -> pa.Schema:
    core = {f.name: f.type for f in CORE_FIELDS}
    keys = [pa.field(k, core.get(k, pa.string())) for k in by]
    return pa.schema(keys + [pa.field(c, pa.int64() if c in _COUNTS else pa.float64()) for c in SUMMARY_COLUMNS])
