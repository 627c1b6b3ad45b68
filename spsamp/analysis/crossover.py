"""Speedup against batch size: where speculation stops paying.

A batch-size sweep is one comparison job per ``generation.batch_size`` (e.g.
``experiments/sweep_batch_size.yaml``), each decoding the same prompts in the same batches under
every arm. The unit of pairing is the batch, not the prompt: rows of one batch share its wall
time, so they are not independent measurements. :func:`batch_crossover` pairs each arm's batch
with the reference arm's batch of the same prompts, takes the ratio of their aggregate throughputs
(new tokens / wall time), and reports the geometric mean over batches with a 95 % bootstrap
interval over batches; ``decode_speedup`` is the same over the decode phase alone (new tokens /
decode time: the phase a drafter changes and the cost model's ``predicted_speedup`` forecasts,
without the prefill every arm pays alike, which dilutes ``speedup`` for short outputs and large
batches). Beside them: the batch size, the arm's aggregate throughput and peak memory.
:func:`crossover_summary` names, per arm, the largest batch size at which it still pays and the
smallest at which it stops paying — both judged by the interval, so a speedup the interval does
not support is neither.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from spsamp.analysis.paired import ARM_KEYS, PAIR_KEYS, bootstrap_geomean, geomean, paired_speedups
from spsamp.analysis.tables import NoData

COLUMNS = ["comparison", "arm", "config", "batch_size", "n_batches", "throughput_tokens_per_sec", "speedup", "speedup_lo",
           "speedup_hi", "decode_speedup", "decode_speedup_lo", "decode_speedup_hi", "predicted_speedup",
           "mean_accepted_tokens", "peak_mem_gib", "hardware"]

SUMMARY_COLUMNS = ["arm", "config", "batch_sizes", "pays_up_to", "stops_paying_at", "decode_pays_up_to",
                   "decode_stops_paying_at", "best_speedup", "best_batch_size"]


def _batches(ok: pd.DataFrame) -> pd.DataFrame:
    """One row per batch of ``ok`` rows: its key, prompts (a frozenset), new tokens, wall and decode
    time (shared by the batch's rows), and the two throughputs."""
    batch = ok["run_id"].astype(str) + "/" + ok["batch_index"].fillna(-1).astype(int).astype(str)
    prompt = ok[PAIR_KEYS].astype(str).agg("#".join, axis=1)
    frame = ok.assign(_batch=batch, _prompt=prompt, _tokens=pd.to_numeric(ok["new_tokens"], errors="coerce"),
                      _wall=pd.to_numeric(ok["wall_time_s"], errors="coerce"),
                      _decode=pd.to_numeric(ok["decode_s"], errors="coerce") if "decode_s" in ok else np.nan)
    g = frame.groupby(ARM_KEYS + ["_batch"], dropna=False, sort=False)
    out = g.agg(prompts=("_prompt", frozenset), tokens=("_tokens", "sum"), wall=("_wall", "first"),
                decode=("_decode", "first")).reset_index()
    out["rate"] = out["tokens"] / out["wall"]
    out["decode_rate"] = out["tokens"] / out["decode"].where(out["decode"] > 0)
    return out


def _paired_batches(ok: pd.DataFrame) -> pd.DataFrame:
    """Per (run_dir, comparison, arm) other than the reference: the geometric mean over batches of
    the arm's batch throughput over the reference arm's batch of the same prompts, with a 95 %
    bootstrap interval over batches, for the whole batch (``speedup``) and its decode phase
    (``decode_speedup``). Batches without a twin (split out of memory, failed rows) are left out."""
    batches = _batches(ok)
    ref_arm = ok.groupby(ARM_KEYS, dropna=False)["reference_arm"].first().rename("reference_arm").reset_index()
    batches = batches.merge(ref_arm, on=ARM_KEYS)
    ref = batches[batches["arm"] == batches["reference_arm"]][["run_dir", "comparison", "prompts", "rate", "decode_rate"]]
    other = batches[batches["arm"] != batches["reference_arm"]]
    both = other.merge(ref, on=["run_dir", "comparison", "prompts"], suffixes=("", "_ref"))
    out = []
    for key, g in both.groupby(ARM_KEYS, dropna=False, sort=False):
        row = {**dict(zip(ARM_KEYS, key)), "n_batches": len(g)}
        for name, rate in (("speedup", "rate"), ("decode_speedup", "decode_rate")):
            ratios = (g[rate] / g[f"{rate}_ref"]).to_numpy()
            lo, hi = bootstrap_geomean(ratios)  # NaN for one batch: no interval
            row.update({name: geomean(ratios), f"{name}_lo": lo, f"{name}_hi": hi})
        out.append(row)
    spreads = [f"{n}{s}" for n in ("speedup", "decode_speedup") for s in ("", "_lo", "_hi")]
    return pd.DataFrame(out, columns=ARM_KEYS + ["n_batches"] + spreads)


def _per_job(ok: pd.DataFrame) -> pd.DataFrame:
    """Per (run_dir, comparison, arm): its batch size, aggregate throughput (every batch's new tokens
    over every batch's wall time) and peak memory."""
    batches = _batches(ok).groupby(ARM_KEYS, dropna=False, sort=False)[["tokens", "wall"]].sum()
    jobs = ok.groupby(ARM_KEYS, dropna=False, sort=False).agg(
        batch_size=("batch_size", "max"), peak=("peak_mem_bytes", lambda s: pd.to_numeric(s, errors="coerce").max()))
    jobs = jobs.join(batches)
    jobs["throughput_tokens_per_sec"] = jobs["tokens"] / jobs["wall"].where(jobs["wall"] > 0)
    jobs["peak_mem_gib"] = jobs["peak"] / 2**30
    return jobs.reset_index()[ARM_KEYS + ["batch_size", "throughput_tokens_per_sec", "peak_mem_gib"]]


def batch_crossover(df: pd.DataFrame, paired: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """One row per arm and batch size (the reference arm's rows included, speedup empty), sorted by
    arm then batch size; ``paired``: :func:`paired_speedups` of ``df`` if already computed (its
    label, hardware, mean accepted tokens and prediction are reused). Raises :class:`NoData` unless
    the comparisons span two batch sizes."""
    have = {"arm", "comparison", "batch_size", "batch_index"} <= set(df.columns)
    ok = df[df["status"].eq("ok") & df["arm"].notna() & df["comparison"].notna()] if have else df.iloc[:0]
    if ok.empty or ok["batch_size"].nunique() < 2:
        raise NoData("the comparisons ran at one batch size (sweep generation.batch_size to see a crossover)")
    sp = paired_speedups(df) if paired is None else paired
    info = sp[ARM_KEYS + [c for c in ("config", "hardware", "mean_accepted_tokens", "predicted_speedup") if c in sp]]
    out = _per_job(ok).merge(_paired_batches(ok), on=ARM_KEYS, how="left").merge(info, on=ARM_KEYS, how="left")
    for c in COLUMNS:
        if c not in out:
            out[c] = np.nan
    return out.sort_values(["arm", "batch_size"], kind="stable")[COLUMNS].reset_index(drop=True)


def crossover_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per arm other than the reference: ``pays_up_to`` (the largest batch size whose speedup
    interval lies above 1), ``stops_paying_at`` (the smallest batch size whose interval lies below
    1; empty while none does), the same two judged on the decode phase alone
    (``decode_pays_up_to``, ``decode_stops_paying_at``), and the best speedup with its batch size."""
    out = []
    for arm, g in table[table["speedup"].notna()].groupby("arm", sort=True):
        g = g.sort_values("batch_size")
        row = {"arm": arm, "config": g["config"].iloc[0], "batch_sizes": " ".join(str(b) for b in g["batch_size"])}
        for prefix, col in (("", "speedup"), ("decode_", "decode_speedup")):
            pays, stops = g[g[f"{col}_lo"] > 1], g[g[f"{col}_hi"] < 1]
            row[f"{prefix}pays_up_to"] = int(pays["batch_size"].max()) if len(pays) else np.nan
            row[f"{prefix}stops_paying_at"] = int(stops["batch_size"].min()) if len(stops) else np.nan
        best = g.loc[g["speedup"].idxmax()]
        out.append({**row, "best_speedup": best["speedup"], "best_batch_size": int(best["batch_size"])})
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)
