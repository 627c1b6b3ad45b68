"""Derived tables over records: per-prompt values, speedups over baseline, summaries with spread,
measured vs predicted speedup, and AutoJudge speed/quality per threshold.

Speedups of a comparison job's arms are paired within the job (:mod:`spsamp.analysis.paired`); the
speedups here are *unpaired*: rows of separate jobs (outside any comparison) matched across jobs.
Matching rule: a method's row is compared with the baseline rows of the *same* target model (preset,
name, dtype, quantization, device), dataset, prompt, turn, generation settings (max_new_tokens,
temperature, top_p, top_k, seed, chat template) and hardware (CPU model, GPU name, threads, CPU
linear kernels) — never across prompts or hardware, and never by hostname: on a cluster the jobs of
one sweep land on different nodes of the same kind. Repeats are reduced to their median per prompt
first, so a speedup is a ratio of per-prompt medians; summaries give the median and IQR of those
over prompts ("prompt" = one (prompt_id, turn)). Configurations without a match are listed
(:func:`unmatched`), never dropped silently.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from spsamp.analysis.load import METRIC_PREFIX, config_labels
from spsamp.cost_model import alpha_from_counts, expected_tokens_per_step, predicted_speedup
from spsamp.records.schema import PARAM_PREFIX
from spsamp.records.summary import correct_values, summarize, wilson_interval  # noqa: F401 - one definition, re-exported

BASELINE = "baseline"
TARGET_KEYS = ["model_preset", "model", "target_dtype", "target_quantization", "device"]
DRAFT_KEYS = ["draft_model", "draft_dtype", "draft_quantization"]
GEN_KEYS = ["max_new_tokens", "temperature", "top_p", "top_k", "seed", "use_chat_template", "batch_size"]
MACHINE_KEYS = ["cpu_model", "gpu_name", "num_threads", "cpu_linear"]  # the hardware, not the host
PROMPT_KEYS = ["dataset", "prompt_id", "turn"]
# what a baseline row must share with a method row to be its reference
MATCH_KEYS = TARGET_KEYS + GEN_KEYS + MACHINE_KEYS + PROMPT_KEYS
# judge behaviour recorded by spsamp.decoders.autojudge (means over prompts in the AutoJudge table)
AUTOJUDGE_METRICS = ("metric_judge_accept_rate", "metric_target_fallback_rate")
# pooled rates of what a lossy method kept beyond exact SpS: {rate: (kept count, count it was asked about)}
# (spsamp.decoders.autojudge: mismatches its judge accepted; spsamp.decoders.lossy: exact rejections its rule overrode)
BEYOND_EXACT = {"judge_accept_rate": ("judge_accepted", "mismatches_judged"),
                "rule_accept_rate": ("rule_accepted", "rule_exact_rejections")}
NUMERIC_COLS = ["tokens_per_sec", "decode_tokens_per_sec", "wall_time_s", "decode_s", "acceptance_rate", "avg_tokens_per_step",
                "target_calls_per_token", "new_tokens", "steps", "target_calls", "draft_calls", "proposed", "accepted", "rejections"]
QUALITY_HINTS = ("quality", "score", "accuracy", "correct", "exact_match", "reward")

# metrics_json keys (as metric_* columns) holding total seconds spent in draft / target forwards
# (written by spsamp.decoders.base.LoopDecoder.metrics)
DRAFT_TIME = "metric_draft_time_s"
TARGET_TIME = "metric_target_time_s"


class NoData(ValueError):
    """A table or plot has nothing to show (its method or parameter never ran)."""


# ---- helpers ---------------------------------------------------------------------------------


def param_columns(df: pd.DataFrame) -> list[str]:
    return sorted(c for c in df.columns if c.startswith(PARAM_PREFIX))


def config_keys(df: pd.DataFrame) -> list[str]:
    """Columns that identify one configuration: method, its parameters, models, settings, machine."""
    return ["arm", "method", "method_params", "config", *param_columns(df), *TARGET_KEYS, *DRAFT_KEYS, *GEN_KEYS, *MACHINE_KEYS, "dataset"]


def _prepared(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with every key column present (hand-built frames may lack some) and a ``config`` label."""
    df = df.copy()
    for c in MATCH_KEYS + DRAFT_KEYS + ["arm", "category", "method_params", "repeat", "generated_ids", "task_correct", "task_check"]:
        if c not in df.columns:
            df[c] = None
    for c in NUMERIC_COLS:
        df[c] = pd.to_numeric(df[c], errors="coerce") if c in df.columns else np.nan
    if "config" not in df.columns:
        df["config"] = config_labels(df)
    return df


def _key_string(df: pd.DataFrame, cols: Sequence[str]) -> pd.Series:
    """One string per row: nulls (None/NaN) equal each other and nothing else; 2.0 equals 2."""

    def fmt(v: object) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "<null>"
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)

    out = pd.Series("", index=df.index, dtype=object)
    for c in cols:
        out = out + "\x1f" + df[c].map(fmt).astype(object)
    return out


def _q25(x: pd.Series) -> float:
    return x.quantile(0.25)


def _q75(x: pd.Series) -> float:
    return x.quantile(0.75)


def _spread(grouped, cols: Iterable[str]) -> pd.DataFrame:
    """median, q25, q75 (linear interpolation) of each column per group, as ``<col>_median`` etc."""
    parts = []
    for col in cols:
        s = grouped[col].agg(["median", _q25, _q75])
        s.columns = [f"{col}_median", f"{col}_q25", f"{col}_q75"]
        parts.append(s)
    return pd.concat(parts, axis=1)


def _ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    num, den = num.astype(float), den.astype(float)
    return (num / den).where(den > 0)


def quality_columns(df: pd.DataFrame) -> list[str]:
    """Numeric ``metric_*`` columns that look like answer quality (names containing QUALITY_HINTS)."""
    return [
        c for c in df.columns
        if c.startswith(METRIC_PREFIX) and any(h in c for h in QUALITY_HINTS) and pd.api.types.is_numeric_dtype(df[c])
    ]


def _mean_metrics(df: pd.DataFrame) -> list[str]:
    extra = [c for c in AUTOJUDGE_METRICS if c in df.columns and pd.api.types.is_numeric_dtype(df[c])]
    return list(dict.fromkeys(quality_columns(df) + extra))


def fmt_pass_at_1(p: float, lo: float, hi: float) -> str:
    """``0.634 [0.52, 0.74]``; ``–`` when unchecked."""
    return "–" if pd.isna(p) else f"{p:.3f} [{lo:.2f}, {hi:.2f}]"


# ---- tables ----------------------------------------------------------------------------------


def per_prompt(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration × (dataset, prompt_id, turn), over ``ok`` rows: medians over repeats
    of timings and per-row rates, sums of counters (for pooled rates), first generated ids."""
    df = _prepared(df)
    ok = df[df["status"] == "ok"].copy()
    if ok.empty:
        return pd.DataFrame(columns=config_keys(df) + ["prompt_id", "turn", "category"])
    # tokens kept over all steps, so pooled tokens/step weights steps, not rows
    ok["step_tokens"] = ok["avg_tokens_per_step"] * ok["steps"]
    keys = config_keys(df) + ["prompt_id", "turn"]
    keys = list(dict.fromkeys(keys))
    g = ok.groupby(keys, dropna=False, sort=True)
    med = ["tokens_per_sec", "decode_tokens_per_sec", "wall_time_s", "acceptance_rate", "avg_tokens_per_step", "target_calls_per_token"]
    summed = ["new_tokens", "steps", "target_calls", "draft_calls", "proposed", "accepted", "rejections", "step_tokens", "decode_s"]
    out = pd.concat(
        [
            g["category"].first(),
            g.size().rename("repeats"),
            g[med].median(),
            g[summed].sum(min_count=1),
            g["generated_ids"].first(),
        ]
        + ([g[_mean_metrics(ok)].mean()] if _mean_metrics(ok) else []),
        axis=1,
    )
    return out.reset_index()


def speedups(df: pd.DataFrame) -> pd.DataFrame:
    """Per prompt: each non-baseline configuration outside a comparison against its matching
    baseline (see module doc; a comparison's arms: :func:`spsamp.analysis.paired.paired_speedups`).

    Columns added to :func:`per_prompt`'s: ``baseline_tokens_per_sec``, ``speedup`` (tokens/s
    ratio, prefill included), ``decode_speedup`` (decode tokens/s ratio) and
    ``identical_to_baseline`` (greedy rows only: same generated ids as the baseline).
    """
    df = _prepared(df)
    pp = per_prompt(df[df["arm"].isna()])
    if pp.empty or "method" not in pp:
        return pp.assign(speedup=pd.Series(dtype=float))
    pp["_match"] = _key_string(pp, MATCH_KEYS)
    base = pp[pp["method"] == BASELINE]
    ref = base.groupby("_match").agg(
        baseline_tokens_per_sec=("tokens_per_sec", "median"),
        baseline_decode_tokens_per_sec=("decode_tokens_per_sec", "median"),
        baseline_ids=("generated_ids", "first"),
    )
    other = pp[pp["method"] != BASELINE]
    sp = other.merge(ref, left_on="_match", right_index=True, how="inner")
    sp["speedup"] = _ratio(sp["tokens_per_sec"], sp["baseline_tokens_per_sec"])
    sp["decode_speedup"] = _ratio(sp["decode_tokens_per_sec"], sp["baseline_decode_tokens_per_sec"])

    def identical(r: pd.Series) -> float:
        if r["temperature"] != 0 or r["generated_ids"] is None or r["baseline_ids"] is None:
            return np.nan
        return float(list(r["generated_ids"]) == list(r["baseline_ids"]))

    sp["identical_to_baseline"] = sp.apply(identical, axis=1) if len(sp) else pd.Series(dtype=float)
    return sp.drop(columns=["_match", "baseline_ids"]).reset_index(drop=True)


def unmatched(df: pd.DataFrame, sp: pd.DataFrame) -> list[str]:
    """Non-baseline configurations outside comparisons with ok rows of which no prompt found a
    matching baseline (same hardware, settings, prompts), as ``"<config> in <run_dir>"`` (just ``<config>`` for frames without ``run_dir``)."""
    df = _prepared(df)
    ok = df[(df["status"] == "ok") & (df["method"] != BASELINE) & df["arm"].isna()]
    if ok.empty:
        return []
    keys = [k for k in config_keys(df) if k in ok.columns]
    have = set(_key_string(sp, keys)) if not sp.empty else set()
    miss = ok[~_key_string(ok, keys).isin(have)]
    where = miss["config"] + (" in " + miss["run_dir"].astype(str) if "run_dir" in miss.columns else "")
    return sorted(where.unique())


def speedup_summary(sp: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Median and IQR over prompts of ``speedup`` and ``decode_speedup`` per configuration (and ``by``)."""
    if sp.empty:
        return pd.DataFrame()
    keys = [k for k in config_keys(sp) if k in sp.columns] + list(by)
    g = sp.groupby(keys, dropna=False, sort=True)
    out = pd.concat(
        [g.size().rename("n_prompts"), _spread(g, ["speedup", "decode_speedup"]), g["identical_to_baseline"].mean()],
        axis=1,
    )
    return out.reset_index()


SUMMARY_METRICS = {
    "tokens_per_sec": "tokens_per_sec",
    "acceptance_rate": "acceptance_rate",
    "avg_tokens_per_step": "mean_accepted_length",
    "target_calls_per_token": "target_calls_per_token",
}


def method_summary(df: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Per configuration (and ``by``, e.g. ``["category"]``): rows, errors, prompts, and the median
    and IQR over prompts of tokens/s, acceptance rate, mean accepted length (tokens kept per target
    step, the target's own token included) and target calls per token."""
    df = _prepared(df)
    keys = config_keys(df) + list(by)
    pp = per_prompt(df).rename(columns=SUMMARY_METRICS)
    # counts from the one summary definition (spsamp/records/summary.py); spreads over prompts below
    counts = summarize(df, keys).set_index(keys)[["rows", "ok", "errors"]].sort_index()
    if pp.empty:
        return counts.reset_index()
    g = pp.groupby(keys, dropna=False, sort=True)
    stats = pd.concat([g.size().rename("n_prompts"), _spread(g, SUMMARY_METRICS.values())], axis=1)
    out = counts.join(stats, how="left")
    out["n_prompts"] = out["n_prompts"].fillna(0).astype(int)
    return out.reset_index()


def category_summary(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`method_summary` per MT-Bench category."""
    return method_summary(df, by=["category"])


# ---- measured vs predicted -------------------------------------------------------------------


def _first_col(df: pd.DataFrame, names: Sequence[str]) -> Optional[str]:
    return next((n for n in names if n in df.columns and df[n].notna().any()), None)


def _pass_time(rows: pd.DataFrame) -> float:
    """Median seconds per decode forward of a baseline run: each decode step is one one-token pass."""
    rows = rows[(rows["status"] == "ok") & (pd.to_numeric(rows["new_tokens"], errors="coerce") > 1)]
    if rows.empty:
        return np.nan
    return float((rows["decode_s"].astype(float) / (rows["new_tokens"].astype(float) - 1)).median())


def _keyed_baselines(df: pd.DataFrame) -> pd.DataFrame:
    base = df[df["method"] == BASELINE]
    return base.assign(_machine=_key_string(base, MACHINE_KEYS), _target=_key_string(base, TARGET_KEYS + GEN_KEYS))


def estimate_cost_ratio(df: pd.DataFrame, rows: pd.DataFrame, given: Optional[float] = None) -> tuple[float, str]:
    """c = draft pass cost / target pass cost for the configuration whose ok rows are ``rows``.

    In order of preference: ``given``; draft and target forward seconds recorded in metrics_json
    (``metric_draft_time_s``/``metric_target_time_s``) divided by the pass counts;
    recorded draft seconds per draft call over the baseline's target pass time; a baseline run of
    the draft model itself on the same machine over the baseline's target pass time; last, a fit
    from the method's own decode time, t_p = (decode_s - steps * t_q) / draft_calls, which assumes a
    (k+1)-token verification pass costs one baseline pass (so the prediction then tests mainly the
    i.i.d. acceptance model). Baseline pass time t_q = median ``decode_s / (new_tokens - 1)`` of the
    matching baseline rows. Returns (c, source).
    """
    if given is not None:
        return float(given), "given"
    first = rows.iloc[0]
    dcol, tcol = _first_col(rows, (DRAFT_TIME,)), _first_col(rows, (TARGET_TIME,))
    draft_calls = pd.to_numeric(rows["draft_calls"], errors="coerce").sum()
    t_p = rows[dcol].astype(float).sum() / draft_calls if dcol and draft_calls > 0 else np.nan
    if tcol and np.isfinite(t_p):
        target_calls = pd.to_numeric(rows["target_calls"], errors="coerce").sum()
        t_q = rows[tcol].astype(float).sum() / target_calls if target_calls > 0 else np.nan
        if np.isfinite(t_q) and t_q > 0:
            return t_p / t_q, "metrics_json draft/target pass times"
    base = df if "_machine" in df.columns else _keyed_baselines(_prepared(df))
    base = base[base["_machine"] == _key_string(rows.iloc[:1], MACHINE_KEYS).iloc[0]]
    t_q = _pass_time(base[base["_target"] == _key_string(rows.iloc[:1], TARGET_KEYS + GEN_KEYS).iloc[0]])
    if not np.isfinite(t_q) or t_q <= 0:
        return np.nan, "no matching baseline"
    if np.isfinite(t_p):
        return t_p / t_q, "metrics_json draft pass time / baseline target pass"
    t_draft = _pass_time(base[base["model"] == first["draft_model"]]) if first.get("draft_model") else np.nan
    if np.isfinite(t_draft):
        return t_draft / t_q, "baseline of draft model / baseline of target"
    # last resort: the decode time left after `steps` target passes, spread over the draft calls
    decode = pd.to_numeric(rows["decode_s"], errors="coerce").sum()
    steps = pd.to_numeric(rows["steps"], errors="coerce").sum()
    t_p = (decode - steps * t_q) / draft_calls if draft_calls > 0 else np.nan
    if np.isfinite(t_p) and t_p > 0:
        return t_p / t_q, "fit: (decode_s - steps*t_q)/draft_calls"
    return np.nan, "draft pass time unknown (pass --cost-ratio)"


def predicted_vs_measured(df: pd.DataFrame, cost_ratio: Optional[float] = None, sp: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Chain methods (a ``param_k`` and no ``param_budget``): measured alpha and tokens/step against
    Leviathan et al. 2023 Eq. (1), and the measured speedup against Theorem 3.8's prediction.

    alpha = accepted / (accepted + rejections) pooled over the configuration's ok rows (the MLE
    under the i.i.d. model, see :func:`spsamp.cost_model.alpha_from_counts`); c from
    :func:`estimate_cost_ratio`. ``decode_speedup`` is the closer comparison: the model ignores prefill.
    """
    df = _prepared(df)
    if "param_k" not in df.columns:
        raise NoData("no rows with param_k (speculative / autojudge)")
    # a fixed k only: k=auto rows carry their own prediction (the sizing_* metrics, paired tables)
    chain = df[(df["status"] == "ok") & pd.to_numeric(df["param_k"], errors="coerce").notna()]
    if "param_budget" in chain.columns:
        chain = chain[chain["param_budget"].isna()]
    if chain.empty:
        raise NoData("no ok rows of a chain method with param_k")
    keys = [k for k in config_keys(df) if k in chain.columns]
    if sp is None:
        sp = speedups(df)
    ss = speedup_summary(sp) if not sp.empty else pd.DataFrame()
    baselines = _keyed_baselines(df)  # keyed once, not per configuration
    out = []
    for key, rows in chain.groupby(keys, dropna=False, sort=True):
        rec = dict(zip(keys, key))
        num = {c: pd.to_numeric(rows[c], errors="coerce") for c in ("accepted", "rejections", "proposed", "steps", "avg_tokens_per_step")}
        k = float(rec["param_k"])
        alpha = float(alpha_from_counts(num["accepted"].sum(), num["rejections"].sum()))
        steps = num["steps"].sum()
        c, source = estimate_cost_ratio(baselines, rows, cost_ratio)
        rec.update({
            "k": k,
            "accepted": num["accepted"].sum(),
            "rejections": num["rejections"].sum(),
            "alpha": alpha,
            "acceptance_rate": num["accepted"].sum() / num["proposed"].sum() if num["proposed"].sum() > 0 else np.nan,
            "tokens_per_step": (num["avg_tokens_per_step"] * num["steps"]).sum() / steps if steps > 0 else np.nan,
            "predicted_tokens_per_step": expected_tokens_per_step(alpha, k) if np.isfinite(alpha) else np.nan,
            "c": c,
            "c_source": source,
            "predicted_speedup": predicted_speedup(alpha, k, c) if np.isfinite(alpha) and np.isfinite(c) else np.nan,
        })
        out.append(rec)
    res = pd.DataFrame(out)
    if not ss.empty:
        sk = [k for k in keys if k in ss.columns]
        res["_m"] = _key_string(res, sk)
        ss = ss.assign(_m=_key_string(ss, sk)).set_index("_m")
        res["measured_speedup"] = res["_m"].map(ss["speedup_median"])
        res["measured_decode_speedup"] = res["_m"].map(ss["decode_speedup_median"])
        res = res.drop(columns="_m")
    else:
        res["measured_speedup"] = np.nan
        res["measured_decode_speedup"] = np.nan
    return res


def applied_threshold(rows: pd.DataFrame) -> pd.Series:
    """Per row, the AutoJudge threshold it applied: what the row recorded (``metric_threshold``:
    ``method.threshold``, or the judge's validation quantile ``method.threshold_quantile`` names),
    else ``param_threshold`` (rows from before it was recorded had no quantile knob)."""
    nan = pd.Series(np.nan, index=rows.index)
    return pd.to_numeric(rows.get("metric_threshold", nan), errors="coerce").fillna(
        pd.to_numeric(rows.get("param_threshold", nan), errors="coerce"))


def autojudge_table(df: pd.DataFrame, sp: Optional[pd.DataFrame] = None, method: str = "autojudge") -> pd.DataFrame:
    """Per AutoJudge configuration (sorted by threshold): the threshold it applied (``threshold``:
    ``method.threshold``, or the judge's validation quantile ``method.threshold_quantile`` names, as
    the rows recorded it), accepted tokens per step (pooled over steps), acceptance rate, median
    tokens/s, median speedup and decode speedup over baseline, and quality — every quality-like
    ``metric_*`` column (mean over prompts) and, for greedy rows, the fraction of prompts whose
    answer is token-identical to the baseline's."""
    df = _prepared(df)
    rows = df[(df["method"] == method) & (df["status"] == "ok")]
    if rows.empty:
        raise NoData(f"no ok rows of method={method}")
    pp = per_prompt(rows)
    keys = [k for k in config_keys(rows) if k in pp.columns]
    g = pp.groupby(keys, dropna=False, sort=True)
    applied = applied_threshold(rows)
    quality = quality_columns(pp) + [c for c in AUTOJUDGE_METRICS if c in pp.columns and pd.api.types.is_numeric_dtype(pp[c])]
    sums = g[["step_tokens", "steps", "accepted", "proposed"]].sum(min_count=1)
    out = pd.concat(
        [
            g.size().rename("n_prompts"),
            _ratio(sums["step_tokens"], sums["steps"]).rename("accepted_tokens_per_step"),
            _ratio(sums["accepted"], sums["proposed"]).rename("acceptance_rate"),
            g["tokens_per_sec"].median().rename("tokens_per_sec_median"),
            applied.groupby([rows[k] for k in keys], dropna=False, sort=True).mean().rename("threshold"),
        ]
        + ([g[quality].mean()] if quality else []),
        axis=1,
    ).reset_index()
    if sp is None:
        sp = speedups(df)
    sp = sp[sp["method"] == method] if not sp.empty else sp
    if not sp.empty:
        ss = speedup_summary(sp)
        sk = [k for k in keys if k in ss.columns]
        ss = ss.assign(_m=_key_string(ss, sk)).set_index("_m")
        m = _key_string(out, sk)
        out["speedup_median"] = m.map(ss["speedup_median"])
        out["decode_speedup_median"] = m.map(ss["decode_speedup_median"])
        out["identical_to_baseline"] = m.map(ss["identical_to_baseline"])
    sort = [c for c in ("threshold", "param_k") if c in out.columns]
    return out.sort_values(sort).reset_index(drop=True) if sort else out


def quality_table(df: pd.DataFrame) -> pd.DataFrame:
    """Answer quality and speed per configuration over the ``ok`` rows of checked datasets:
    ``checked`` answers, ``pass_at_1`` (mean ``task_correct``) with its 95 % Wilson interval, the
    verdict counts (``checks``), pooled tokens per target call and tokens/s, ``speedup`` (pooled
    tokens/s over the baseline's in the same setting) and, for AutoJudge, the ``threshold`` it
    applied (:func:`applied_threshold`) and ``judge_accept_rate`` — the share of mismatches (the
    draft tokens greedy SpS would reject) the judge accepted; for the lossy rules,
    ``rule_accept_rate`` — the share of the exact test's rejections the rule overrode."""
    df = _prepared(df)
    ok = df[(df["status"] == "ok")].copy()
    ok["_correct"] = correct_values(ok["task_correct"])
    ok = ok[ok["_correct"].notna()]
    if ok.empty:
        raise NoData("no checked answers (task_correct is null: the dataset has no checker — use dataset=humaneval or arithmetic)")
    counts = [c for pair in BEYOND_EXACT.values() for c in pair]
    for col in (f"metric_{c}" for c in counts):
        ok[col] = pd.to_numeric(ok[col], errors="coerce") if col in ok.columns else np.nan
    keys = [k for k in config_keys(ok) if k in ok.columns]
    # counts, pass@1 with its interval and pooled rates: the one summary definition
    out = summarize(ok, keys)[keys + ["checked", "passed", "pass_at_1", "pass_at_1_lo", "pass_at_1_hi", "new_tokens",
                                      "tokens_per_target_call", "tokens_per_sec"]]
    g = ok.groupby(keys, dropna=False, sort=False)
    extra = pd.DataFrame({
        "checks": g["task_check"].agg(lambda s: ", ".join(f"{k}: {v}" for k, v in s.value_counts().sort_index().items())),
        **{c: g[f"metric_{c}"].sum(min_count=1) for c in counts},
        "threshold": applied_threshold(ok).where(ok["method"] == "autojudge").groupby(
            [ok[k] for k in keys], dropna=False, sort=False).mean(),
    }).reset_index()
    out = out.assign(_k=_key_string(out, keys)).set_index("_k").join(extra.assign(_k=_key_string(extra, keys)).set_index("_k")[
        ["checks", *counts, "threshold"]]).reset_index(drop=True)
    setting = [k for k in TARGET_KEYS + GEN_KEYS + MACHINE_KEYS + ["dataset"] if k in out.columns]
    base = out[out["method"] == BASELINE].assign(_s=_key_string(out[out["method"] == BASELINE], setting)).groupby("_s")["tokens_per_sec"].first()
    out["speedup"] = out["tokens_per_sec"] / _key_string(out, setting).map(base)
    for rate, (kept, asked) in BEYOND_EXACT.items():
        out[rate] = _ratio(out[kept], out[asked]).where(out[asked] > 0)
    out = out.drop(columns=counts)
    sort = [c for c in ("method", "param_k", "threshold") if c in out.columns]
    return out.sort_values(sort, na_position="first").reset_index(drop=True)


def errors_table(df: pd.DataFrame) -> pd.DataFrame:
    """Failed rows per configuration and error type, with one example message."""
    err = df[df["status"] == "error"]
    if err.empty:
        return pd.DataFrame(columns=["config", "error_type", "rows", "example"])
    return (
        err.groupby(["config", "error_type"], dropna=False)
        .agg(rows=("status", "size"), example=("error_message", "first"))
        .reset_index()
    )


def runs_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run dir: what ran there and how many rows succeeded."""
    return (
        df.groupby(["run_dir", "config", "model_preset"], dropna=False)
        .agg(rows=("status", "size"), ok=("ok", "sum"), errors=("is_error", "sum"), hostname=("hostname", "first"))
        .reset_index()
    )


# ---- markdown ---------------------------------------------------------------------------------


def split_constant(df: pd.DataFrame, keep: Sequence[str] = ()) -> tuple[pd.DataFrame, dict]:
    """Drop columns with one value across all rows (returned separately), except ``keep``."""
    const = {}
    cols = []
    for c in df.columns:
        vals = df[c].map(lambda v: repr(list(v)) if isinstance(v, (list, np.ndarray)) else v)
        if c not in keep and len(df) and vals.nunique(dropna=False) <= 1:
            const[c] = df[c].iloc[0]
        else:
            cols.append(c)
    return df[cols], const


def fmt_number(v: float, digits: int = 3) -> str:
    """``digits`` significant digits without scientific notation for everyday magnitudes (1480, 53.9, 0.0213)."""
    if not np.isfinite(v):
        return str(v)
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    mag = abs(v)
    if mag >= 1e6 or mag < 1e-4:
        return f"{v:.{digits - 1}e}"
    decimals = max(0, digits - 1 - int(np.floor(np.log10(mag))))
    return f"{v:.{decimals}f}".rstrip("0").rstrip(".") if decimals else f"{v:.0f}"


def _fmt(v: object, digits: int) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return fmt_number(float(v), digits)
    return str(v).replace("|", "\\|").replace("\n", " ")


def to_markdown(df: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub markdown table (no tabulate dependency); NaN shown as –, floats to ``digits`` significant digits."""
    if df.empty:
        return "_(no rows)_\n"
    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_fmt(v, digits) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"
