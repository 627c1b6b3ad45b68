"""``report.md`` over one sweep or many: the derived tables as markdown (and CSV) plus the PNG plots.

A plot or table whose data is absent (e.g. no SpecExec runs) is skipped with a note saying why.
"""

from __future__ import annotations

import inspect
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Optional, Union

import pandas as pd

from spsamp.analysis import frontier as F
from spsamp.analysis import paired as P
from spsamp.analysis import tables as T
from spsamp.analysis.crossover import batch_crossover, crossover_summary
from spsamp.analysis.load import load_records
from spsamp.analysis.plots import PLOTS

log = logging.getLogger(__name__)

# key columns shown only when they differ between rows (constants go in a line above the table)
_KEY_COLS = set(T.TARGET_KEYS + T.DRAFT_KEYS + T.GEN_KEYS + T.MACHINE_KEYS + ["dataset", "method", "arm", "run_dir", "comparison", "hardware", "hosts", "reference_arm"])
_HIDDEN = {"method_params"}


def display_table(df: pd.DataFrame, spreads: Iterable[str] = ()) -> tuple[pd.DataFrame, dict]:
    """A readable copy: ``x_median/x_q25/x_q75`` merged into one ``x median [IQR]`` text column,
    ``param_*`` and ``method_params`` dropped (the ``config`` label carries them), key columns
    that are the same on every row moved out into the returned dict."""
    df = df.copy()
    for col in spreads:
        if f"{col}_median" not in df:
            continue
        med, lo, hi = df.pop(f"{col}_median"), df.pop(f"{col}_q25"), df.pop(f"{col}_q75")
        df[f"{col} median [IQR]"] = [
            "–" if pd.isna(m) else f"{T.fmt_number(m)} [{T.fmt_number(lo_)}, {T.fmt_number(hi_)}]" for m, lo_, hi_ in zip(med, lo, hi)
        ]
    hidden = _HIDDEN | ({"method"} if "config" in df.columns else set())  # the config label starts with it
    df = df[[c for c in df.columns if c not in hidden and not c.startswith(T.PARAM_PREFIX)]]
    keys = [c for c in df.columns if c in _KEY_COLS]
    _, const = T.split_constant(df[keys])
    return df.drop(columns=list(const)), const


def _section(title: str, df: Optional[pd.DataFrame], note: str = "", spreads: Iterable[str] = ()) -> str:
    out = [f"## {title}\n"]
    if note:
        out.append(note + "\n")
    if df is None or df.empty:
        out.append("_No data for this table in these records._\n")
        return "\n".join(out)
    shown, const = display_table(df, spreads)
    if const:
        out.append("Common to all rows: " + ", ".join(f"`{k}={T._fmt(v, 4)}`" for k, v in const.items()) + "\n")
    out.append(T.to_markdown(shown))
    return "\n".join(out)


def _quality_display(q: Optional[pd.DataFrame]) -> Optional[pd.DataFrame]:
    if q is None or q.empty:
        return q
    cells = [T.fmt_pass_at_1(*v) for v in q[["pass_at_1", "pass_at_1_lo", "pass_at_1_hi"]].values]
    q = q.drop(columns=["pass_at_1", "pass_at_1_lo", "pass_at_1_hi", "passed"])
    q.insert(q.columns.get_loc("checked") + 1, "pass@1 [95% CI]", cells)
    return q


_PAIRED_NOTE = ("`mean_accepted_tokens` = new tokens per target forward pass, pooled (1.00 for plain decoding; Spec-Bench's "
                "mean accepted tokens); `accept_len_hist` = steps that kept i tokens (`i:steps`), summed over rows; "
                "`predicted_speedup` = the cost model's own decode-phase prediction over plain decoding, where the arm "
                "sized its drafts by it (compare with `decode_speedup`); `predicted_accepted_tokens` = its forecast of "
                "`mean_accepted_tokens`: where it holds and `predicted_speedup` does not, the cost side missed.")


def _paired_display(table: Optional[pd.DataFrame]) -> Optional[pd.DataFrame]:
    if table is None or table.empty:
        return table
    out = table.copy()
    out["speedup [95% CI]"] = [
        "–" if pd.isna(v) else f"{T.fmt_number(v)} [{T.fmt_number(lo)}, {T.fmt_number(hi)}]" if not pd.isna(lo) else T.fmt_number(v)
        for v, lo, hi in out[["speedup", "speedup_lo", "speedup_hi"]].values]
    return out.drop(columns=["speedup", "speedup_lo", "speedup_hi"])


_FRONTIER_NOTE = (
    "Every arm of each comparison job with a lossy arm, on the same problems (plot `lossy_frontier`). `family`: the rule "
    "(`autojudge`, `typical`, `topk`, `ratio`) or, for a lossless arm, a reference point (`target alone`, `exact SpS`, or its "
    "method); `knob` runs from the rule's exact end to keeping every draft token (typical ε and ratio t: 1 → 0; top-k and "
    "AutoJudge's t: 0 → up). `tokens/target call` = new tokens per target forward pass, pooled; `speedup` = paired geometric "
    "mean over prompts against the reference arm [95 % bootstrap]; `pass@1` [95 % Wilson]; `difference` = arm − reference "
    "on the problems both answered [95 % paired Newcombe interval], `mcnemar_p` exact; `vs exact SpS` = the same against the "
    "job's exact SpS arm (the rule's own loss: same drafts, same verification numerics — in bf16 exact SpS itself moves a "
    "few answers of the target alone); `accept_beyond_exact` = share of the "
    "draft tokens the exact test rejected that the rule kept (AutoJudge: mismatches its judge accepted). Read a rule as "
    "better than another when it sits to the right at the same pass@1, and a loss as real only where its interval excludes 0.")
_BEST_NOTE = (
    "Per job and budget: the fastest lossy arm (by paired speedup) whose pass@1 loss against the reference, in points "
    "(100 × (reference − arm)), has the *upper end of its 95 % paired interval* within the budget — a point estimate "
    "within budget is not enough. `resolution_pts` = the upper end an arm that agreed with the reference on every problem "
    "would get: budgets below it cannot be established with the problems measured. `problems_needed` = the fewest "
    "problems at which some lossy arm would be established within the budget if the paired shares it shows held (inf: "
    "every arm's observed loss reaches the budget). `note` says where no rule reaches a budget, which arm that projection "
    "is for, and names a faster arm whose point estimate alone is within it (not established).")


_PER_RULE_NOTE = (
    "The same test per rule: each rule's fastest knob whose pass@1 loss has the upper end of its 95 % paired interval within "
    "the budget, and the share of exact SpS's rejections it keeps there (`accept_beyond_exact`) — how far each rule gets "
    "before it costs quality (the rules at equal leniency: the next section).")


_SHARE_NOTE = (
    "The rules at equal leniency: per rule, its gentlest knob that keeps at least half of the draft tokens exact SpS "
    "rejects (`accept_beyond_exact` ≥ 0.5), its paired speedup and its pass@1 loss in points [95 % paired interval]; "
    "`established_within_pts` = the smallest budget (1 or 2 points) the interval's upper end is within; `problems_needed` "
    "= the problems that would establish it within 2 points at the paired shares observed (inf: never). The rule that "
    "loses least at that leniency comes first; a rule none of whose knobs keeps half is last.")


def _job_cells(t: pd.DataFrame) -> dict:
    """The columns that name a row's comparison job, first in every per-job verdict table."""
    return {"run_dir": t["run_dir"], "comparison": t["comparison"], "dataset": t["dataset"], "reference_arm": t["reference_arm"]}


def _share_display(table: Optional[pd.DataFrame]) -> Optional[pd.DataFrame]:
    if table is None or table.empty:
        return table
    t = table
    return pd.DataFrame({
        **_job_cells(t), "rule": t["family"], "arm": t["arm"].replace("", "–"),
        "knob": t["knob_label"].astype(object).where(t["knob_label"].notna(), "–"), "n": t["n"],
        "accept_beyond_exact": t["accept_beyond_exact"], "speedup [95% CI]": _ci(t, "speedup"),
        "loss, points [95% CI]": _ci(t, "loss_pts", signed=True), "mcnemar_p": t["mcnemar_p"],
        "established_within_pts": t["established_within_pts"], "problems_needed": t["problems_needed"],
        "note": t["note"].replace("", "–"),
    })


def _interval(v: float, lo: float, hi: float, scale: float = 1.0, signed: bool = False) -> str:
    if pd.isna(v):
        return "–"
    fmt = (lambda x: f"{x * scale:+.3g}") if signed else (lambda x: T.fmt_number(x * scale))
    return f"{fmt(v)} [{fmt(lo)}, {fmt(hi)}]" if not (pd.isna(lo) or pd.isna(hi)) else fmt(v)


def _ci(t: pd.DataFrame, column: str, **kw) -> list[str]:
    """``column`` with its ``_lo`` / ``_hi`` interval, per row (:func:`_interval`)."""
    return [_interval(*v, **kw) for v in t[[column, f"{column}_lo", f"{column}_hi"]].values]


def _frontier_display(table: Optional[pd.DataFrame]) -> Optional[pd.DataFrame]:
    if table is None or table.empty:
        return table
    t = table
    return pd.DataFrame({
        "run_dir": t["run_dir"], "comparison": t["comparison"], "dataset": t["dataset"], "hardware": t["hardware"],
        "reference_arm": t["reference_arm"], "arm": t["arm"], "family": t["family"], "knob": t["knob_label"].replace("", "–"),
        "tokens/target call": t["tokens_per_target_call"],
        "speedup [95% CI]": _ci(t, "speedup"),
        "n": t["n"],
        "pass@1 [95% CI]": [T.fmt_pass_at_1(*v) for v in t[["pass_at_1", "pass_at_1_lo", "pass_at_1_hi"]].values],
        "difference [95% CI]": _ci(t, "difference", signed=True),
        "mcnemar_p": t["mcnemar_p"],
        "vs exact SpS [95% CI]": _ci(t, "difference_vs_exact", signed=True), "mcnemar_p vs exact": t["mcnemar_p_vs_exact"],
        "accept_beyond_exact": t["accept_beyond_exact"],
    })


def _best_display(table: Optional[pd.DataFrame], per_family: bool = False) -> Optional[pd.DataFrame]:
    if table is None or table.empty:
        return table
    t = table
    return pd.DataFrame({
        **_job_cells(t), **({"rule": t["family"]} if per_family else {}),
        "budget (points)": t["budget_pts"], "n": t["n"], "best arm": t["best_arm"].replace("", "–"),
        "speedup [95% CI]": _ci(t, "speedup"),
        "loss, points [95% CI]": _ci(t, "loss_pts", signed=True),
        "mcnemar_p": t["mcnemar_p"], "accept_beyond_exact": t["accept_beyond_exact"], "resolution_pts": t["resolution_pts"],
        "problems_needed": t["problems_needed"], "note": t["note"].replace("", "–"),
    })


def _disagreements(table: Optional[pd.DataFrame]) -> Optional[pd.DataFrame]:
    if table is None or table.empty:
        return None
    return table[table["disagree"]].drop(columns=["disagree"])


def _unmatched_note(df: pd.DataFrame, sp: pd.DataFrame) -> str:
    missing = T.unmatched(df, sp)
    if not missing:
        return ""
    return (
        "No matching baseline for: " + ", ".join(f"`{m}`" for m in missing) + " — run `method=baseline` with the same "
        "model, dataset, generation settings and threads on the same hardware, or better, run them as arms of one "
        "comparison (`compare.arms`, docs/sweeps.md) to get paired speedups."
    )


def build_report(
    paths: Union[str, Path, Iterable[Union[str, Path]]],
    out_dir: Union[str, Path],
    cost_ratio: Optional[float] = None,
) -> Path:
    """Load every records.parquet under ``paths``, write ``out_dir/report.md``, its PNGs and
    ``out_dir/tables/*.csv``; return the report path."""
    out_dir = Path(out_dir)
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    df = load_records(paths)
    sp = T.speedups(df)
    tables: dict[str, Optional[pd.DataFrame]] = {
        "paired_speedup": P.paired_speedups(df),
        "paired_by_category": P.paired_speedups(df, by=["category"]),
        "paired_quality": P.paired_quality(df),
        "per_problem": P.per_problem(df),
        "runs": T.runs_table(df),
        "errors": T.errors_table(df),
        "speedup": T.speedup_summary(sp),
        "method_summary": T.method_summary(df),
        "category_summary": T.category_summary(df),
    }
    notes: dict[str, str] = {}
    try:
        pred = T.predicted_vs_measured(df, cost_ratio=cost_ratio, sp=sp)
    except T.NoData as exc:
        pred, notes["predicted"] = None, f"Skipped: {exc}."
    tables["predicted"] = pred
    try:
        tables["quality"] = T.quality_table(df)
    except T.NoData as exc:
        tables["quality"], notes["quality"] = None, f"Skipped: {exc}."
    try:
        tables["batch_crossover"] = batch_crossover(df, tables["paired_speedup"])
        tables["batch_crossover_summary"] = crossover_summary(tables["batch_crossover"])
    except T.NoData as exc:
        tables["batch_crossover"] = tables["batch_crossover_summary"] = None
        notes["batch_crossover"] = f"Skipped: {exc}."
    try:
        tables["autojudge"] = T.autojudge_table(df, sp)
    except T.NoData as exc:
        tables["autojudge"], notes["autojudge"] = None, f"Skipped: {exc}."
    try:
        tables["lossy_frontier"] = F.lossy_frontier(df, sp=tables["paired_speedup"], quality=tables["paired_quality"])
        tables["best_rule"] = F.best_rules(tables["lossy_frontier"])
        tables["best_knob_per_rule"] = F.best_rules(tables["lossy_frontier"], per_family=True)
        tables["rules_at_half"] = F.rules_at_share(tables["lossy_frontier"], share=0.5)
    except T.NoData as exc:
        tables["lossy_frontier"] = tables["best_rule"] = tables["best_knob_per_rule"] = tables["rules_at_half"] = None
        notes["lossy_frontier"] = f"Skipped: {exc}."
    for name, tab in tables.items():
        if tab is not None and not tab.empty:
            tab.to_csv(out_dir / "tables" / f"{name}.csv", index=False)

    n_err = int(df["is_error"].sum())
    lines = [
        "# spsamp report\n",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} from {df['source_file'].nunique()} records file(s): "
        f"{len(df)} rows, {int(df['ok'].sum())} ok, {n_err} errors. Tables are also in `tables/*.csv`.\n",
        "Comparison jobs are paired: each arm's speedup is the geometric mean over prompts of its tokens/s ratio to the "
        "same job's reference arm on the same prompt, turn and repeat, with a 95 % bootstrap interval (prompts "
        "resampled, seeded) and the median [IQR]; each comparison names the hardware it ran on. Rows of separate jobs "
        "are compared *unpaired*: with the baseline rows of the same target model, dataset, prompt, turn, generation "
        "settings and hardware (CPU model / GPU, threads, kernels — never the hostname); repeats are reduced to their "
        "median per prompt, then median [IQR] over prompts (prompt = prompt_id × turn). `speedup` is the tokens/s "
        "ratio (prefill included); `decode_speedup` the decode tokens/s ratio.\n",
        _section("Paired speedups (comparison jobs)", _paired_display(tables["paired_speedup"]), _PAIRED_NOTE,
                 spreads=["speedup"]),
        _section("Paired speedups per category", _paired_display(tables["paired_by_category"]), spreads=["speedup"]),
        _section("Paired answer quality", tables["paired_quality"],
                 "Per arm, over the problems both it and the reference arm answered and checked: pass@1 [95 % Wilson], "
                 "`difference` = arm − reference, `ref_only` / `arm_only` = problems only that side solved, `mcnemar_p` = "
                 "exact two-sided McNemar p-value."),
        _section("Problems where the arms' verdicts differ", _disagreements(tables["per_problem"]),
                 "Per checked problem, each arm's verdict (1 passed, 0 failed); only the problems where the arms "
                 "disagree are shown — every problem is in `tables/per_problem.csv`."),
        _section("Lossy rules: quality/speed frontier (comparison jobs)", _frontier_display(tables["lossy_frontier"]),
                 notes.get("lossy_frontier", _FRONTIER_NOTE)),
        _section("Best lossy rule at ≤ 1 and ≤ 2 points of pass@1 loss", _best_display(tables["best_rule"]),
                 notes.get("lossy_frontier", _BEST_NOTE)),
        _section("Each rule's best knob at ≤ 1 and ≤ 2 points", _best_display(tables["best_knob_per_rule"], per_family=True),
                 notes.get("lossy_frontier", _PER_RULE_NOTE)),
        _section("Every rule where it keeps half of exact SpS's rejections", _share_display(tables["rules_at_half"]),
                 notes.get("lossy_frontier", _SHARE_NOTE)),
        _section("Runs", tables["runs"]),
    ]
    if n_err:
        lines.append(_section("Errors", tables["errors"], "Failed rows are kept in the data (`is_error`) and left out of every statistic."))
    lines += [
        _section("Unpaired speedup over baseline (separate jobs)", tables["speedup"], spreads=["speedup", "decode_speedup"], note=_unmatched_note(df, sp)),
        _section("Per-method summary", tables["method_summary"], spreads=T.SUMMARY_METRICS.values(),
                 note="`mean_accepted_length` = tokens kept per target step, the target's own token included."),
        _section("Per-category summary", tables["category_summary"], spreads=T.SUMMARY_METRICS.values()),
        _section(
            "Measured vs predicted speedup", tables["predicted"],
            notes.get("predicted", "Leviathan et al. 2023: tokens/step (1−α^(k+1))/(1−α) (Eq. 1), speedup "
                      "(1−α^(k+1))/((1−α)(k·c+1)) (Thm 3.8). α = accepted/(accepted+rejections) pooled over prompts; "
                      "c = draft/target pass cost, its source in `c_source`. The model ignores prefill, so compare "
                      "`predicted_speedup` with `measured_decode_speedup`."),
        ),
        _section("Answer quality: pass@1", _quality_display(tables["quality"]), notes.get(
            "quality", "pass@1 = mean `task_correct` over checked answers, [95 % Wilson interval]; `checks` counts the verdicts "
                       "(`task_check`); `speedup` = pooled tokens/s over the baseline's; `judge_accept_rate` = share of the "
                       "mismatches greedy SpS would reject that the AutoJudge judge accepted; `rule_accept_rate` = share of the "
                       "draft tokens the exact test rejected that a lossy rule (method=lossy) kept.")),
        _section("AutoJudge: speed and quality vs threshold", tables["autojudge"], notes.get("autojudge", "")),
        _section("Speedup against batch size", tables["batch_crossover"], notes.get(
            "batch_crossover", "One comparison job per batch size: each arm's paired speedup over the reference arm "
                               "at that batch size [95 % bootstrap], the same for the decode phase alone (`decode_speedup`: "
                               "without the prefill every arm pays alike), the cost model's `predicted_speedup` where "
                               "the arm sizes itself (a decode-phase forecast: compare it with `decode_speedup`), "
                               "aggregate throughput (all new tokens / all batches' wall time) and peak memory.")),
        _section("Where speculation stops paying", tables["batch_crossover_summary"], notes.get(
            "batch_crossover", "`pays_up_to`: the largest batch size whose speedup interval lies above 1; "
                               "`stops_paying_at`: the smallest whose interval lies below 1 (empty: none measured); "
                               "`decode_pays_up_to` / `decode_stops_paying_at`: the same, judged on `decode_speedup`.")),
        "## Plots\n",
    ]
    for name, fn in PLOTS.items():
        ctx = {"sp": sp, "pred": pred, "quality": tables["quality"], "frontier": tables["lossy_frontier"],
               "crossover": tables["batch_crossover"]}  # reuse what the tables computed
        kwargs = {k: v for k, v in ctx.items() if v is not None and k in inspect.signature(fn).parameters}
        try:
            fig = fn(df, **kwargs)
        except T.NoData as exc:
            lines.append(f"- `{name}`: skipped — {exc}.\n")
            continue
        png = out_dir / f"{name}.png"
        fig.savefig(png)
        lines.append(f"### {name}\n\n![{name}]({png.name})\n")
    report = out_dir / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    log.info("report written to %s", report)
    return report
