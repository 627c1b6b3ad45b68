"""Paired statistics of comparison jobs (spsamp/comparison.py): every arm against its job's reference
arm, prompt by prompt, on the one machine that ran both.

- Speed: for each (prompt, turn, repeat) both arms decoded, the ratio of the arm's tokens/s to the
  reference's (``speedup``, prefill included; ``decode_speedup``, decode phase only); repeats of a
  prompt are reduced to their geometric mean, then an arm's speedup is the geometric mean over
  prompts with a 95 % percentile-bootstrap interval (prompts resampled, seeded: the same records give
  the same interval), beside the median and IQR of the per-prompt ratios.
- Quality: where both rows of a pair carry ``task_correct``, the difference in pass rate on the same
  problems with its 95 % paired interval (Newcombe's square-and-add, :func:`newcombe_paired_interval`)
  and the exact McNemar p-value (two-sided binomial test on the discordant pairs), beside each side's
  pass@1 and Wilson interval; :func:`problems_needed` projects how many problems would establish a
  loss within a budget at the shares observed.
- Vocabulary: mean accepted tokens per target call (new tokens / target forward passes, pooled: 1.00
  for plain decoding; Spec-Bench's "mean accepted tokens"), the pooled histogram of accepted lengths
  (``accept_len_hist``: count of steps that kept i tokens), acceptance rate, tokens/s, and the cost
  model's own prediction over baseline where the rows carry one (:func:`predicted_over_baseline`).

Every comparison is labelled with the hardware it ran on (:func:`hardware_label`).
"""

from __future__ import annotations

import json
import math
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from spsamp.records.shards import job_root
from spsamp.records.summary import correct_values, wilson_interval

PAIR_KEYS = ["prompt_id", "turn", "repeat"]
JOB_KEYS = ["run_dir", "comparison"]
ARM_KEYS = JOB_KEYS + ["arm"]
BOOTSTRAP = 2000  # resamples of the prompts per interval
SEED = 0


# ---- small statistics ----------------------------------------------------------------------------


def geomean(x: Sequence[float]) -> float:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x) & (x > 0)]
    return float(np.exp(np.log(x).mean())) if len(x) else np.nan


def bootstrap_geomean(x: Sequence[float], n: int = BOOTSTRAP, seed: int = SEED, level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of the geometric mean of ``x`` (NaN under two values)."""
    logs = np.log(np.asarray([v for v in x if np.isfinite(v) and v > 0], dtype=float))
    if len(logs) < 2:
        return (np.nan, np.nan)
    rng = np.random.default_rng(seed)
    means = logs[rng.integers(0, len(logs), size=(n, len(logs)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(np.exp(lo)), float(np.exp(hi))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (a binomial test of
    b against Binomial(b + c, 1/2)); 1.0 when there is no discordant pair."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def newcombe_paired_interval(both: int, arm_only: int, ref_only: int, neither: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % interval of the paired difference in pass rate, arm − reference, over ``n`` problems that
    both sides answered: ``both`` passed by both, ``arm_only`` / ``ref_only`` by one side, ``neither``.

    Newcombe's square-and-add interval for paired proportions (Newcombe 1998, method 10; recommended
    in Fagerland, Lydersen & Laake 2013): each side's Wilson interval, combined with the estimated
    correlation of the two sides (continuity-corrected phi). Unlike a bootstrap over problems it does
    not collapse to [0, 0] when no problem is discordant: with few problems it stays as wide as the
    problems leave it. NaN when ``n`` is 0."""
    n = both + arm_only + ref_only + neither
    if n == 0:
        return (np.nan, np.nan)
    p_arm, p_ref = (both + arm_only) / n, (both + ref_only) / n
    l_arm, u_arm = wilson_interval(both + arm_only, n, z)
    l_ref, u_ref = wilson_interval(both + ref_only, n, z)
    margins = (both + arm_only) * (ref_only + neither) * (both + ref_only) * (arm_only + neither)
    phi = 0.0
    if margins > 0:
        cross = both * neither - arm_only * ref_only
        phi = (cross - n / 2) / math.sqrt(margins) if cross > n / 2 else min(cross, 0) / math.sqrt(margins)
    d = p_arm - p_ref
    lo = d - math.sqrt(max(0.0, (p_arm - l_arm) ** 2 + (u_ref - p_ref) ** 2 - 2 * phi * (p_arm - l_arm) * (u_ref - p_ref)))
    hi = d + math.sqrt(max(0.0, (p_ref - l_ref) ** 2 + (u_arm - p_arm) ** 2 - 2 * phi * (p_ref - l_ref) * (u_arm - p_arm)))
    return (max(-1.0, lo), min(1.0, hi))


def problems_needed(both: int, arm_only: int, ref_only: int, neither: int, budget: float, cap: int = 1_000_000) -> float:
    """How many problems would establish the arm's loss (reference − arm) within ``budget`` (a
    fraction) if the four shares observed held: the smallest ``N`` at which the upper end of the
    paired interval (:func:`newcombe_paired_interval`) on the counts scaled to ``N`` is at most
    ``budget``. Its half-width shrinks like √(discordant share / N) around the observed loss, so a loss
    already at or over the budget is never established (``inf``, as is anything past ``cap``); NaN
    without problems. A projection for planning, not a result: the shares themselves are uncertain."""
    n = both + arm_only + ref_only + neither
    if n <= 0:
        return np.nan

    def within(size: int) -> bool:
        s = size / n
        return -newcombe_paired_interval(both * s, arm_only * s, ref_only * s, neither * s)[0] <= budget + 1e-12

    if (ref_only - arm_only) / n >= budget or not within(cap):
        return math.inf
    lo, hi = 0, 1  # invariant once doubling stops: within(hi) holds, within(lo) does not (zero problems establish nothing)
    while not within(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # the upper end falls with N: bisect to the first N within the budget
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if within(mid) else (mid, hi)
    return float(hi)


# ---- hardware and metrics ------------------------------------------------------------------------


HARDWARE_COLUMNS = ["device", "gpu_name", "cpu_model", "num_threads"]  # what hardware_label reads


def hardware_label(row: pd.Series) -> str:
    """``NVIDIA H100 80GB HBM3`` or ``Intel(R) Xeon(R) ..., 4 threads`` — what a speed was measured on
    (the CPU linear kernels, which arms of one comparison may vary, are a column of their own)."""
    device = str(row.get("device") or "")
    gpu = row.get("gpu_name")
    if device.startswith("cuda") and isinstance(gpu, str) and gpu:
        return gpu
    parts = [str(row.get("cpu_model") or "unknown CPU")]
    threads = row.get("num_threads")
    if threads is not None and not (isinstance(threads, float) and np.isnan(threads)):
        parts.append(f"{int(threads)} thread{'s' if int(threads) != 1 else ''}")
    return ", ".join(parts)


def predicted_over_baseline(metrics_json: Iterable[Optional[str] | dict]) -> float:
    """The cost model's own prediction of an arm's decode speedup over plain decoding, pooled over
    its rows as the measurement is (each row's steps x predicted tokens over its steps x predicted
    cost), from the ``metrics_json`` the sizing drafters write (``sizing_*``; rows written before that family
    have ``auto_*`` or ``grow_*``); rows with only a per-row prediction give the mean of those. NaN where
    no row carries one. This and :func:`predicted_accepted_tokens` are the only readers of these keys."""
    rows = _parsed(metrics_json)
    for prefix in ("sizing", "auto", "grow"):
        steps, tokens, cost = (f"{prefix}_steps", f"{prefix}_predicted_step_tokens", f"{prefix}_predicted_step_cost")
        have = [r for r in rows if all(isinstance(r.get(k), (int, float)) for k in (steps, tokens, cost))]
        if have and len(have) == len([r for r in rows if f"{prefix}_predicted_speedup" in r]):
            den = sum(r[steps] * r[cost] for r in have)
            if den > 0:
                return sum(r[steps] * r[tokens] for r in have) / den
        single = [r[f"{prefix}_predicted_speedup"] for r in rows if isinstance(r.get(f"{prefix}_predicted_speedup"), (int, float))]
        if single:
            return float(np.mean(single))
    return np.nan


def predicted_accepted_tokens(metrics_json: Iterable[Optional[str] | dict], target_calls: Iterable[object]) -> float:
    """The cost model's forecast of ``mean_accepted_tokens`` (new tokens per target pass), pooled
    the same way over the rows it sized: each sized step at the tokens it was chosen for
    (``sizing_predicted_step_tokens``), every other target pass (the prefill) at the one token it
    yields. Beside the measured figure it says whether ``predicted_speedup`` missed on acceptance
    (this one misses too) or on cost (this one holds). NaN where no row was sized."""
    num = den = 0.0
    for m, calls in zip(_parsed(metrics_json), target_calls):
        steps, tokens = m.get("sizing_steps"), m.get("sizing_predicted_step_tokens")
        calls = pd.to_numeric(calls, errors="coerce")
        if isinstance(steps, (int, float)) and isinstance(tokens, (int, float)) and np.isfinite(calls) and calls >= steps:
            num, den = num + calls - steps + steps * tokens, den + calls
    return num / den if den > 0 else np.nan


def _parsed(metrics_json: Iterable[Optional[str] | dict]) -> list[dict]:
    """Each row's ``metrics_json`` as a dict ({} where absent or not JSON); dicts pass through."""
    rows = []
    for text in metrics_json:
        if isinstance(text, dict):
            rows.append(text)
            continue
        try:
            m = json.loads(text) if isinstance(text, str) and text else {}
        except json.JSONDecodeError:
            m = {}
        rows.append(m if isinstance(m, dict) else {})
    return rows


def pooled_histogram(hists: Iterable[object]) -> list[int]:
    """The sum of per-row ``accept_len_hist`` lists (index i: steps that kept i tokens)."""
    total: list[int] = []
    for h in hists:
        if h is None or (isinstance(h, float) and np.isnan(h)):
            continue
        h = list(h)
        total += [0] * (len(h) - len(total))
        for i, v in enumerate(h):
            total[i] += int(v)
    return total


def fmt_histogram(h: list[int]) -> str:
    """``1:40 2:12 5:3`` (tokens kept per step: steps), empty bins left out."""
    return " ".join(f"{i}:{v}" for i, v in enumerate(h) if v) or "–"


# ---- pairs ---------------------------------------------------------------------------------------


def _comparison_rows(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for c in ["arm", "reference_arm", "comparison", "run_dir", "category", "task_correct", "generated_ids", "repeat",
              "temperature", "cpu_model", "gpu_name", "device", "num_threads", "cpu_linear", "hostname", "run_id"]:
        if c not in df.columns:
            df[c] = None
    if df["run_dir"].isna().all() and "output_dir" in df.columns:
        df["run_dir"] = df["output_dir"].map(lambda d: str(job_root(d)) if isinstance(d, str) else d)
    return df[df["arm"].notna() & df["comparison"].notna()]


def pairs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (comparison, arm other than the reference, prompt, turn, repeat) both arms
    decoded ``ok``: the arm's and the reference's tokens/s, their ratios, whether the tokens are the
    same (greedy rows) and both answers' ``task_correct``. ``same_launch`` is False where the two rows
    come from different launches of the job (a job resumed in another session, maybe on another
    machine): their verdicts still pair, their speeds do not (the ratios are left empty)."""
    rows = _comparison_rows(df)
    ok = rows[rows["status"] == "ok"].copy()
    for c in ("tokens_per_sec", "decode_tokens_per_sec"):
        ok[c] = pd.to_numeric(ok.get(c), errors="coerce")
    ok["_correct"] = correct_values(ok["task_correct"])
    keys = JOB_KEYS + PAIR_KEYS
    ref = ok[ok["arm"] == ok["reference_arm"]][keys + ["tokens_per_sec", "decode_tokens_per_sec", "generated_ids", "_correct", "run_id"]]
    ref = ref.rename(columns={"tokens_per_sec": "ref_tokens_per_sec", "decode_tokens_per_sec": "ref_decode_tokens_per_sec",
                              "generated_ids": "ref_ids", "_correct": "ref_correct", "run_id": "ref_run_id"})
    other = ok[ok["arm"] != ok["reference_arm"]]
    out = other.merge(ref, on=keys, how="inner")
    out["same_launch"] = out["run_id"].isna() | out["ref_run_id"].isna() | (out["run_id"] == out["ref_run_id"])
    out["speedup"] = (out["tokens_per_sec"] / out["ref_tokens_per_sec"]).where(out["same_launch"])
    out["decode_speedup"] = (out["decode_tokens_per_sec"] / out["ref_decode_tokens_per_sec"]).where(out["same_launch"])

    def same(r: pd.Series) -> float:
        if r["temperature"] != 0 or r["generated_ids"] is None or r["ref_ids"] is None:
            return np.nan
        return float(list(r["generated_ids"]) == list(r["ref_ids"]))

    out["same_as_reference"] = out.apply(same, axis=1) if len(out) else pd.Series(dtype=float)
    return out.drop(columns=["ref_ids", "ref_run_id"]).reset_index(drop=True)


def _per_prompt(p: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Repeats of one (prompt, turn) reduced to the geometric mean of their ratios."""
    g = p.groupby(list(by) + ["prompt_id", "turn"], dropna=False, sort=True)
    return pd.concat([g["speedup"].agg(geomean), g["decode_speedup"].agg(geomean), g["same_as_reference"].mean()], axis=1).reset_index()


def _arm_info(df: pd.DataFrame) -> pd.DataFrame:
    """Per arm: its reference, configuration label, hardware and hosts, and the pooled vocabulary."""
    rows = _comparison_rows(df)
    if rows.empty:
        return pd.DataFrame(columns=ARM_KEYS)
    rows = rows.assign(_ok=rows["status"].eq("ok"))
    out = []
    for key, g in rows.groupby(ARM_KEYS, dropna=False, sort=False):
        ok = g[g["_ok"]]
        num = {c: pd.to_numeric(ok.get(c, pd.Series(dtype=float)), errors="coerce").sum(min_count=1)
               for c in ("new_tokens", "wall_time_s", "target_calls", "proposed", "accepted")}
        first = g.iloc[0]
        metrics = _parsed(ok["metrics_json"]) if "metrics_json" in ok else None  # parsed once for both forecasts
        out.append({
            **dict(zip(ARM_KEYS, key)),
            "reference_arm": first["reference_arm"],
            "config": first.get("config", first.get("method")),
            # every machine the arm's rows ran on (a study resumed across sessions may span several)
            "hardware": " + ".join(sorted({hardware_label(r) for _, r in g[HARDWARE_COLUMNS].drop_duplicates().iterrows()})),
            "cpu_linear": first["cpu_linear"],
            "hosts": ", ".join(sorted({str(h) for h in g["hostname"].dropna()})) or "–",
            "rows": len(g),
            "prompts": ok.assign(_p=ok["prompt_id"].astype(str) + "#" + ok["turn"].astype(str))["_p"].nunique(),
            "errors": int((~g["_ok"]).sum()),
            "tokens_per_sec": num["new_tokens"] / num["wall_time_s"] if num["wall_time_s"] and num["wall_time_s"] > 0 else np.nan,
            "acceptance": num["accepted"] / num["proposed"] if num["proposed"] and num["proposed"] > 0 else np.nan,
            "mean_accepted_tokens": num["new_tokens"] / num["target_calls"] if num["target_calls"] and num["target_calls"] > 0 else np.nan,
            "accept_len_hist": fmt_histogram(pooled_histogram(ok["accept_len_hist"])) if "accept_len_hist" in ok else "–",
            "predicted_speedup": predicted_over_baseline(metrics) if metrics is not None else np.nan,
            "predicted_accepted_tokens": (predicted_accepted_tokens(metrics, ok["target_calls"])
                                          if metrics is not None and "target_calls" in ok else np.nan),
        })
    return pd.DataFrame(out)


def paired_speedups(df: pd.DataFrame, by: Sequence[str] = (), seed: int = SEED) -> pd.DataFrame:
    """Per comparison and arm (and ``by``, e.g. ``["category"]``): every arm's row, the reference's
    included (speedup 1 by definition, left empty), with the pooled vocabulary and, for the others,
    ``n_prompts``, ``speedup`` (geometric mean of per-prompt ratios) with ``speedup_lo``/``_hi`` (95 %
    bootstrap), ``speedup_median``/``_q25``/``_q75``, ``decode_speedup`` (geometric mean) beside the
    cost model's ``predicted_speedup`` (a decode-phase prediction), and ``same_as_reference``."""
    info = _arm_info(df)
    if info.empty:
        return info
    p = pairs(df)
    p = p[p["same_launch"]] if not p.empty else p  # a speed ratio only within one launch (one machine)
    stats = []
    for key, g in p.groupby(ARM_KEYS + list(by), dropna=False, sort=False) if not p.empty else []:
        pp = _per_prompt(g, ARM_KEYS + list(by))
        s = pp["speedup"]
        lo, hi = bootstrap_geomean(s, seed=seed)
        stats.append({
            **dict(zip(ARM_KEYS + list(by), key)),
            "n_prompts": len(pp),
            "speedup": geomean(s), "speedup_lo": lo, "speedup_hi": hi,
            "speedup_median": s.median(), "speedup_q25": s.quantile(0.25), "speedup_q75": s.quantile(0.75),
            "decode_speedup": geomean(pp["decode_speedup"]),
            "same_as_reference": pp["same_as_reference"].mean(),
        })
    stats_df = pd.DataFrame(stats, columns=ARM_KEYS + list(by) + ["n_prompts", "speedup", "speedup_lo", "speedup_hi", "speedup_median",
                                                                 "speedup_q25", "speedup_q75", "decode_speedup", "same_as_reference"])
    if by:  # per category: the arms' rows are the pairs' groups
        out = stats_df.merge(info[ARM_KEYS + ["reference_arm", "config", "hardware"]], on=ARM_KEYS, how="left")
    else:
        out = info.merge(stats_df, on=ARM_KEYS, how="left")
        out["n_prompts"] = out["n_prompts"].fillna(0).astype(int)
    return out.reset_index(drop=True)


def paired_quality(df: pd.DataFrame) -> pd.DataFrame:
    """Per comparison and arm other than the reference, over the pairs whose answers were both
    checked: ``n`` problems, each side's pass@1 with its Wilson interval, the difference
    (arm − reference) with its 95 % paired interval ``difference_lo``/``_hi``
    (:func:`newcombe_paired_interval`), the discordant counts (``ref_only``: only the reference
    passed; ``arm_only``: only the arm) and the exact McNemar p-value. A problem decoded in several
    repeats is one pair per repeat."""
    p = pairs(df)
    if p.empty:
        return pd.DataFrame()
    p = p[p["_correct"].notna() & p["ref_correct"].notna()]
    out = []
    for key, g in p.groupby(ARM_KEYS, dropna=False, sort=False):
        n = len(g)
        a, r = g["_correct"].astype(bool), g["ref_correct"].astype(bool)
        b, c = int((r & ~a).sum()), int((a & ~r).sum())
        lo, hi = wilson_interval(a.sum(), n)
        rlo, rhi = wilson_interval(r.sum(), n)
        dlo, dhi = newcombe_paired_interval(int((a & r).sum()), c, b, int((~a & ~r).sum()))
        out.append({**dict(zip(ARM_KEYS, key)), "reference_arm": g["reference_arm"].iloc[0], "config": g.get("config", g["method"]).iloc[0],
                    "n": n, "pass_at_1": a.mean(), "pass_at_1_lo": lo, "pass_at_1_hi": hi,
                    "ref_pass_at_1": r.mean(), "ref_pass_at_1_lo": rlo, "ref_pass_at_1_hi": rhi,
                    "difference": (c - b) / n, "difference_lo": dlo, "difference_hi": dhi, "ref_only": b, "arm_only": c, "mcnemar_p": mcnemar_exact(b, c)})
    return pd.DataFrame(out)


def per_problem(df: pd.DataFrame) -> pd.DataFrame:
    """Every checked problem of each comparison, one row per (comparison, prompt, turn, repeat), one
    column per arm: 1 passed, 0 failed, empty where the arm has no checked answer; ``disagree`` is
    True where the arms' verdicts differ (the problems every paired quality difference comes from)."""
    rows = _comparison_rows(df)
    ok = rows[rows["status"] == "ok"].assign(_correct=lambda d: correct_values(d["task_correct"]))
    ok = ok[ok["_correct"].notna()]
    if ok.empty:
        return pd.DataFrame()
    wide = ok.pivot_table(index=[*JOB_KEYS, *PAIR_KEYS], columns="arm", values="_correct", aggfunc="first")
    arms = list(dict.fromkeys(ok["arm"]))  # the order the arms were listed in
    wide = wide[arms].astype("Int64")
    wide["disagree"] = wide.apply(lambda r: r.dropna().nunique() > 1, axis=1)
    wide.columns.name = None
    return wide.reset_index()
