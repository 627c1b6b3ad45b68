"""Paired statistics of comparison jobs (spsamp/analysis/paired.py) and the hostname-free matching
of separate jobs: geometric mean + seeded bootstrap of per-prompt ratios, exact McNemar, the field's
vocabulary, and a speedup for every arm of every job whatever host each job landed on."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from spsamp.analysis import paired as P
from spsamp.analysis import tables as T
from spsamp.analysis.summary import comparison_summary, summary_text
from spsamp.records.schema import CORE_NAMES

_n = iter(range(100_000))


def rec(arm: str | None, prompt: str, tps: float, *, job: str = "job0", host: str = "h1", cpu: str = "cpu-A", method: str | None = None,
        repeat: int = 0, status: str = "ok", ref: str = "base", correct: bool | None = None, category: str = "coding", **kw) -> dict:
    r = {name: None for name in CORE_NAMES}
    method = method or ("baseline" if arm in ("base", None) else "speculative")
    r.update({
        "run_id": "r", "resume_key": f"k{next(_n)}", "status": status, "method": method, "method_params": "{}",
        "model_preset": "tiny", "model": "T", "target_dtype": "float32", "device": "cpu", "dataset": "builtin",
        "prompt_id": prompt, "category": category, "turn": 1, "repeat": repeat, "max_new_tokens": 16, "temperature": 0.0,
        "top_p": 1.0, "top_k": 0, "seed": 0, "use_chat_template": True, "hostname": host, "cpu_model": cpu, "num_threads": 4,
        "cpu_linear": "aten", "run_dir": job, "config": method if arm is None else f"{method} ({arm})",
    })
    if arm is not None:
        r.update({"arm": arm, "comparison": job, "reference_arm": ref})
    if status == "ok":
        r.update({"tokens_per_sec": tps, "decode_tokens_per_sec": tps, "new_tokens": 10, "wall_time_s": 10 / tps, "decode_s": 1.0,
                  "target_calls": 10 if method == "baseline" else 4, "generated_ids": [1, 2], "steps": 9 if method == "baseline" else 3,
                  "accept_len_hist": [0, 9] if method == "baseline" else [0, 1, 1, 1],
                  "task_correct": correct, "task_check": None if correct is None else ("passed" if correct else "failed")})
    r.update(kw)
    return r


RATIOS = [1.5, 2.0, 3.0, 1.2, 2.5, 0.9]


def comparison(job="job0", host="h1", ratios=RATIOS, cpu="cpu-A"):
    rows = []
    for i, ratio in enumerate(ratios):
        rows += [rec("base", f"p{i}", 10.0 + i, job=job, host=host, cpu=cpu), rec("sps", f"p{i}", (10.0 + i) * ratio, job=job, host=host, cpu=cpu)]
    return rows


def one(df, **where):
    m = np.ones(len(df), dtype=bool)
    for k, v in where.items():
        m &= (df[k] == v).to_numpy()
    assert m.sum() == 1, (where, m.sum())
    return df[m].iloc[0]


# ---- speed ---------------------------------------------------------------------------------------


def test_speedup_is_the_geometric_mean_of_per_prompt_ratios_with_a_seeded_bootstrap():
    sp = P.paired_speedups(pd.DataFrame(comparison()))
    r = one(sp, arm="sps")
    assert r.n_prompts == 6 and r.speedup == pytest.approx(math.exp(np.mean(np.log(RATIOS))))
    assert r.speedup_lo < r.speedup < r.speedup_hi and r.speedup_lo >= min(RATIOS) and r.speedup_hi <= max(RATIOS)
    assert r.speedup_median == pytest.approx(np.median(RATIOS)) and r.speedup_q25 == pytest.approx(np.quantile(RATIOS, 0.25))
    again = one(P.paired_speedups(pd.DataFrame(comparison())), arm="sps")
    assert (again.speedup_lo, again.speedup_hi) == (r.speedup_lo, r.speedup_hi)  # seeded: reproducible
    other = one(P.paired_speedups(pd.DataFrame(comparison()), seed=1), arm="sps")
    assert (other.speedup_lo, other.speedup_hi) != (r.speedup_lo, r.speedup_hi)
    assert np.isnan(one(sp, arm="base").speedup)  # the reference is not paired with itself
    # the interval narrows as the ratios agree
    tight = one(P.paired_speedups(pd.DataFrame(comparison(ratios=[2.0, 2.01, 1.99, 2.0, 2.02, 1.98]))), arm="sps")
    assert tight.speedup_hi - tight.speedup_lo < (r.speedup_hi - r.speedup_lo) / 10


def test_bootstrap_interval_covers_the_truth_about_as_often_as_it_says():
    rng = np.random.default_rng(7)
    hits = 0
    for trial in range(200):
        x = np.exp(rng.normal(np.log(1.5), 0.3, size=30))
        lo, hi = P.bootstrap_geomean(x, n=500, seed=trial)
        hits += lo <= 1.5 <= hi
    assert 0.85 <= hits / 200 <= 0.99  # a percentile bootstrap runs a little narrow at n = 30


def test_repeats_reduce_to_their_geometric_mean_and_a_failed_row_leaves_its_prompt_out():
    rows = [rec("base", "p0", 10.0, repeat=0), rec("sps", "p0", 20.0, repeat=0),
            rec("base", "p0", 10.0, repeat=1), rec("sps", "p0", 80.0, repeat=1),
            rec("base", "p1", 10.0), rec("sps", "p1", 0, status="error")]
    r = one(P.paired_speedups(pd.DataFrame(rows)), arm="sps")
    assert r.n_prompts == 1 and r.speedup == pytest.approx(4.0) and r.errors == 1


def test_pairs_never_cross_jobs():
    rows = comparison("job0") + comparison("job1", ratios=[4.0] * 6)
    sp = P.paired_speedups(pd.DataFrame(rows))
    assert one(sp, arm="sps", comparison="job1").speedup == pytest.approx(4.0)
    assert one(sp, arm="sps", comparison="job0").speedup == pytest.approx(math.exp(np.mean(np.log(RATIOS))))


def test_speeds_pair_only_within_one_launch_verdicts_across_launches():
    # p0-p2 resumed in a second launch for the arm only (another session, maybe another machine)
    rows = comparison("job0")
    for r in rows:
        if r["arm"] == "sps" and r["prompt_id"] in ("p0", "p1", "p2"):
            r["run_id"] = "second"
    for r in rows:
        r["task_correct"], r["task_check"] = True, "passed"
    p = P.pairs(pd.DataFrame(rows))
    assert p["same_launch"].sum() == 3 and p.loc[~p["same_launch"], "speedup"].isna().all()
    sp = one(P.paired_speedups(pd.DataFrame(rows)), arm="sps")
    assert sp.n_prompts == 3 and sp.speedup == pytest.approx(math.exp(np.mean(np.log(RATIOS[3:]))))
    assert one(P.paired_quality(pd.DataFrame(rows)), arm="sps").n == 6  # verdicts pair whatever the launch
    for r in rows:  # the second launch on another machine: the arm names both
        if r["run_id"] == "second":
            r["cpu_model"] = "cpu-B"
    assert one(P.paired_speedups(pd.DataFrame(rows)), arm="sps").hardware == "cpu-A, 4 threads + cpu-B, 4 threads"


# ---- any cluster: hostnames never matter ---------------------------------------------------------


def test_every_arm_of_every_job_gets_its_speedup_whatever_host_it_ran_on():
    rows = comparison("job0", host="node-a") + comparison("job1", host="node-b") + comparison("job2", host="node-c", cpu="cpu-B")
    table = comparison_summary(pd.DataFrame(rows))
    fast = table[table.arm == "sps"]
    assert len(fast) == 3 and fast["speedup [95% CI]"].str.match(r"^\d").all()
    assert set(fast.hosts) == {"node-a", "node-b", "node-c"}
    assert one(table, arm="sps", comparison="job2").hardware == "cpu-B, 4 threads"
    text = summary_text(pd.DataFrame(rows))
    assert "on cpu-A, 4 threads (host node-a)" in text and "on cpu-B, 4 threads (host node-c)" in text


def test_separate_jobs_match_on_hardware_not_hostname_and_misses_are_listed():
    base = [rec(None, f"p{i}", 10.0, host="node-a", run_dir="baseline_job") for i in range(3)]
    spec = [rec(None, f"p{i}", 20.0, host="node-b", method="speculative", run_dir="sps_job") for i in range(3)]
    other = [rec(None, f"p{i}", 30.0, host="node-c", cpu="cpu-B", method="speculative", run_dir="sps_elsewhere",
                 method_params='{"k": 8}', param_k=8, config="speculative k=8") for i in range(3)]
    df = T._prepared(pd.DataFrame(base + spec + other))
    sp = T.speedups(df)
    assert len(sp) == 3 and (sp.speedup == 2.0).all()  # node-b's rows against node-a's baseline: same CPU
    assert T.unmatched(df, sp) == ["speculative k=8 in sps_elsewhere"]
    text = summary_text(df)
    assert "speedup_unpaired" in text and "no baseline on the same hardware and settings for: speculative k=8 in sps_elsewhere" in text


# ---- quality -------------------------------------------------------------------------------------


def test_mcnemar_exact_on_known_tables():
    assert P.mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)  # binom(10, 1/2): P(X <= 1) = 11/1024
    assert P.mcnemar_exact(9, 1) == P.mcnemar_exact(1, 9)
    assert P.mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert P.mcnemar_exact(3, 3) == 1.0 and P.mcnemar_exact(0, 0) == 1.0
    assert P.mcnemar_exact(2, 12) == pytest.approx(2 * (1 + 14 + 91) / 2**14)


def test_paired_quality_counts_discordant_problems():
    truth = [(True, True), (True, False), (False, True), (False, True), (False, True), (False, False)]  # (ref, arm)
    rows = []
    for i, (r, a) in enumerate(truth):
        rows += [rec("base", f"p{i}", 10.0, correct=r), rec("sps", f"p{i}", 20.0, correct=a)]
    rows.append(rec("sps", "p9", 20.0, correct=True))  # no reference answer: not a pair
    q = one(P.paired_quality(pd.DataFrame(rows)), arm="sps")
    assert (q.n, q.ref_only, q.arm_only) == (6, 1, 3)
    assert q.pass_at_1 == pytest.approx(4 / 6) and q.ref_pass_at_1 == pytest.approx(2 / 6)
    assert q.difference == pytest.approx(2 / 6) and q.mcnemar_p == pytest.approx(P.mcnemar_exact(1, 3))
    assert q.pass_at_1_lo < 4 / 6 < q.pass_at_1_hi
    assert "McNemar p" in comparison_summary(pd.DataFrame(rows)).columns


def test_per_problem_verdicts_one_column_per_arm_and_the_disagreements_flagged():
    truth = [(True, True), (True, False), (False, True), (False, False)]  # (ref, arm)
    rows = []
    for i, (r, a) in enumerate(truth):
        rows += [rec("base", f"p{i}", 10.0, correct=r), rec("sps", f"p{i}", 20.0, correct=a)]
    rows.append(rec("sps", "p9", 20.0, correct=True))  # only one arm checked it: nothing to disagree with
    rows.append(rec("base", "p8", 10.0))  # unchecked: no verdict, no row
    t = P.per_problem(pd.DataFrame(rows)).set_index("prompt_id")
    assert list(t.index) == ["p0", "p1", "p2", "p3", "p9"]
    assert t.loc["p1", "base"] == 1 and t.loc["p1", "sps"] == 0 and pd.isna(t.loc["p9", "base"])
    assert list(t["disagree"]) == [False, True, True, False, False]
    assert P.per_problem(pd.DataFrame([rec("base", "p0", 10.0)])).empty


# ---- vocabulary ----------------------------------------------------------------------------------


def test_mean_accepted_tokens_histogram_and_per_category():
    rows = comparison() + [rec("base", "w0", 10.0, category="writing"), rec("sps", "w0", 12.0, category="writing")]
    sp = P.paired_speedups(pd.DataFrame(rows))
    assert one(sp, arm="base").mean_accepted_tokens == 1.0 and one(sp, arm="sps").mean_accepted_tokens == 2.5
    assert one(sp, arm="sps").accept_len_hist == "1:7 2:7 3:7" and one(sp, arm="base").accept_len_hist == "1:63"
    cat = P.paired_speedups(pd.DataFrame(rows), by=["category"])
    assert one(cat, arm="sps", category="writing").speedup == pytest.approx(1.2) and one(cat, arm="sps", category="coding").n_prompts == 6
    assert P.pooled_histogram([[0, 2], None, [0, 1, 3]]) == [0, 3, 3]


def test_the_cost_model_prediction_is_read_in_one_place():
    auto = [json.dumps({"auto_steps": 10, "auto_predicted_step_tokens": 3.0, "auto_predicted_step_cost": 1.5, "auto_predicted_speedup": 2.0}),
            json.dumps({"auto_steps": 30, "auto_predicted_step_tokens": 2.0, "auto_predicted_step_cost": 2.0, "auto_predicted_speedup": 1.0})]
    assert P.predicted_over_baseline(auto) == pytest.approx((30 + 60) / (15 + 60))  # pooled as the measurement is
    assert P.predicted_over_baseline([json.dumps({"grow_predicted_speedup": 1.5}), json.dumps({"grow_predicted_speedup": 2.5})]) == 2.0
    sized = [json.dumps({"sizing_steps": 4, "sizing_predicted_step_tokens": 3.0, "sizing_predicted_step_cost": 1.0, "sizing_predicted_speedup": 3.0}),
             json.dumps({"sizing_steps": 4, "sizing_predicted_step_tokens": 1.0, "sizing_predicted_step_cost": 1.0, "sizing_predicted_speedup": 1.0})]
    assert P.predicted_over_baseline(sized) == pytest.approx(2.0)  # today's family, pooled the same way
    assert np.isnan(P.predicted_over_baseline([None, json.dumps({"draft_time_s": 1.0})]))
    # its forecast of mean_accepted_tokens: a sized step at its forecast, the prefill's pass at its one token
    assert P.predicted_accepted_tokens(sized, [5, 5]) == pytest.approx((1 + 12 + 1 + 4) / 10)
    assert P.predicted_accepted_tokens(sized + [None, "{bad", json.dumps([1])], [5, 5, 7, 7, 7]) == pytest.approx(1.8)
    assert np.isnan(P.predicted_accepted_tokens([None, json.dumps({"draft_time_s": 1.0})], [3, 3]))
    rows = comparison()
    for r in rows:
        if r["arm"] == "sps":
            r["metrics_json"] = json.dumps({"sizing_predicted_speedup": 1.8, "sizing_steps": r["target_calls"] - 1,
                                            "sizing_predicted_step_tokens": 4.0, "sizing_predicted_step_cost": 1.0})
    got = one(P.paired_speedups(pd.DataFrame(rows)), arm="sps")  # 3 steps forecast at 4 tokens, the prefill at 1: 13 / 4 passes
    assert got.predicted_speedup == pytest.approx(4.0) and got.mean_accepted_tokens == 2.5 and got.predicted_accepted_tokens == pytest.approx(3.25)
    assert {"predicted_speedup", "predicted_accepted_tokens"} <= set(comparison_summary(pd.DataFrame(rows)).columns)


# ---- spread between launches ---------------------------------------------------------------------


def test_launch_spread_sets_interleaved_and_separate_launches_on_one_estimator(monkeypatch):
    from spsamp.analysis import spread as S

    interleaved = pd.DataFrame(comparison(ratios=[2.0, 2.0, 2.0]))
    separate = [rec(None, f"p{i}", 10.0, method="baseline") for i in range(3)]
    separate += [rec(None, f"p{i}", 10.0 * r, method="speculative") for i, r in enumerate([1.0, 2.0, 4.0])]
    got = S.launch_speedups(interleaved)
    assert dict(got) == {"sps": pytest.approx(2.0)}  # the arm, against the same job's reference arm
    assert dict(S.launch_speedups(pd.DataFrame(separate))) == {"speculative": pytest.approx(2.0)}  # geomean of 1, 2, 4

    launches = {"a": interleaved, "b": pd.DataFrame(comparison(ratios=[2.2, 2.2, 2.2]))}
    monkeypatch.setattr(S, "load_records", lambda path, metrics=False: launches[path])
    table = S.launch_spread(["a", "b"])
    assert table.loc["sps", "a"] == pytest.approx(2.0) and table.loc["sps", "spread_2_pct"] == pytest.approx(10.0)
