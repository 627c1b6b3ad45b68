"""The short tables printed when a sweep ends (and by ``python -m spsamp.analysis summary <dir>``).

Comparison jobs (spsamp/comparison.py) get one paired table each (:func:`comparison_summary`): per
arm, its speedup over the job's reference arm as the geometric mean of per-prompt ratios with a 95 %
bootstrap interval and the median [IQR], mean accepted tokens per target call, acceptance, the
histogram of accepted lengths, the cost model's prediction where the rows carry one, and on checked
datasets pass@1 with the paired difference and its exact McNemar p — under a line naming the
hardware it ran on. Rows of plain jobs get the *unpaired* table below (:func:`sweep_summary`),
matched across jobs on hardware, never on hostname; configurations that found no reference are listed.

Unpaired table: one line per configuration, pooled over its ``ok`` rows: tokens/s (all new tokens / all wall
time, prefill included), speed-up over ``baseline``, acceptance rate, tokens per target call
(mean tokens kept per target pass, the target's own token included), the ratio to transformers'
assisted generation (``hf_assisted``) at the same ``k`` — on the same kernels (``vs_hf_assisted``)
and, where the sweep has such rows, on PyTorch's stock kernels (``vs_hf_assisted_aten``: rows
run with ``hardware.cpu_linear=aten``, transformers as its users run it) — and — greedy only — the share of prompts
whose tokens equal the baseline's — and, on checked datasets (HumanEval, arithmetic), answer quality:
pass@1 (mean ``task_correct``) with its 95 % Wilson interval. Rows are compared only within one setting (model, dtype,
kernels, generation settings, machine, dataset); every ratio's two sides come from the same sweep.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.experimental.callback import Callback

from spsamp.analysis import paired as P
from spsamp.analysis import tables as T
from spsamp.records.summary import summarize

log = logging.getLogger(__name__)

REFERENCE = "hf_assisted"
SETTING = T.TARGET_KEYS + T.GEN_KEYS + T.MACHINE_KEYS + ["dataset"]


def _lookup(out: pd.DataFrame, rows: pd.DataFrame, keys: list[str], col: str, how: str = "first") -> pd.Series:
    """For each row of ``out``, ``col`` of the ``rows`` that share its ``keys`` (NaN when none)."""
    ref = rows.assign(_s=T._key_string(rows, keys)).groupby("_s")[col].agg(how)
    return T._key_string(out, keys).map(ref)


def sweep_summary(df: pd.DataFrame) -> pd.DataFrame:
    """The end-of-sweep table (see module doc); empty when no row is ``ok``."""
    df = T._prepared(df)
    df = df[df["arm"].isna()]  # a comparison's arms are paired: comparison_summary
    if "param_k" not in df.columns:
        df["param_k"] = np.nan
    if not df["status"].eq("ok").any():
        return pd.DataFrame()
    keys = SETTING + ["config", "method", "param_k"]
    # counts and pooled rates: the one summary definition (spsamp/records/summary.py)
    out = summarize(df, keys)
    out = out[out["ok"] > 0].reset_index(drop=True)
    tps = out["tokens_per_sec"]
    has_k = out["param_k"].notna()
    reference = out[out["method"] == REFERENCE]
    out["speedup"] = tps / _lookup(out, out[out["method"] == T.BASELINE], SETTING, "tokens_per_sec")
    out["vs_hf_assisted"] = (tps / _lookup(out, reference, SETTING + ["param_k"], "tokens_per_sec")).where(has_k)
    # the same setting but stock kernels: transformers as a user runs it
    no_kernels = [c for c in SETTING if c != "cpu_linear"] + ["param_k"]
    stock = reference[reference["cpu_linear"] == "aten"]
    out["vs_hf_assisted_aten"] = (tps / _lookup(out, stock, no_kernels, "tokens_per_sec")).where(has_k)
    sp = T.speedups(df)
    out["same_as_baseline"] = _lookup(out, sp, SETTING + ["config"], "identical_to_baseline", "mean") if not sp.empty else np.nan
    # baseline and transformers' generate first, then each k with its hf_assisted beside it
    rank = out["method"].map({"baseline": 0, "hf_generate": 1}).fillna(2)
    out = out.assign(_rank=rank).sort_values(["_rank", "param_k", "method", "config"], na_position="last", kind="stable")
    out = out.rename(columns={"speedup": "speedup_unpaired"})
    cols = ["config", "prompts", "errors", "new_tokens", "tokens_per_sec", "speedup_unpaired", "acceptance", "tokens_per_target_call",
            "vs_hf_assisted", "vs_hf_assisted_aten", "same_as_baseline", "pass_at_1", "pass_at_1_lo", "pass_at_1_hi"]
    if out["vs_hf_assisted_aten"].isna().all():
        cols.remove("vs_hf_assisted_aten")
    if out["pass_at_1"].isna().all():  # no checked dataset: no quality columns
        cols = [c for c in cols if not c.startswith("pass_at_1")]
    if not out["errors"].any():
        cols.remove("errors")
    return out[SETTING + cols]


def format_summary(table: pd.DataFrame) -> str:
    """Markdown: one block per setting, its constant columns in a line above the table."""
    if table.empty:
        return "_no finished rows_"
    blocks = []
    for _, part in table.groupby(T._key_string(table, SETTING), sort=False):
        first = part[SETTING].iloc[0]
        head = ", ".join(f"{k}={T._fmt(v, 4)}" for k, v in first.items() if v is not None and not pd.isna(v))
        shown = part[[c for c in part.columns if c not in SETTING]]
        if "pass_at_1" in shown.columns:  # one readable column: 0.634 [0.52, 0.74]
            shown = shown.assign(**{"pass@1 [95% CI]": [T.fmt_pass_at_1(*v) for v in shown[["pass_at_1", "pass_at_1_lo", "pass_at_1_hi"]].values]})
            shown = shown.drop(columns=["pass_at_1", "pass_at_1_lo", "pass_at_1_hi"])
        blocks.append((f"{head}\n\n" if head else "") + T.to_markdown(shown.reset_index(drop=True), digits=3))
    return "\n\n".join(blocks)


def _ci(v: float, lo: float, hi: float) -> str:
    if pd.isna(v):
        return "–"
    return f"{T.fmt_number(v)} [{T.fmt_number(lo)}, {T.fmt_number(hi)}]" if not pd.isna(lo) else T.fmt_number(v)


def comparison_summary(df: pd.DataFrame) -> pd.DataFrame:
    """The paired table of every comparison job in ``df`` (see module doc), display-ready except
    for the key columns ``run_dir``, ``comparison``, ``hardware``, ``hosts``, ``reference_arm``."""
    sp = P.paired_speedups(df)
    if sp.empty:
        return sp
    q = P.paired_quality(df)
    out = sp.copy()
    out["speedup [95% CI]"] = [_ci(*v) for v in out[["speedup", "speedup_lo", "speedup_hi"]].values]
    out["median [IQR]"] = [_ci(*v) for v in out[["speedup_median", "speedup_q25", "speedup_q75"]].values]
    out.loc[out["arm"] == out["reference_arm"], ["speedup [95% CI]", "median [IQR]"]] = "reference"
    out = out.rename(columns={"n_prompts": "paired"}).astype({"paired": object})  # prompts the arm and the reference both decoded
    out.loc[out["arm"] == out["reference_arm"], "paired"] = "–"
    cols = ["arm", "config", "cpu_linear", "prompts", "paired", "errors", "tokens_per_sec", "speedup [95% CI]", "median [IQR]",
            "decode_speedup", "predicted_speedup", "mean_accepted_tokens", "predicted_accepted_tokens", "acceptance", "accept_len_hist", "same_as_reference"]
    if not q.empty:
        q = q.set_index(P.ARM_KEYS)
        idx = pd.MultiIndex.from_frame(out[P.ARM_KEYS])
        ref_pass = q.groupby(level=[0, 1])[["ref_pass_at_1", "ref_pass_at_1_lo", "ref_pass_at_1_hi"]].first()
        cell = []
        for key, arm, ref in zip(idx, out["arm"], out["reference_arm"]):
            if key in q.index:
                r = q.loc[key]
                cell.append((T.fmt_pass_at_1(r.pass_at_1, r.pass_at_1_lo, r.pass_at_1_hi), f"{r.difference:+.3f}", T.fmt_number(r.mcnemar_p)))
            elif arm == ref and key[:2] in ref_pass.index:
                r = ref_pass.loc[key[:2]]
                cell.append((T.fmt_pass_at_1(r.ref_pass_at_1, r.ref_pass_at_1_lo, r.ref_pass_at_1_hi), "reference", "–"))
            else:
                cell.append(("–", "–", "–"))
        out["pass@1 [95% CI]"], out["Δ pass@1"], out["McNemar p"] = zip(*cell)
        cols += ["pass@1 [95% CI]", "Δ pass@1", "McNemar p"]
    for c, empty in (("predicted_speedup", out["predicted_speedup"].isna().all()),
                     ("predicted_accepted_tokens", out["predicted_accepted_tokens"].isna().all()), ("same_as_reference", out["same_as_reference"].isna().all()),
                     ("errors", not out["errors"].any()), ("cpu_linear", out["cpu_linear"].astype(str).nunique() <= 1),
                     ("accept_len_hist", (out["accept_len_hist"] == "–").all())):
        if empty:
            cols.remove(c)
    return out[["run_dir", "comparison", "hardware", "hosts", "reference_arm"] + cols]


def format_comparisons(table: pd.DataFrame) -> str:
    """Markdown: one block per comparison, the hardware it ran on in a line above its table."""
    blocks = []
    for (run_dir, name), part in table.groupby(["run_dir", "comparison"], sort=False):
        first = part.iloc[0]
        hardware = ", ".join(dict.fromkeys(part["hardware"]))
        head = (f"comparison `{name}` on {hardware} (host {first['hosts']}), paired with arm `{first['reference_arm']}`: "
                "speedup = geometric mean over prompts of tokens/s ratios, 95 % bootstrap interval")
        shown = part.drop(columns=["run_dir", "comparison", "hardware", "hosts", "reference_arm"]).reset_index(drop=True)
        blocks.append(f"{head}\n\n{T.to_markdown(shown, digits=3)}")
    return "\n\n".join(blocks)


def summary_text(df: pd.DataFrame) -> str:
    """Everything the end-of-sweep summary says about ``df``: the paired tables of its comparisons,
    the unpaired table of its other rows, and the configurations that found no reference."""
    parts = []
    paired = comparison_summary(df)
    if not paired.empty:
        parts.append(format_comparisons(paired))
    plain = sweep_summary(df)
    if not plain.empty:
        parts.append(("unpaired (separate jobs, matched on hardware and settings):\n\n" if parts else "") + format_summary(plain))
    missing = T.unmatched(df, T.speedups(df))
    if missing:
        parts.append("no baseline on the same hardware and settings for: " + ", ".join(missing))
    return "\n\n".join(parts) or "_no finished rows_"


def summarize_dir(path: str | Path) -> str:
    from spsamp.analysis.load import load_records

    return summary_text(load_records(str(path), metrics=False))


class PrintSummary(Callback):
    """Hydra callback (``conf/hydra/default.yaml``): log the summary of the sweep dir when a
    multirun ends — all of it, rows from earlier launches into the same dir included."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not any(sweep_dir.rglob("records.parquet")):
            return
        try:
            log.info("summary of %s:\n\n%s\n", sweep_dir, summarize_dir(sweep_dir))
        except Exception as exc:  # a summary must never turn a finished sweep into a failed one
            log.warning("could not summarise %s: %s", sweep_dir, exc)
