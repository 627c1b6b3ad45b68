"""Lossy rules on one quality/speed frontier: every arm of a comparison job (spsamp/comparison.py)
placed by its paired speed and its paired pass@1, and, per job, the fastest lossy rule whose loss of
pass@1 against the reference arm is *established* to stay within a budget.

- :func:`lossy_frontier`: per comparison and arm, the rule family (``autojudge``, ``typical``,
  ``topk``, ``ratio`` for the lossy methods; ``target alone``, ``exact SpS`` or the method's name
  for the lossless references), its knob, tokens per target call, the paired speedup over the
  reference arm with its bootstrap interval (:func:`spsamp.analysis.paired.paired_speedups`),
  pass@1 with its Wilson interval, the paired difference to the reference with its Newcombe
  interval and the exact McNemar p-value (:func:`spsamp.analysis.paired.paired_quality`), the same
  against the job's exact SpS arm for each lossy arm (``difference_vs_exact``: the rule's own loss,
  same drafts and numerics), the discordant counts against the reference (``ref_only``,
  ``arm_only``) and the share of the exact test's rejections the rule kept (``accept_beyond_exact``).
- :func:`best_rules`: per comparison and budget (1 and 2 points of pass@1 by default), the fastest
  lossy arm (by paired speedup) whose loss ``reference − arm`` has the *upper end of its 95 % paired
  interval* at most the budget. A point estimate within budget is not enough: with few problems a
  rule that loses 5 points can show a loss of 0. Where no arm qualifies the row says so, and names
  the fastest arm whose point estimate alone is within budget, marked as not established. With
  ``per_family``, the same per rule: each rule's fastest knob within the budget.
- :func:`rules_at_share`: the rules compared at equal leniency: per comparison and rule, its
  gentlest knob that keeps at least a given share of the exact test's rejections (half by default),
  with its loss and the budgets that loss is established within, the rule losing least first.
- Both say how many problems would establish a budget if the paired shares observed held
  (``problems_needed``): whether measuring more can settle it, and at what cost.

Lossiness comes from the records: the decoders with ``lossless = False`` are ``lossy`` and
``autojudge`` (:data:`LOSSY_METHODS`; analysis reads records, never decoder code), and a row that
carries a lossy rule's counts (``rule_accepted`` or ``judge_accepted`` in ``metrics_json``) counts
as lossy whatever its method's name.
"""

from __future__ import annotations

import json
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from spsamp.analysis import paired as P
from spsamp.analysis.load import METRIC_PREFIX, expand_metrics
from spsamp.analysis.tables import NoData
from spsamp.records.schema import PARAM_PREFIX
from spsamp.records.summary import correct_values, wilson_interval

LOSSY_METHODS = ("lossy", "autojudge")  # the decoders whose ``lossless`` is False
REFERENCE_FAMILIES = {"baseline": "target alone", "speculative": "exact SpS"}
# per lossy family: (its knob's parameters and how each is written, the first one a row sets is its
# knob; +1 when a larger knob keeps more draft tokens, -1 when a smaller one does) — the knob runs from
# exact SpS to keeping every token
KNOBS = {
    # AutoJudge: the judge's validation quantile (the share of mismatches it accepts), else t: 0 exact greedy ... 1 every mismatch
    "autojudge": ((("threshold_quantile", "q={}"), ("threshold", "t={}")), +1),
    "typical": ((("threshold", "ε={}"),), -1),  # eps: 1 exact ... 0 every token
    "topk": ((("top_k", "k={}"),), +1),  # 0 exact ... V every token
    "ratio": ((("threshold", "t={}"),), -1),  # q >= t p: 1 exact ... 0 every token
}
# pooled share of the exact test's rejections a rule kept: {family kind: (kept count, asked count)}
BEYOND_EXACT = {"rule": ("rule_accepted", "rule_exact_rejections"), "judge": ("judge_accepted", "mismatches_judged")}
BUDGETS = (1.0, 2.0)  # points of pass@1 (100 x the fraction)
FAMILY_ORDER = ["target alone", "exact SpS", "autojudge", "typical", "topk", "ratio"]

FRONTIER_COLUMNS = [
    "run_dir", "comparison", "dataset", "arm", "config", "family", "lossless", "knob_name", "knob", "knob_label",
    "reference_arm", "hardware", "n_prompts", "tokens_per_target_call", "speedup", "speedup_lo", "speedup_hi",
    "n", "pass_at_1", "pass_at_1_lo", "pass_at_1_hi", "difference", "difference_lo", "difference_hi", "ref_only", "arm_only",
    "mcnemar_p", "exact_arm", "difference_vs_exact", "difference_vs_exact_lo", "difference_vs_exact_hi", "mcnemar_p_vs_exact",
    "accept_beyond_exact",
]


def _param(row: pd.Series, name: str) -> object:
    """A method parameter of a row: its ``param_<name>`` column, else its ``method_params`` JSON."""
    v = row.get(PARAM_PREFIX + name)
    if v is not None and not (isinstance(v, float) and np.isnan(v)):
        return v
    try:
        params = json.loads(row.get("method_params") or "{}")
    except (TypeError, json.JSONDecodeError):
        return None
    return params.get(name) if isinstance(params, dict) else None


def _is_set(v: object) -> bool:
    return v is not None and not (isinstance(v, float) and np.isnan(v))


def rule_family(row: pd.Series) -> tuple[str, bool]:
    """(family, lossless) of a record row: ``autojudge``, ``typical`` / ``topk`` / ``ratio`` (the
    lossy decoder's ``rule``), ``target alone`` (baseline), ``exact SpS`` (speculative), else the
    method's name; lossless unless the method is in :data:`LOSSY_METHODS` or the row carries a lossy
    rule's counts."""
    method = str(row.get("method"))
    rule = _param(row, "rule")
    counts = any(_is_set(row.get(METRIC_PREFIX + kept)) for kept, _ in BEYOND_EXACT.values())
    if method == "autojudge":
        return "autojudge", False
    if method in LOSSY_METHODS or counts:
        return (str(rule) if _is_set(rule) else method), False
    return REFERENCE_FAMILIES.get(method, method), True


def _knob(family: str, row: pd.Series) -> tuple[Optional[str], float, str]:
    if family not in KNOBS:
        return None, np.nan, ""
    knobs, _ = KNOBS[family]
    name, fmt = next(((n, f) for n, f in knobs if _is_set(_param(row, n))), knobs[-1])
    v = pd.to_numeric(pd.Series([_param(row, name)]), errors="coerce").iloc[0]
    return name, float(v), fmt.format(f"{v:g}") if np.isfinite(v) else ""


def _arm_facts(df: pd.DataFrame) -> pd.DataFrame:
    """Per comparison arm: dataset, family, knob, the reference arm's own pass@1 and the pooled
    share of exact rejections kept."""
    rows = P._comparison_rows(df)
    out = []
    for key, g in rows.groupby(P.ARM_KEYS, dropna=False, sort=False):
        first = g.iloc[0]
        family, lossless = rule_family(first)
        knob_name, knob, label = _knob(family, first)
        ok = g[g["status"] == "ok"]
        rate = np.nan
        kind = "judge" if family == "autojudge" else "rule"
        kept, asked = (METRIC_PREFIX + c for c in BEYOND_EXACT[kind])
        if not lossless and kept in ok.columns and asked in ok.columns:
            k, a = pd.to_numeric(ok[kept], errors="coerce").sum(), pd.to_numeric(ok[asked], errors="coerce").sum()
            rate = k / a if a > 0 else np.nan
        correct = correct_values(ok["task_correct"]).dropna()
        lo, hi = wilson_interval(correct.sum(), len(correct))
        out.append({**dict(zip(P.ARM_KEYS, key)), "dataset": first.get("dataset"), "family": family, "lossless": lossless,
                    "knob_name": knob_name, "knob": knob, "knob_label": label, "accept_beyond_exact": rate,
                    "_own_n": len(correct), "_own_pass": correct.mean() if len(correct) else np.nan, "_own_lo": lo, "_own_hi": hi})
    return pd.DataFrame(out)


def _versus_exact(df: pd.DataFrame, facts: pd.DataFrame) -> pd.DataFrame:
    """Per lossy arm, its paired pass@1 difference to its job's exact SpS arm (``exact_arm``: the one
    arm of family ``exact SpS``; none where a job has no such arm or several): the loss the rule
    itself causes, on the same drafts and the same verification numerics — in bf16 a k-token pass
    rounds otherwise than the target alone's 1-token passes, which moves a few answers of exact SpS too."""
    cols = P.ARM_KEYS + ["exact_arm", "difference_vs_exact", "difference_vs_exact_lo", "difference_vs_exact_hi", "mcnemar_p_vs_exact"]
    exact = facts[facts["family"] == REFERENCE_FAMILIES["speculative"]].groupby(P.JOB_KEYS, dropna=False)["arm"].agg(list)
    exact = exact[exact.map(len) == 1].map(lambda arms: arms[0])
    rows = P._comparison_rows(df)
    if exact.empty or rows.empty:
        return pd.DataFrame(columns=cols)
    job = pd.MultiIndex.from_frame(rows[P.JOB_KEYS])
    ref = pd.Series(job.map(lambda k: exact.get(k)), index=rows.index)
    lossy = pd.MultiIndex.from_frame(facts.loc[~facts["lossless"], P.ARM_KEYS])
    keep = ref.notna() & (rows["arm"].eq(ref) | pd.MultiIndex.from_frame(rows[P.ARM_KEYS]).isin(lossy))
    q = P.paired_quality(rows[keep].assign(reference_arm=ref[keep]))
    if q.empty:
        return pd.DataFrame(columns=cols)
    q = q.rename(columns={"reference_arm": "exact_arm", "difference": "difference_vs_exact", "difference_lo": "difference_vs_exact_lo",
                          "difference_hi": "difference_vs_exact_hi", "mcnemar_p": "mcnemar_p_vs_exact"})
    return q[cols]


def lossy_frontier(df: pd.DataFrame, sp: Optional[pd.DataFrame] = None, quality: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Every arm of every comparison job that has a lossy arm, on the frontier's axes (module doc):
    one row per (run_dir, comparison, arm), ordered by family and along each knob from its exact end
    to its accept-everything end. The reference arm's speedup is 1 (by definition, no interval) and its
    pass@1 is over its own checked answers; every other arm's pass@1 is over the problems both it
    and the reference answered. Raises :class:`NoData` without a lossy arm in a comparison job."""
    if "metrics_json" in df.columns and not any(c.startswith(METRIC_PREFIX) for c in df.columns):
        df = expand_metrics(df)  # frames built without load_records
    facts = _arm_facts(df)
    if facts.empty or facts["lossless"].all():
        raise NoData("no lossy arm (method=lossy or autojudge) in a comparison job")
    sp = P.paired_speedups(df) if sp is None else sp
    quality = P.paired_quality(df) if quality is None else quality
    out = facts.merge(sp[P.ARM_KEYS + ["reference_arm", "config", "hardware", "n_prompts", "mean_accepted_tokens", "speedup",
                                       "speedup_lo", "speedup_hi"]], on=P.ARM_KEYS, how="left")
    qcols = ["n", "pass_at_1", "pass_at_1_lo", "pass_at_1_hi", "difference", "difference_lo", "difference_hi", "ref_only", "arm_only",
             "mcnemar_p"]
    if quality.empty:
        quality = pd.DataFrame(columns=P.ARM_KEYS + qcols)
    out = out.merge(quality[P.ARM_KEYS + qcols], on=P.ARM_KEYS, how="left")
    out = out.merge(_versus_exact(df, facts), on=P.ARM_KEYS, how="left")
    out = out.rename(columns={"mean_accepted_tokens": "tokens_per_target_call"})
    is_ref = out["arm"] == out["reference_arm"]
    out.loc[is_ref, "speedup"] = 1.0
    for col, own in (("n", "_own_n"), ("pass_at_1", "_own_pass"), ("pass_at_1_lo", "_own_lo"), ("pass_at_1_hi", "_own_hi")):
        out[col] = out[col].astype(float).where(~is_ref, out[own])
    # only the jobs with a lossy arm: a plain speed comparison has no frontier
    lossy_jobs = out.groupby(P.JOB_KEYS, dropna=False)["lossless"].transform(lambda s: not s.all())
    out = out[lossy_jobs]
    order = {f: i for i, f in enumerate(FAMILY_ORDER)}
    direction = out["family"].map(lambda f: KNOBS[f][1] if f in KNOBS else 1)
    out = out.assign(_f=out["family"].map(lambda f: order.get(f, len(order))), _k=out["knob"] * direction)
    out = out.sort_values(P.JOB_KEYS + ["_f", "family", "_k", "arm"], na_position="first", kind="stable")
    return out[FRONTIER_COLUMNS].reset_index(drop=True)


def _pts(v: float) -> float:
    return 100.0 * v


def best_rules(frontier: pd.DataFrame, budgets: Sequence[float] = BUDGETS, per_family: bool = False) -> pd.DataFrame:
    """Per comparison job and budget (points of pass@1): the fastest lossy arm (by paired speedup)
    whose loss ``reference − arm`` has its 95 % paired interval's upper end (Newcombe,
    :func:`spsamp.analysis.paired.newcombe_paired_interval`) at most the budget. ``per_family``: the
    fastest knob of each rule instead (how far each rule gets within the budget: e.g. whether
    AutoJudge's judge keeps half of exact SpS's rejections there).

    Columns: ``budget_pts``; ``n`` (problems paired); ``best_arm`` (empty where none qualifies) with
    its family, knob, speedup [interval], loss [interval] in points (``loss_pts`` =
    −100 × difference), McNemar p and ``accept_beyond_exact``; ``resolution_pts``, the loss upper end
    an arm that agreed with the reference on every one of the ``n`` problems would get (a budget
    below it cannot be established with these problems); ``problems_needed`` and
    ``problems_needed_arm``, the fewest problems at which some lossy arm would be established within
    the budget if the shares it shows held (:func:`spsamp.analysis.paired.problems_needed`: ``inf``
    where every arm's observed loss is at or over it), the arm that needs the fewest; ``note``, which
    says "no rule reaches it with the N problems measured" where none qualifies, with that
    projection, and names the fastest arm faster than the pick whose point estimate alone is within
    the budget (not established)."""
    rows = []
    for key, g in frontier.groupby(P.JOB_KEYS, dropna=False, sort=False):
        lossy = _loss_points(g[~g["lossless"] & g["difference"].notna() & g["speedup"].notna()])
        n, resolution = 0, np.nan
        if len(lossy):
            widest = lossy.loc[lossy["n"].idxmax()]
            n = int(widest["n"])
            passed = int(round((widest["pass_at_1"] - widest["difference"]) * n))  # the reference's, on these pairs
            resolution = -_pts(P.newcombe_paired_interval(passed, 0, 0, n - passed)[0])
        base = {**dict(zip(P.JOB_KEYS, key)), "dataset": g["dataset"].iloc[0], "reference_arm": g["reference_arm"].iloc[0],
                "n": n, "resolution_pts": resolution}
        groups = [(f, part) for f, part in lossy.groupby("family", sort=False)] if per_family else [("", lossy)]
        for family, part in groups:
            for budget in budgets:
                rows.append({**base, "budget_pts": budget, **_best_within(part, budget, n, family)})
    cols = P.JOB_KEYS + ["dataset", "reference_arm", "budget_pts", "n", "best_arm", "family", "knob_label", "speedup",
                         "speedup_lo", "speedup_hi", "loss_pts", "loss_pts_lo", "loss_pts_hi", "mcnemar_p", "accept_beyond_exact",
                         "resolution_pts", "problems_needed", "problems_needed_arm", "note"]
    return pd.DataFrame(rows, columns=cols)


def _best_within(lossy: pd.DataFrame, budget: float, n: int, family: str) -> dict:
    """The fastest of ``lossy`` (arms with their loss in points) established within ``budget``, and
    the note (module doc); ``family``: the rule they all belong to, or "" for every rule."""
    ok = lossy[lossy["loss_pts_hi"] <= budget + 1e-9].sort_values("speedup", ascending=False)
    point = lossy[lossy["loss_pts"] <= budget + 1e-9].sort_values("speedup", ascending=False)
    best = ok.iloc[0] if len(ok) else None
    faster = point[point["speedup"] > (best["speedup"] if best is not None else -np.inf)]
    what = f"no knob of {family} reaches it" if family else "no rule reaches it"
    note = "" if best is not None else f"{what} with the {n} problems measured"
    needed = lossy.assign(_needed=[_needed(r, budget) for _, r in lossy.iterrows()]).sort_values(
        ["_needed", "speedup"], ascending=[True, False], kind="stable")
    soonest = needed.iloc[0] if len(needed) and needed["_needed"].notna().any() else None
    if best is None and soonest is not None:
        note += (f"; at the rates observed, {soonest['arm']} would be established within it at about {int(soonest['_needed'])} problems"
                 if np.isfinite(soonest["_needed"]) else "; no arm's observed loss is within it, so more problems alone will not establish it")
    if len(faster):
        f = faster.iloc[0]
        which = "a faster arm" if best is not None else "the fastest arm"
        note += ("; " if note else "") + (f"{which} within it by its point estimate alone (not established): {f['arm']} "
                                          f"({f['speedup']:.3g}×, loss {f['loss_pts'] + 0.0:.1f} [{f['loss_pts_lo'] + 0.0:.1f}, "
                                          f"{f['loss_pts_hi'] + 0.0:.1f}] points)")
    if best is None and not len(lossy):
        note = "no lossy arm with checked answers paired with the reference"
    pick = {c: (best[c] if best is not None else (np.nan if c != "arm" else "")) for c in
            ("arm", "knob_label", "speedup", "speedup_lo", "speedup_hi", "loss_pts", "loss_pts_lo", "loss_pts_hi", "mcnemar_p",
             "accept_beyond_exact")}
    return {"best_arm": pick.pop("arm"), "family": best["family"] if best is not None else family, **pick,
            "problems_needed": soonest["_needed"] if soonest is not None else np.nan,
            "problems_needed_arm": soonest["arm"] if soonest is not None else "", "note": note}


def _needed(r: pd.Series, budget: float) -> float:
    """:func:`spsamp.analysis.paired.problems_needed` for a frontier row's paired counts and a budget in points."""
    if pd.isna(r["n"]) or pd.isna(r["ref_only"]) or pd.isna(r["arm_only"]) or not r["n"]:
        return np.nan
    n, arm_only, ref_only = int(r["n"]), int(r["arm_only"]), int(r["ref_only"])
    both = int(round(r["pass_at_1"] * n)) - arm_only
    return P.problems_needed(both, arm_only, ref_only, n - both - arm_only - ref_only, budget / 100.0)


def _loss_points(lossy: pd.DataFrame) -> pd.DataFrame:
    """``lossy`` with its loss against the reference in points (``loss_pts`` = −100 × difference)."""
    return lossy.assign(loss_pts=-_pts(lossy["difference"]) + 0.0,  # + 0.0: no "-0.0"
                        loss_pts_lo=-_pts(lossy["difference_hi"]) + 0.0, loss_pts_hi=-_pts(lossy["difference_lo"]) + 0.0)


def _share_note(r: pd.Series, budget: float) -> str:
    if r["loss_pts_lo"] > budget:
        return f"it loses more than {budget:g} points (established: the interval's lower end is {r['loss_pts_lo']:.1f})"
    return f"its loss is not established within {budget:g} points with {int(r['n'])} problems"


SHARE_COLUMNS = P.JOB_KEYS + ["dataset", "reference_arm", "share", "family", "arm", "knob_label", "n", "accept_beyond_exact",
                              "speedup", "speedup_lo", "speedup_hi", "loss_pts", "loss_pts_lo", "loss_pts_hi", "mcnemar_p",
                              "established_within_pts", "problems_needed", "note"]


def rules_at_share(frontier: pd.DataFrame, share: float = 0.5, budgets: Sequence[float] = BUDGETS) -> pd.DataFrame:
    """Every rule at equal leniency: per comparison job and lossy rule, the knob with the smallest
    ``accept_beyond_exact`` that is at least ``share`` (the gentlest knob keeping that share of the
    draft tokens exact SpS rejects), its paired speedup and its loss in points with its interval.
    ``established_within_pts``: the smallest of ``budgets`` the loss interval's upper end is within
    (NaN: none; the note then says whether a loss beyond the largest budget is established);
    ``problems_needed``: the problems that would establish it within the largest budget at the
    shares observed (:func:`spsamp.analysis.paired.problems_needed`). Rows
    run from the rule whose loss has the lowest upper end (the one to prefer at that leniency); a
    rule none of whose knobs keeps ``share`` is last, its note naming the most its knobs keep."""
    jobs = []
    for key, g in frontier.groupby(P.JOB_KEYS, dropna=False, sort=False):
        rows = []
        lossy = _loss_points(g[~g["lossless"] & g["difference"].notna()])
        base = {**dict(zip(P.JOB_KEYS, key)), "dataset": g["dataset"].iloc[0], "reference_arm": g["reference_arm"].iloc[0],
                "share": share}
        for family, part in lossy.groupby("family", sort=False):
            enough = part[part["accept_beyond_exact"] >= share - 1e-12].sort_values("accept_beyond_exact", kind="stable")
            if enough.empty:
                most = part.loc[part["accept_beyond_exact"].idxmax()] if part["accept_beyond_exact"].notna().any() else None
                note = f"no knob of {family} keeps {share:.0%} of exact SpS's rejections" + (
                    f" (the most: {most['arm']}, {most['accept_beyond_exact']:.2f})" if most is not None else "")
                rows.append({**base, "family": family, "arm": "", "note": note})
                continue
            r = enough.iloc[0]
            within = [b for b in sorted(budgets) if r["loss_pts_hi"] <= b + 1e-9]
            rows.append({**base, **{c: r[c] for c in SHARE_COLUMNS if c in r.index and c not in base},
                         "established_within_pts": within[0] if within else np.nan, "problems_needed": _needed(r, max(budgets)),
                         "note": "" if within else _share_note(r, max(budgets))})
        job = pd.DataFrame(rows, columns=SHARE_COLUMNS)
        jobs.append(job.assign(_none=job["arm"].eq("")).sort_values(["_none", "loss_pts_hi", "speedup"],
                                                                    ascending=[True, True, False], kind="stable"))
    if not jobs:
        return pd.DataFrame(columns=SHARE_COLUMNS)
    return pd.concat(jobs).drop(columns="_none").reset_index(drop=True)
