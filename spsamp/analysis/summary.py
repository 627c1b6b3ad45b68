"""The short table printed when a sweep ends (and by ``python -m spsamp.analysis summary <dir>``).

One line per configuration, pooled over its ``ok`` rows: tokens/s (all new tokens / all wall
time, prefill included), speed-up over ``baseline``, acceptance rate, tokens per target call
(mean tokens kept per target pass, the target's own token included), the ratio to transformers'
assisted generation (``hf_assisted``) at the same ``k`` — on the same kernels (``vs_hf_assisted``)
and, where the sweep has such rows, on PyTorch's stock kernels (``vs_hf_assisted_aten``: rows
run with ``hardware.cpu_linear=aten``, transformers as its users run it) — and — greedy only — the share of prompts
whose tokens equal the baseline's. Rows are compared only within one setting (model, dtype,
kernels, generation settings, machine, dataset); every ratio's two sides come from the same sweep.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.experimental.callback import Callback

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
    cols = ["config", "prompts", "errors", "new_tokens", "tokens_per_sec", "speedup", "acceptance", "tokens_per_target_call",
            "vs_hf_assisted", "vs_hf_assisted_aten", "same_as_baseline"]
    if out["vs_hf_assisted_aten"].isna().all():
        cols.remove("vs_hf_assisted_aten")
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
        blocks.append((f"{head}\n\n" if head else "") + T.to_markdown(shown.reset_index(drop=True), digits=3))
    return "\n\n".join(blocks)


def summarize_dir(path: str | Path) -> str:
    from spsamp.analysis.load import load_records

    return format_summary(sweep_summary(load_records(str(path), metrics=False)))


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
