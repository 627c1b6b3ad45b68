"""spsamp.analysis: loading, matching, summaries and predictions on a hand-built records table with
known answers; the report CLI and the notebook on a real multirun sweep of tiny random models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spsamp.analysis import (
    autojudge_table,
    category_summary,
    load_records,
    method_summary,
    predicted_vs_measured,
    speedup_summary,
    speedups,
)
from spsamp.analysis.tables import unmatched
from spsamp.cost_model import alpha_from_counts, expected_tokens_per_step, predicted_speedup
from spsamp.records.schema import CORE_NAMES, schema_for

ROOT = Path(__file__).resolve().parents[1]
approx = pytest.approx

# ---- a hand-built records table ---------------------------------------------------------------

_n = iter(range(10_000))


def row(method: str, prompt: str, tps: float | None, host: str = "h1", repeat: int = 0, status: str = "ok",
        category: str = "writing", model: str = "T", params: dict | None = None, metrics: dict | None = None, **kw) -> dict:
    r = {name: None for name in CORE_NAMES}
    params = params or {}
    r.update({
        "run_id": "r", "resume_key": f"key{next(_n)}", "status": status, "method": method,
        "method_params": json.dumps({"name": method, **params}, sort_keys=True),
        "model_preset": "tiny", "model": model, "draft_model": None if method == "baseline" else "D",
        "target_dtype": "float32", "device": "cpu", "dataset": "builtin", "prompt_id": prompt, "category": category,
        "turn": 1, "repeat": repeat, "max_new_tokens": 16, "temperature": 0.0, "top_p": 1.0, "top_k": 0, "seed": 0,
        "use_chat_template": True, "hostname": host, "cpu_model": f"cpu-{host}", "num_threads": 2, "display_active": False,
        "metrics_json": json.dumps(metrics) if metrics else None,
    })
    if status == "ok":
        r.update({"tokens_per_sec": tps, "decode_tokens_per_sec": tps, "new_tokens": 11, "wall_time_s": 11 / tps,
                  "decode_s": 1.0, "target_calls": 6, "target_calls_per_token": 6 / 11, "generated_ids": [1, 2, 3]})
    else:
        r.update({"error_type": "RuntimeError", "error_message": "boom"})
    r.update({f"param_{k}": v for k, v in params.items()})
    r.update(kw)
    return r


def spec(prompt, tps, acc, rej, avg, k=2, **kw):
    return row("speculative", prompt, tps, params={"k": k}, accepted=acc, rejections=rej, proposed=10, steps=5,
               avg_tokens_per_step=avg, acceptance_rate=acc / 10, draft_calls=10, **kw)


def aj(prompt, tps, thr, avg, steps, quality, **kw):
    return row("autojudge", prompt, tps, params={"k": 2.0, "threshold": thr}, accepted=4, rejections=1, proposed=8,
               steps=steps, avg_tokens_per_step=avg, draft_calls=8, category="math" if prompt == "p2" else "writing",
               metrics={"judge_accept_rate": 0.5, "quality_score": quality}, **kw)


SPEC_METRICS = {"draft_time_s": 0.3, "target_time_s": 0.6}

BASELINE_ROWS = [
    row("baseline", "p1", 9.0, repeat=0, decode_s=1.0, generated_ids=[1, 2, 3]),
    row("baseline", "p1", 11.0, repeat=1, decode_s=1.0, generated_ids=[1, 2, 3]),
    row("baseline", "p2", 20.0, category="math", decode_s=0.5, generated_ids=[4, 5]),
    row("baseline", "p2", None, category="math", repeat=1, status="error"),
    row("baseline", "p1", 100.0, host="h2", decode_s=0.1),  # another machine: never compared with h1
    row("baseline", "p1", 50.0, model="D", decode_s=0.2),  # the draft model alone: its pass time
]
SPEC_ROWS = [
    spec("p1", 15.0, 6, 2, 2.0, metrics=SPEC_METRICS, generated_ids=[1, 2, 3]),
    spec("p2", 50.0, 8, 0, 2.6, metrics=SPEC_METRICS, category="math", generated_ids=[4, 6]),
    spec("p3", 30.0, 2, 2, 1.4, metrics=SPEC_METRICS),  # no baseline for p3
    spec("p2", None, 0, 0, None, status="error", repeat=1, category="math"),
    spec("p1", 120.0, 5, 1, 2.0, host="h2", decode_s=0.5),
    spec("p1", 20.0, 8, 1, 2.5, k=4),
    spec("p2", 40.0, 12, 0, 3.0, k=4, category="math"),
]
AJ_ROWS = [
    aj("p1", 12.0, 0.1, 1.5, 4, 0.9),
    aj("p2", 30.0, 0.1, 2.5, 6, 0.7),
    aj("p1", 20.0, 0.5, 2.0, 5, 0.6),
    aj("p2", 50.0, 0.5, 3.0, 5, 0.4),
]


def _write(path: Path, rows: list[dict], drop: tuple[str, ...] = (), extra: dict | None = None) -> None:
    path.mkdir(parents=True)
    table = pa.Table.from_pylist(rows, schema=schema_for(rows))
    table = table.drop_columns(list(drop))
    for name, value in (extra or {}).items():
        table = table.append_column(name, pa.array([value] * table.num_rows))
    pq.write_table(table, path / "records.parquet")


@pytest.fixture
def records(tmp_path: Path) -> pd.DataFrame:
    # three files with different column sets, as different versions and methods write them
    _write(tmp_path / "runs" / "base", BASELINE_ROWS, drop=("display_active", "gpu_name"))
    _write(tmp_path / "sweeps" / "s" / "method.k=2", SPEC_ROWS, extra={"future_column": "x"})
    _write(tmp_path / "sweeps" / "aj" / "0", AJ_ROWS)
    return load_records(tmp_path)


def _one(df: pd.DataFrame, **where) -> pd.Series:
    sel = df
    for k, v in where.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, (where, sel)
    return sel.iloc[0]


def test_load_unifies_schemas_and_flags_errors(records):
    df = records
    assert len(df) == len(BASELINE_ROWS) + len(SPEC_ROWS) + len(AJ_ROWS)
    assert df["is_error"].sum() == 2 and set(df.loc[df.is_error, "status"]) == {"error"}
    assert df.loc[df.method == "baseline", "param_k"].isna().all()
    assert df["param_k"].dtype == np.float64  # int64 in one file, float64 in another
    assert df.loc[df.method == "baseline", "future_column"].isna().all()
    assert df["display_active"].isna().sum() == len(BASELINE_ROWS)  # missing in the older file
    assert df["source_file"].nunique() == 3
    assert set(df["config"]) == {"baseline", "speculative k=2", "speculative k=4", "autojudge k=2 threshold=0.1", "autojudge k=2 threshold=0.5"}
    assert _one(df, config="autojudge k=2 threshold=0.5", prompt_id="p2")["metric_quality_score"] == 0.4


def test_load_conflicting_types_and_missing(tmp_path):
    _write(tmp_path / "a", [row("x", "p1", 1.0, params={"mode": 3})])
    _write(tmp_path / "b", [row("x", "p2", 2.0, params={"mode": "fast"})])
    df = load_records(str(tmp_path / "*"))
    assert sorted(df["param_mode"]) == ["3", "fast"]
    with pytest.raises(FileNotFoundError, match="no records.parquet"):
        load_records(tmp_path / "nothing_here")


def test_speedups_match_prompt_and_machine(records):
    sp = speedups(records)
    h1k2 = sp[(sp.config == "speculative k=2") & (sp.cpu_model == "cpu-h1")].set_index("prompt_id")
    assert sorted(h1k2.index) == ["p1", "p2"]  # p3 has no baseline, the error row is not a prompt result
    assert h1k2.loc["p1", "baseline_tokens_per_sec"] == 10.0  # median of the two repeats
    assert h1k2.loc["p1", "speedup"] == 1.5 and h1k2.loc["p2", "speedup"] == 2.5
    assert h1k2.loc["p1", "identical_to_baseline"] == 1.0 and h1k2.loc["p2", "identical_to_baseline"] == 0.0
    assert _one(sp, config="speculative k=2", cpu_model="cpu-h2")["speedup"] == 1.2  # h2 vs h2 only

    ss = speedup_summary(sp)
    r = _one(ss, config="speculative k=2", cpu_model="cpu-h1")
    assert (r.n_prompts, r.speedup_median, r.speedup_q25, r.speedup_q75) == (2, 2.0, 1.75, 2.25)
    assert r.decode_speedup_median == 2.0 and r.identical_to_baseline == 0.5
    r = _one(ss, config="speculative k=4")
    assert (r.n_prompts, r.speedup_median) == (2, 2.0)
    assert _one(ss, config="autojudge k=2 threshold=0.5").speedup_median == approx(2.25)
    assert unmatched(records, sp) == []
    missing = unmatched(records[records.cpu_model == "cpu-h1"], sp[sp.config != "speculative k=4"])
    assert missing == [f"speculative k=4 in {records.run_dir[records.config == 'speculative k=4'].iloc[0]}"]


def test_method_and_category_summaries(records):
    ms = method_summary(records)
    r = _one(ms, config="speculative k=2", cpu_model="cpu-h1")
    assert (r.rows, r.errors, r.n_prompts) == (4, 1, 3)
    assert (r.tokens_per_sec_median, r.tokens_per_sec_q25, r.tokens_per_sec_q75) == (30.0, 22.5, 40.0)
    assert (r.acceptance_rate_median, r.acceptance_rate_q25, r.acceptance_rate_q75) == approx((0.6, 0.4, 0.7))
    assert (r.mean_accepted_length_median, r.mean_accepted_length_q25, r.mean_accepted_length_q75) == approx((2.0, 1.7, 2.3))
    assert r.target_calls_per_token_median == approx(6 / 11)
    b = _one(ms, config="baseline", cpu_model="cpu-h1", model="T")
    assert (b.rows, b.errors, b.n_prompts, b.tokens_per_sec_median, b.tokens_per_sec_q25, b.tokens_per_sec_q75) == (4, 1, 2, 15.0, 12.5, 17.5)

    cs = category_summary(records)
    w = _one(cs, config="speculative k=2", cpu_model="cpu-h1", category="writing")
    assert (w.n_prompts, w.tokens_per_sec_median, w.tokens_per_sec_q25, w.tokens_per_sec_q75) == (2, 22.5, 18.75, 26.25)
    m = _one(cs, config="speculative k=2", cpu_model="cpu-h1", category="math")
    assert (m.rows, m.errors, m.n_prompts, m.tokens_per_sec_median) == (2, 1, 1, 50.0)


def test_cost_model():
    assert expected_tokens_per_step(0.8, 2) == approx(2.44)
    assert expected_tokens_per_step(1.0, 4) == 5.0 and expected_tokens_per_step(0.0, 4) == 1.0
    assert predicted_speedup(0.8, 2, 0.3) == approx(2.44 / 1.6)
    assert list(expected_tokens_per_step(np.array([0.5, 1.0]), 1)) == [1.5, 2.0]
    assert alpha_from_counts(16, 4) == 0.8 and np.isnan(alpha_from_counts(0, 0))


def test_predicted_vs_measured(records):
    pred = predicted_vs_measured(records)
    r = _one(pred, config="speculative k=2", cpu_model="cpu-h1")
    assert r.alpha == approx(0.8) and r.k == 2
    assert r.tokens_per_step == approx(2.0)  # (2.0 + 2.6 + 1.4) * 5 steps / 15 steps
    assert r.predicted_tokens_per_step == approx(2.44)
    assert r.c == approx(0.3) and r.c_source == "metrics_json draft/target pass times"  # (0.9/30) / (1.8/18)
    assert r.predicted_speedup == approx(2.44 / 1.6) and r.measured_speedup == 2.0
    r = _one(pred, config="speculative k=4")
    assert r.alpha == approx(20 / 21)
    assert r.c == approx(0.2) and r.c_source.startswith("baseline of draft model")  # 0.02 s / 0.1 s per pass
    r = _one(pred, config="speculative k=2", cpu_model="cpu-h2")
    assert r.c == approx(4.5) and r.c_source.startswith("fit")  # (0.5 - 5 * 0.01) / 10 draft calls / 0.01
    assert _one(predicted_vs_measured(records, cost_ratio=0.5), config="speculative k=4").c == 0.5


def test_predicted_vs_measured_leaves_sized_chains_to_their_own_prediction(records):
    # a comparison stores k=4 beside k=auto in one column: the closed form takes the fixed k only
    auto = records[records.config == "speculative k=4"].assign(param_k="auto", config="speculative k=auto")
    df = pd.concat([records.assign(param_k=records.param_k.astype(object)), auto], ignore_index=True)
    pred = predicted_vs_measured(df)
    assert sorted(pred.k.unique()) == [2.0, 4.0] and "speculative k=auto" not in set(pred.get("config", []))


def test_autojudge_table(records):
    tab = autojudge_table(records)
    assert list(tab["param_threshold"]) == [0.1, 0.5]
    assert list(tab["accepted_tokens_per_step"]) == approx([2.1, 2.5])  # (1.5*4 + 2.5*6)/10, (2*5 + 3*5)/10
    assert list(tab["speedup_median"]) == approx([1.35, 2.25])
    assert list(tab["metric_quality_score"]) == approx([0.8, 0.5])
    assert list(tab["metric_judge_accept_rate"]) == approx([0.5, 0.5])
    assert list(tab["threshold"]) == approx([0.1, 0.5])  # no recorded threshold: method.threshold


def test_autojudge_threshold_is_the_one_the_rows_applied(records):
    from spsamp.analysis.tables import quality_table

    # method.threshold_quantile: the rows keep the default method.threshold and record the judge's quantile
    quantile = records[records.method == "autojudge"].copy()
    for q, thr in ((0.25, 0.03), (0.9, 0.6)):
        part = quantile.assign(param_threshold=0.5, param_threshold_quantile=q, metric_threshold=thr,
                               config=f"autojudge k=2 threshold=0.5 threshold_quantile={q}", resume_key=quantile.resume_key + f"q{q}")
        records = pd.concat([records, part], ignore_index=True)
    tab = autojudge_table(records)
    assert list(tab["threshold"]) == sorted(tab["threshold"])  # ordered by what was applied
    by_q = tab[tab["param_threshold_quantile"].notna()].set_index("param_threshold_quantile")["threshold"]
    assert by_q.to_dict() == approx({0.25: 0.03, 0.9: 0.6})
    quality = quality_table(records.assign(task_correct=True))
    assert quality.set_index("config")["threshold"].dropna().to_dict() == approx({
        "autojudge k=2 threshold=0.1": 0.1, "autojudge k=2 threshold=0.5": 0.5,
        "autojudge k=2 threshold=0.5 threshold_quantile=0.25": 0.03, "autojudge k=2 threshold=0.5 threshold_quantile=0.9": 0.6})


def test_autojudge_plot_leaves_comparison_arms_to_the_frontier(records):
    from spsamp.analysis.plots import plot_autojudge
    from spsamp.analysis.tables import NoData

    assert plot_autojudge(records) is not None
    with pytest.raises(NoData, match="lossy_frontier"):
        plot_autojudge(records.assign(arm="a"))


# ---- a real sweep: report CLI and notebook ----------------------------------------------------


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("outputs")
    common = ["model=tiny_random", "dataset.max_samples=2", "generation.max_new_tokens=6", "generation.warmup=0",
              "hardware.num_threads=1", f"paths.output_dir={out}"]
    for extra in (["method=baseline"], ["method=speculative", "method.k=1,2"]):
        proc = _run(["run.py", "-m", *common, *extra])
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(out.rglob("records.parquet"))) == 3
    return out


@pytest.mark.slow
def test_report_cli_on_real_sweep(sweep, tmp_path):
    proc = _run(["-m", "spsamp.analysis", "report", str(sweep), "--out", str(tmp_path / "rep")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (tmp_path / "rep" / "report.md").read_text()
    for title in ("## Runs", "## Unpaired speedup over baseline (separate jobs)", "## Per-method summary", "## Per-category summary",
                  "## Measured vs predicted speedup"):
        assert title in report
    speed = report.split("## Unpaired speedup over baseline (separate jobs)")[1].split("\n## ")[0]
    assert "| speculative k=1 |" in speed and "| speculative k=2 |" in speed and "No matching baseline" not in speed
    assert "`specexec_tokens_per_call`: skipped" in report and "`autojudge_threshold`: skipped" in report
    for name in ("speedup_vs_k", "accept_length_vs_k", "categories"):
        png = tmp_path / "rep" / f"{name}.png"
        assert f"]({name}.png)" in report
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    tables = pd.read_csv(tmp_path / "rep" / "tables" / "speedup.csv")
    assert sorted(tables["param_k"]) == [1, 2] and (tables["n_prompts"] == 2).all()
    assert (tables["speedup_median"] > 0).all()


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(sweep, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "analysis" / "sweep_report.ipynb", as_version=4)
    monkeypatch.setenv("SPSAMP_OUTPUTS", str(sweep))
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "analysis")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3  # speedup vs k, accepted length, categories


def test_sweep_summary_pools_tokens_and_compares_within_a_setting(tmp_path):
    from spsamp.analysis.summary import format_summary, sweep_summary

    def hf(prompt, tps, k=2, **kw):
        return row("hf_assisted", prompt, tps, params={"k": k}, draft_calls=9, **kw)

    rows = [
        row("baseline", "p1", 10.0, generated_ids=[1, 2]), row("baseline", "p2", 20.0, generated_ids=[3, 4]),
        spec("p1", 20.0, 6, 2, 2.0, generated_ids=[1, 2]), spec("p2", 40.0, 8, 0, 2.6, generated_ids=[3, 5]),
        hf("p1", 10.0, generated_ids=[1, 2]), hf("p2", 20.0, generated_ids=[3, 4]),
        spec("p1", 30.0, 8, 1, 2.5, k=4),  # no hf_assisted at k=4: no ratio
        row("baseline", "p1", 100.0, host="h2"), spec("p1", 150.0, 5, 1, 2.0, host="h2"),  # another machine
    ]
    _write(tmp_path / "s", rows)
    table = sweep_summary(load_records(tmp_path))
    h1 = table[table.cpu_model == "cpu-h1"].set_index("config")
    # pooled: 22 tokens over 11/10 + 11/20 s
    assert h1.loc["baseline", "tokens_per_sec"] == pytest.approx(22 / 1.65)
    assert h1.loc["speculative k=2", "speedup_unpaired"] == pytest.approx(2.0)
    assert h1.loc["speculative k=2", "vs_hf_assisted"] == pytest.approx(2.0)
    assert h1.loc["hf_assisted k=2", "vs_hf_assisted"] == pytest.approx(1.0)
    assert np.isnan(h1.loc["speculative k=4", "vs_hf_assisted"]) and np.isnan(h1.loc["baseline", "vs_hf_assisted"])
    assert h1.loc["speculative k=2", "acceptance"] == pytest.approx(14 / 20)
    assert h1.loc["speculative k=2", "same_as_baseline"] == pytest.approx(0.5)  # p2 differs
    h2 = table[table.cpu_model == "cpu-h2"].set_index("config")
    assert h2.loc["speculative k=2", "speedup_unpaired"] == pytest.approx(1.5)  # against h2's hardware's baseline only
    text = format_summary(table)
    assert text.count("| config |") == 2 and "cpu_model=cpu-h2" in text


# ---- answer quality: pass@1 with a Wilson interval, the frontier plot ----------------------------


def test_wilson_interval_known_values():
    from spsamp.analysis.tables import wilson_interval

    lo, hi = wilson_interval(8, 10)  # textbook value: 0.490 .. 0.943
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 5)[0] == 0.0 and 0 < wilson_interval(0, 5)[1] < 0.5
    assert wilson_interval(5, 5)[1] == pytest.approx(1.0) and wilson_interval(5, 5)[0] > 0.5
    assert all(np.isnan(wilson_interval(0, 0)))


def _checked(method, prompt, correct, tps=10.0, params=None, metrics=None, **kw):
    return row(method, prompt, tps, params=params, metrics=metrics, dataset="humaneval",
               task_correct=correct, task_check="passed" if correct else "failed", **kw)


def _quality_rows():
    rows = []
    for i in range(10):  # baseline 8/10, SpS 8/10, AutoJudge t=0.5 6/10 (faster), t=0.9 3/10
        rows.append(_checked("baseline", f"p{i}", i < 8, tps=10.0))
        rows.append(_checked("speculative", f"p{i}", i < 8, tps=20.0, params={"k": 4}, accepted=3, proposed=4, draft_calls=4))
        for thr, n_ok, tps in ((0.5, 6, 25.0), (0.9, 3, 30.0)):
            rows.append(_checked("autojudge", f"p{i}", i < n_ok, tps=tps, params={"k": 4.0, "threshold": thr}, accepted=3, proposed=4,
                                 draft_calls=4, metrics={"judge_accepted": 1, "mismatches_judged": 4}))
        rows.append(_checked("lossy", f"p{i}", i < 7, tps=24.0, params={"k": 4, "rule": "topk", "top_k": 3, "threshold": 0.09},
                             accepted=3, proposed=4, draft_calls=4, metrics={"rule_accepted": i % 2, "rule_exact_rejections": 2}))
    rows.append(row("baseline", "q0", 10.0))  # an unchecked dataset row: ignored by quality
    return rows


def test_quality_table_and_sweep_summary_show_pass_at_1(tmp_path):
    from spsamp.analysis.summary import format_summary, sweep_summary
    from spsamp.analysis.tables import quality_table

    _write(tmp_path / "s", _quality_rows())
    df = load_records(tmp_path)
    q = quality_table(df).set_index("config")
    assert q.loc["baseline", "checked"] == 10 and q.loc["baseline", "pass_at_1"] == pytest.approx(0.8)
    assert q.loc["baseline", "pass_at_1_lo"] == pytest.approx(0.4902, abs=1e-3)
    aj5 = q.loc["autojudge k=4 threshold=0.5"]
    assert aj5["pass_at_1"] == pytest.approx(0.6) and aj5["speedup"] == pytest.approx(2.5)
    assert aj5["judge_accept_rate"] == pytest.approx(0.25) and aj5["checks"] == "failed: 4, passed: 6"
    assert np.isnan(q.loc["speculative k=4", "judge_accept_rate"])
    lossy = q.loc[[c for c in q.index if c.startswith("lossy")][0]]
    assert lossy["rule_accept_rate"] == pytest.approx(5 / 20) and np.isnan(lossy["judge_accept_rate"])
    assert np.isnan(aj5["rule_accept_rate"])
    summ = sweep_summary(df)
    humaneval = summ[summ.dataset == "humaneval"].set_index("config")
    assert humaneval.loc["autojudge k=4 threshold=0.9", "pass_at_1"] == pytest.approx(0.3)
    assert np.isnan(summ[summ.dataset == "builtin"]["pass_at_1"]).all()  # unchecked: no pass@1
    text = format_summary(summ)
    assert "pass@1 [95% CI]" in text and "0.800 [0.49, 0.94]" in text
    # a sweep without any checked dataset has no quality columns at all
    plain = sweep_summary(df[df.dataset == "builtin"])
    assert not [c for c in plain.columns if c.startswith("pass_at_1")]


def test_report_has_quality_section_and_frontier_plot(tmp_path):
    from spsamp.analysis.report import build_report

    _write(tmp_path / "s", _quality_rows())
    report = build_report(tmp_path / "s", tmp_path / "rep").read_text()
    section = report.split("## Answer quality: pass@1")[1].split("\n## ")[0]
    assert "pass@1 [95% CI]" in section and "0.600 [0.31, 0.83]" in section
    png = tmp_path / "rep" / "quality_frontier.png"
    assert "](quality_frontier.png)" in report and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # without lossy rows: the plot is skipped with the reason, the table stays
    _write(tmp_path / "t", [r for r in _quality_rows() if r["method"] != "autojudge"])
    report = build_report(tmp_path / "t", tmp_path / "rep2").read_text()
    assert "`quality_frontier`: skipped — no lossy (autojudge) rows" in report and "0.800 [0.49, 0.94]" in report


def test_category_bars_name_comparison_arms_by_arm_unless_that_merges_configurations(records):
    from spsamp.analysis.plots import plot_categories

    def legend(df):
        return set(plot_categories(df).get_axes()[0].get_legend_handles_labels()[1])

    spec = records[records.method == "speculative"]
    two = spec.assign(arm=spec["param_k"].map({2.0: "sps_a", 4.0: "sps_b"}))  # one job's arms: named by arm
    assert {label.split(" @")[0] for label in legend(two)} == {"arm sps_a", "arm sps_b"}  # + the machine: two here
    same = spec.assign(arm="sps")  # two configurations under one arm name (say two launches): full labels
    labels = legend(same)
    assert not any(label.startswith("arm ") for label in labels) and any("k=4" in label for label in labels)
