"""The lossy frontier (spsamp/analysis/frontier.py): every arm of a comparison placed by its paired
speed and paired pass@1, the best rule at 1 and 2 points of loss judged by the upper end of the
paired interval (not the point estimate), the plot with several rule families and one or two
datasets, the report's tables; and one real comparison of the tiny model on arithmetic through
run.py and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spsamp.analysis import frontier as F
from spsamp.analysis import paired as P
from spsamp.analysis.tables import NoData
from spsamp.records.schema import CORE_NAMES, schema_for

_n = iter(range(1_000_000))

# arm: (method, params, problems lost of the reference's, problems gained, paired speedup, beyond-exact counts)
ARMS = {
    "base": ("baseline", {}, 0, 0, 1.0, None),
    "sps": ("speculative", {"k": 4}, 0, 0, 2.0, None),
    "typical_30": ("lossy", {"k": 4, "rule": "typical", "threshold": 0.3, "top_k": 2}, 1, 0, 2.3, (1, 10)),
    "typical_09": ("lossy", {"k": 4, "rule": "typical", "threshold": 0.09, "top_k": 2}, 0, 0, 2.1, (2, 10)),
    "topk_2": ("lossy", {"k": 4, "rule": "topk", "threshold": 0.09, "top_k": 2}, 3, 0, 2.6, (3, 10)),
    "topk_5": ("lossy", {"k": 4, "rule": "topk", "threshold": 0.09, "top_k": 5}, 10, 0, 3.5, (6, 10)),
    "ratio_10": ("lossy", {"k": 4, "rule": "ratio", "threshold": 0.1, "top_k": 2}, 6, 0, 3.0, (5, 10)),
    "aj_05": ("autojudge", {"k": 4, "threshold": 0.5}, 2, 0, 1.8, (4, 8)),
}


def rec(arm: str, prompt: int, correct: bool, tps: float, *, job: str, dataset: str) -> dict:
    method, params, *_, counts = ARMS[arm]
    r = {name: None for name in CORE_NAMES}
    kept, asked = ("judge_accepted", "mismatches_judged") if method == "autojudge" else ("rule_accepted", "rule_exact_rejections")
    r.update({
        "run_id": "r", "resume_key": f"k{next(_n)}", "status": "ok", "method": method,
        "method_params": json.dumps({"name": method, **params}, sort_keys=True),
        "model_preset": "tiny", "model": "T", "target_dtype": "float32", "device": "cpu", "dataset": dataset,
        "prompt_id": f"p{prompt}", "category": "math", "turn": 1, "repeat": 0, "max_new_tokens": 16, "temperature": 0.0,
        "top_p": 1.0, "top_k": 0, "seed": 0, "use_chat_template": True, "hostname": "h1", "cpu_model": "cpu-A", "num_threads": 4,
        "cpu_linear": "aten", "run_dir": job, "comparison": job, "arm": arm, "reference_arm": "base",
        "tokens_per_sec": tps, "decode_tokens_per_sec": tps, "new_tokens": 12, "wall_time_s": 12 / tps, "decode_s": 1.0,
        "target_calls": 12 if method == "baseline" else 4, "steps": 11 if method == "baseline" else 3, "generated_ids": [1, 2],
        "task_correct": correct, "task_check": "passed" if correct else "failed",
        "metrics_json": json.dumps({kept: counts[0], asked: counts[1]}) if counts else None,
        **{f"param_{k}": v for k, v in params.items()},
    })
    return r


def job_rows(job: str = "job0", dataset: str = "arithmetic", n: int = 400, passed: int = 300, arms=tuple(ARMS)) -> list[dict]:
    """``n`` problems, the reference passing the first ``passed``; an arm loses its first ``lost`` of those
    and gains its first ``gained`` of the others; its tokens/s ratio varies by ±5 % around its speedup."""
    rows = []
    for i in range(n):
        base_tps = 10.0 + i % 7
        for arm in arms:
            _, _, lost, gained, speedup, _ = ARMS[arm]
            ref_ok = i < passed
            ok = (ref_ok and i >= lost) or (not ref_ok and i - passed < gained)
            wobble = 1.0 if arm == "base" else 1 + 0.05 * ((i % 5) - 2) / 2
            rows.append(rec(arm, i, ok, base_tps * speedup * wobble, job=job, dataset=dataset))
    return rows


def _one(df: pd.DataFrame, **where) -> pd.Series:
    sel = df
    for k, v in where.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, (where, len(sel))
    return sel.iloc[0]


@pytest.fixture(scope="module")
def frontier() -> pd.DataFrame:
    return F.lossy_frontier(pd.DataFrame(job_rows()))


# ---- the paired interval -------------------------------------------------------------------------


def test_newcombe_paired_interval_matches_the_published_value_and_never_collapses():
    # Cavo et al. 2012 as in Fagerland, Lydersen & Laake (2017), ch. 8: estimate -0.0621, 95 % CI -0.1186 to -0.0046
    lo, hi = P.newcombe_paired_interval(59, 6, 16, 80)
    assert (lo, hi) == (pytest.approx(-0.1186, abs=1e-4), pytest.approx(-0.0046, abs=1e-4))
    assert P.newcombe_paired_interval(59, 16, 6, 80) == (pytest.approx(-hi), pytest.approx(-lo))  # sides swapped
    # no discordant problem: the interval is not [0, 0], and it narrows as problems are added
    small, large = P.newcombe_paired_interval(60, 0, 0, 22), P.newcombe_paired_interval(300, 0, 0, 100)
    assert small[0] < -0.02 and small[1] > 0.02 and 0 < large[1] < small[1] / 2
    assert all(np.isnan(P.newcombe_paired_interval(0, 0, 0, 0)))


def _loss_hi(both, arm_only, ref_only, neither, size):
    n = both + arm_only + ref_only + neither
    return -P.newcombe_paired_interval(*(v * size / n for v in (both, arm_only, ref_only, neither)))[0]


@pytest.mark.parametrize("counts", [(70, 4, 4, 20), (60, 12, 12, 14), (80, 0, 0, 18), (70, 5, 3, 20), (30, 2, 1, 7)])
def test_problems_needed_is_the_first_size_whose_projected_interval_is_within_the_budget(counts):
    """At the shares observed, the projected size is the first whose loss upper end is within the
    budget; a looser budget or fewer discordant problems need fewer, and an observed loss at or over
    the budget is never established."""
    for budget in (0.01, 0.02, 0.05):
        size = P.problems_needed(*counts, budget)
        assert np.isfinite(size) and size == int(size)
        assert _loss_hi(*counts, size) <= budget + 1e-12 < _loss_hi(*counts, size - 1)
    assert P.problems_needed(*counts, 0.05) <= P.problems_needed(*counts, 0.02) <= P.problems_needed(*counts, 0.01)
    both, arm_only, ref_only, neither = counts
    if arm_only and ref_only:  # the same loss with one discordant pair fewer each way needs fewer problems
        assert P.problems_needed(both + 1, arm_only - 1, ref_only - 1, neither + 1, 0.02) < P.problems_needed(*counts, 0.02)


def test_problems_needed_is_infinite_where_the_observed_loss_reaches_the_budget_and_nan_without_problems():
    assert P.problems_needed(59, 6, 16, 80, 0.05) == np.inf  # loses 6.2 points
    assert np.isfinite(P.problems_needed(59, 6, 16, 80, 0.07))
    assert P.problems_needed(70, 0, 2, 28, 0.02) == np.inf  # exactly at the budget
    assert P.problems_needed(80, 1, 2, 17, 0.02, cap=1000) == np.inf  # beyond the cap
    assert np.isnan(P.problems_needed(0, 0, 0, 0, 0.02))
    # the same four shares at twice the problems: the same projection, up to rounding of the bisection
    assert abs(P.problems_needed(140, 8, 8, 40, 0.02) - P.problems_needed(70, 4, 4, 20, 0.02)) <= 1


def test_paired_quality_carries_the_difference_interval():
    q = _one(P.paired_quality(pd.DataFrame(job_rows(n=40, passed=30, arms=("base", "topk_5")))), arm="topk_5")
    assert q.difference == pytest.approx(-10 / 40)
    assert (q.difference_lo, q.difference_hi) == tuple(pytest.approx(v) for v in P.newcombe_paired_interval(20, 0, 10, 10))
    assert q.difference_lo < q.difference < q.difference_hi < 0


# ---- the frontier table --------------------------------------------------------------------------


def test_frontier_names_every_arm_by_family_and_knob_on_the_paired_axes(frontier):
    assert list(frontier.arm) == ["base", "sps", "aj_05", "typical_30", "typical_09", "topk_2", "topk_5", "ratio_10"]  # exact end first
    assert dict(zip(frontier.arm, frontier.family)) == {
        "base": "target alone", "sps": "exact SpS", "aj_05": "autojudge", "typical_30": "typical", "typical_09": "typical",
        "topk_2": "topk", "topk_5": "topk", "ratio_10": "ratio"}
    assert list(frontier.lossless) == [True, True] + [False] * 6
    t9, k5, base = _one(frontier, arm="typical_09"), _one(frontier, arm="topk_5"), _one(frontier, arm="base")
    assert (t9.knob_name, t9.knob, t9.knob_label) == ("threshold", 0.09, "ε=0.09") and (k5.knob, k5.knob_label) == (5, "k=5")
    assert _one(frontier, arm="aj_05").knob_label == "t=0.5" and np.isnan(base.knob)
    # AutoJudge by the share of its validation mismatches it accepts: the quantile is the knob
    rows = [{**r, "method_params": json.dumps({"name": "autojudge", "k": 4, "threshold": 0.5, "threshold_quantile": 0.75}),
             "param_threshold_quantile": 0.75} if r["arm"] == "aj_05" else r for r in job_rows(n=20, passed=15)]
    aj = _one(F.lossy_frontier(pd.DataFrame(rows)), arm="aj_05")
    assert (aj.knob_name, aj.knob, aj.knob_label) == ("threshold_quantile", 0.75, "q=0.75")
    assert t9.speedup == pytest.approx(2.1, rel=0.01) and t9.speedup_lo < t9.speedup < t9.speedup_hi
    assert base.speedup == 1.0 and np.isnan(base.speedup_lo)  # the reference, by definition
    assert t9.tokens_per_target_call == 3.0 and base.tokens_per_target_call == 1.0
    assert base.pass_at_1 == 0.75 and base.n == 400 and base.pass_at_1_lo < 0.75 < base.pass_at_1_hi
    assert k5.pass_at_1 == pytest.approx(290 / 400) and k5.difference == pytest.approx(-10 / 400)
    assert k5.mcnemar_p == pytest.approx(P.mcnemar_exact(10, 0)) and k5.difference_hi < 0
    assert k5.accept_beyond_exact == pytest.approx(0.6) and _one(frontier, arm="aj_05").accept_beyond_exact == pytest.approx(0.5)
    assert np.isnan(_one(frontier, arm="sps").accept_beyond_exact)


def test_each_lossy_arm_is_also_paired_with_exact_sps(frontier, monkeypatch):
    """The rule's own loss: against exact SpS, which shares its drafts and verification numerics."""
    assert (frontier[~frontier.lossless].exact_arm == "sps").all() and frontier[frontier.lossless].exact_arm.isna().all()
    k2 = _one(frontier, arm="topk_2")  # SpS agrees with the target everywhere here: the same difference
    assert k2.difference_vs_exact == pytest.approx(k2.difference) and k2.mcnemar_p_vs_exact == pytest.approx(k2.mcnemar_p)
    # exact SpS itself loses 2 problems to near-tie rounding: topk_2 (losing 3 of the target's) loses 1 of SpS's
    monkeypatch.setitem(ARMS, "sps", ("speculative", {"k": 4}, 2, 0, 2.0, None))
    k2 = _one(F.lossy_frontier(pd.DataFrame(job_rows())), arm="topk_2")
    assert k2.difference == pytest.approx(-3 / 400) and k2.difference_vs_exact == pytest.approx(-1 / 400)
    assert (k2.difference_vs_exact_lo, k2.difference_vs_exact_hi) == tuple(
        pytest.approx(v) for v in P.newcombe_paired_interval(297, 0, 1, 102))
    assert k2.mcnemar_p_vs_exact == pytest.approx(P.mcnemar_exact(1, 0))
    # no exact SpS arm, or two: nothing to pair with
    none = F.lossy_frontier(pd.DataFrame(job_rows(n=20, passed=15, arms=("base", "topk_2"))))
    assert none.exact_arm.isna().all() and none.difference_vs_exact.isna().all()
    monkeypatch.setitem(ARMS, "sps_k8", ("speculative", {"k": 8}, 0, 0, 2.2, None))
    two = F.lossy_frontier(pd.DataFrame(job_rows(n=20, passed=15, arms=("base", "sps", "sps_k8", "topk_2"))))
    assert two.exact_arm.isna().all() and two.difference_vs_exact.isna().all()


def test_rule_family_reads_the_records_not_the_decoders():
    row = pd.Series({"method": "lossy", "method_params": json.dumps({"rule": "ratio"})})
    assert F.rule_family(row) == ("ratio", False)  # from method_params where no param_rule column
    assert F.rule_family(pd.Series({"method": "specexec", "method_params": "{}"})) == ("specexec", True)
    assert F.rule_family(pd.Series({"method": "baseline"})) == ("target alone", True)
    # a method this module has never heard of that records a rule's counts is lossy
    assert F.rule_family(pd.Series({"method": "fly", "metric_rule_accepted": 3})) == ("fly", False)


def test_no_frontier_without_a_lossy_arm():
    with pytest.raises(NoData, match="no lossy arm"):
        F.lossy_frontier(pd.DataFrame(job_rows(n=10, passed=5, arms=("base", "sps"))))
    # a plain speed comparison beside a lossy one stays out of the frontier
    rows = job_rows(n=20, passed=10) + job_rows("speed_only", n=20, passed=10, arms=("base", "sps"))
    assert set(F.lossy_frontier(pd.DataFrame(rows)).comparison) == {"job0"}


# ---- the best rule at a budget -------------------------------------------------------------------


def test_best_rule_is_the_fastest_whose_paired_interval_stays_within_the_budget(frontier):
    best = F.best_rules(frontier).set_index("budget_pts")
    # <= 1 point: typical_30 (0.25 [-0.6, 1.1]) and topk_2 (0.75 [-0.3, 1.9]) are faster and within it by their point
    # estimate, but their intervals are not; typical_09 (no loss, [-0.7, 0.7]) is the fastest that is established
    one = best.loc[1.0]
    assert one.best_arm == "typical_09" and one.family == "typical" and one.knob_label == "ε=0.09"
    assert one.loss_pts == 0 and one.loss_pts_hi < 1 and one.speedup_lo < one.speedup < one.speedup_hi
    assert "a faster arm within it by its point estimate alone (not established): topk_2" in one.note
    assert "no rule reaches" not in one.note
    # <= 2 points: topk_5 (3.5x, loses 2.5) is excluded outright, ratio_10 (3.0x, loses 1.5 [0.2, 2.9]) by its interval
    two = best.loc[2.0]
    assert two.best_arm == "topk_2" and two.loss_pts == pytest.approx(0.75) and two.loss_pts_hi == pytest.approx(1.85, abs=0.01)
    assert two.mcnemar_p == pytest.approx(P.mcnemar_exact(3, 0)) and "(not established): ratio_10" in two.note
    assert two.n == 400 and two.resolution_pts == pytest.approx(0.68, abs=0.01)  # what 400 identical answers establish
    assert (best.problems_needed <= 400).all()  # a budget established with these problems needs no more


def test_no_rule_reaches_a_budget_the_problems_cannot_resolve():
    # 20 problems: even an arm that agrees on every one has a loss upper end of about 13 points
    best = F.best_rules(F.lossy_frontier(pd.DataFrame(job_rows("small", "humaneval", n=20, passed=15)))).set_index("budget_pts")
    for budget in (1.0, 2.0):
        row = best.loc[budget]
        assert row.best_arm == "" and np.isnan(row.speedup) and row.resolution_pts > 10
        assert row.note.startswith("no rule reaches it with the 20 problems measured")
    # the fastest with no loss at its point estimate (typical_30 loses 1 of 20), named as not established
    assert "the fastest arm within it by its point estimate alone (not established): typical_09 (2.1×, loss 0.0 [" in best.loc[1.0].note
    # how many problems would settle it: an arm that agrees on all 20 needs the fewest (sps is lossless, so typical_09)
    for budget in (1.0, 2.0):
        row = best.loc[budget]
        assert row.problems_needed_arm == "typical_09" and 20 < row.problems_needed < np.inf
        assert f"at the rates observed, typical_09 would be established within it at about {int(row.problems_needed)} problems" in row.note
    assert best.loc[2.0].problems_needed < best.loc[1.0].problems_needed
    # every lossy arm loses at least the budget: more problems alone cannot establish it
    lossy_only = F.best_rules(F.lossy_frontier(pd.DataFrame(job_rows("lossy", n=20, passed=15, arms=("base", "topk_5")))))
    assert (lossy_only.problems_needed == np.inf).all() and lossy_only.note.str.contains("more problems alone will not").all()


def test_two_datasets_are_judged_apart():
    rows = job_rows() + job_rows("job1", "humaneval", n=20, passed=15)
    best = F.best_rules(F.lossy_frontier(pd.DataFrame(rows)))
    assert list(zip(best.dataset, best.budget_pts, best.best_arm)) == [
        ("arithmetic", 1.0, "typical_09"), ("arithmetic", 2.0, "topk_2"), ("humaneval", 1.0, ""), ("humaneval", 2.0, "")]


def test_rules_at_equal_leniency_take_each_rules_gentlest_knob_that_keeps_the_share(frontier):
    """The rules compared where each keeps at least half (a quarter) of the exact test's rejections:
    the least-losing rule first, its loss's established budget from the interval's upper end, and a
    rule whose every knob keeps less last, naming the most it keeps."""
    half = F.rules_at_share(frontier, share=0.5)
    assert list(zip(half.family, half.arm)) == [("autojudge", "aj_05"), ("ratio", "ratio_10"), ("topk", "topk_5"), ("typical", "")]
    assert (half.accept_beyond_exact.dropna() >= 0.5).all()
    assert list(half.loss_pts_hi.dropna()) == sorted(half.loss_pts_hi.dropna())
    for r in half[half.arm != ""].itertuples():
        assert r.loss_pts_lo < r.loss_pts < r.loss_pts_hi
        assert (r.established_within_pts == 2.0) == (1.0 < r.loss_pts_hi <= 2.0)  # 400 problems: none within 1 point
        assert np.isnan(r.established_within_pts) == ("within 2 points" in r.note or "loses more than 2 points" in r.note)
        assert ("loses more than 2 points" in r.note) == (r.loss_pts_lo > 2.0)
    assert "typical_09, 0.20" in _one(half, family="typical").note
    quarter = F.rules_at_share(frontier, share=0.25)
    assert _one(quarter, family="topk").arm == "topk_2"  # the gentlest knob that keeps enough, not the fastest
    assert F.rules_at_share(frontier.iloc[:0]).empty
    few = F.rules_at_share(F.lossy_frontier(pd.DataFrame(job_rows(n=100, passed=80))))  # top-5 loses 10 of 100
    assert "loses more than 2 points (established" in _one(few, family="topk").note
    assert _one(few, family="topk").problems_needed == np.inf
    # an established row needs no more problems than it has; one not yet established needs more
    for r in half[half.arm != ""].itertuples():
        assert (r.problems_needed <= r.n) == (r.established_within_pts == 2.0)


# ---- plot and report -----------------------------------------------------------------------------


@pytest.mark.parametrize("jobs", [1, 2])
def test_plot_draws_every_family_with_one_row_per_dataset(jobs):
    from spsamp.analysis.plots import plot_lossy_frontier

    rows = job_rows(n=60, passed=45) + (job_rows("job1", "humaneval", n=20, passed=15) if jobs == 2 else [])
    fig = plot_lossy_frontier(pd.DataFrame(rows))
    axes = fig.get_axes()
    assert len(axes) == 2 * jobs
    labels = set(axes[0].get_legend_handles_labels()[1])
    assert {"autojudge", "typical", "topk", "ratio", "exact SpS (sps)"} <= labels
    assert any(label.startswith("target alone (base)") for label in labels)  # the reference, as a band
    assert min(axes[0].get_xlim()) > 1.0  # the reference's speedup of 1 is not a point: the axes show the rules
    assert "arithmetic" in axes[0].get_title() and (jobs == 1 or "humaneval" in axes[2].get_title())
    with pytest.raises(NoData):
        plot_lossy_frontier(pd.DataFrame(job_rows(n=10, passed=5, arms=("base", "sps"))))


def _write(path: Path, rows: list[dict]) -> None:
    path.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema_for(rows)), path / "records.parquet")


def test_report_writes_the_frontier_tables_section_and_plot(tmp_path):
    from spsamp.analysis.report import build_report

    _write(tmp_path / "s" / "arith", job_rows(n=120, passed=90))
    _write(tmp_path / "s" / "he", job_rows("he", "humaneval", n=20, passed=15))
    report = build_report(tmp_path / "s", tmp_path / "rep").read_text()
    frontier = pd.read_csv(tmp_path / "rep" / "tables" / "lossy_frontier.csv")
    best = pd.read_csv(tmp_path / "rep" / "tables" / "best_rule.csv")
    assert len(frontier) == 2 * len(ARMS) and {"family", "knob", "speedup_lo", "difference_hi", "mcnemar_p"} <= set(frontier.columns)
    assert len(best) == 4 and (best.note.fillna("").str.contains("no rule reaches it with the 20 problems")).sum() == 2
    section = report.split("## Lossy rules: quality/speed frontier")[1].split("\n## ")[0]
    assert "| typical_09 | typical | ε=0.09 |" in section and "difference [95% CI]" in section
    best_section = report.split("## Best lossy rule at ≤ 1 and ≤ 2 points")[1].split("\n## ")[0]
    assert "upper end of its 95 % paired interval" in best_section and "loss, points [95% CI]" in best_section
    half = pd.read_csv(tmp_path / "rep" / "tables" / "rules_at_half.csv")
    assert sorted(half.dataset.unique()) == ["arithmetic", "humaneval"] and (half.accept_beyond_exact.dropna() >= 0.5).all()
    half_section = report.split("## Every rule where it keeps half of exact SpS's rejections")[1].split("\n## ")[0]
    assert "| aj_05 |" in half_section and "no knob of typical keeps 50%" in half_section
    assert "](lossy_frontier.png)" in report and (tmp_path / "rep" / "lossy_frontier.png").read_bytes()[:4] == b"\x89PNG"
    assert "`quality_frontier`: skipped" in report  # comparison arms are not drawn again, unpaired
    # without a lossy arm: both sections say why, the plot is skipped, no CSV
    _write(tmp_path / "t", job_rows(n=10, passed=5, arms=("base", "sps")))
    report = build_report(tmp_path / "t", tmp_path / "rep2").read_text()
    assert "Skipped: no lossy arm (method=lossy or autojudge) in a comparison job." in report
    assert "`lossy_frontier`: skipped" in report and not (tmp_path / "rep2" / "tables" / "best_rule.csv").exists()
    assert not (tmp_path / "rep2" / "tables" / "rules_at_half.csv").exists()


@pytest.mark.slow
def test_a_real_comparison_with_a_lossy_arm_reaches_the_report(tmp_path):
    from conftest import run_py

    from spsamp.analysis.report import build_report

    run_py(["-m", "experiment=smoke_compare", "dataset=arithmetic", "dataset.max_samples=4",
            "+compare.arms.typical_30={method:lossy,method.threshold:0.3}", f"paths.output_dir={tmp_path}"])
    report = build_report(tmp_path / "sweeps" / "smoke_compare", tmp_path / "rep").read_text()
    frontier = pd.read_csv(tmp_path / "rep" / "tables" / "lossy_frontier.csv")
    assert list(frontier.family) == ["target alone", "exact SpS", "typical"] and (frontier.n == 4).all()
    assert (frontier.dataset == "arithmetic").all() and frontier.speedup.notna().all()
    best = pd.read_csv(tmp_path / "rep" / "tables" / "best_rule.csv")
    assert list(best.budget_pts) == [1.0, 2.0] and best.note.str.startswith("no rule reaches it with the 4 problems measured").all()
    assert "](lossy_frontier.png)" in report


def test_each_rules_best_knob_within_the_budget(frontier):
    best = F.best_rules(frontier, per_family=True)
    two = best[best.budget_pts == 2.0].set_index("family")
    assert set(two.index) == {"autojudge", "typical", "topk", "ratio"}
    # per rule, the fastest established knob: topk_2 (topk_5 loses 2.5), no ratio knob (ratio_10's interval reaches 2.9)
    assert two.loc["topk", "best_arm"] == "topk_2" and two.loc["topk", "accept_beyond_exact"] == pytest.approx(
        _one(frontier, arm="topk_2").accept_beyond_exact)
    assert two.loc["ratio", "best_arm"] == "" and two.loc["ratio", "note"].startswith("no knob of ratio reaches it with the 400")
    assert "(not established): ratio_10" in two.loc["ratio", "note"]
    # the overall pick is the fastest of the per-rule picks
    overall = F.best_rules(frontier).set_index("budget_pts").loc[2.0]
    picks = two[two.best_arm != ""]
    assert overall.best_arm == picks.loc[picks.speedup.idxmax(), "best_arm"]
