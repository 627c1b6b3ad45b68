"""Comparison jobs (spsamp/comparison.py): arms composed and validated before any model loads,
decoded in ABBA order on models loaded once, resumable per arm, a failed prompt failing one arm only,
and a plain job's rows and keys unchanged."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT, compose_cfg, kill9_when, run_py
from spsamp.comparison import abba_order, arm_overrides, compose_arms, merged_overrides
from spsamp.config import ConfigError
from spsamp.records.rows import JobInfo
from spsamp.runner import Job, resume_key, run_job

BASE = ["model=tiny_random", "generation.max_new_tokens=6", "dataset.max_samples=3", "generation.warmup=0",
        "hardware.num_threads=1"]
TWO_ARMS = ["+compare.arms.base={method:baseline}", "+compare.arms.sps={method:speculative,method.k:3}"]


def arms_of(overrides):
    cfg = compose_cfg(overrides)
    return compose_arms(cfg, overrides, compose_cfg)


def comparison(tmp_path, *extra: str):
    overrides = [*BASE, *TWO_ARMS, *extra]
    return run_job(compose_cfg(overrides), JobInfo(output_dir=str(tmp_path), overrides=overrides), compose=compose_cfg)


# ---- configuration -----------------------------------------------------------------------------


def test_arms_compose_from_the_job_overrides_and_their_own():
    arms = arms_of([*BASE, "generation.max_new_tokens=5", *TWO_ARMS, '+compare.arms.hf=["method=hf_assisted","method.k=2"]'])
    assert [a.name for a in arms] == ["base", "sps", "hf"]
    assert [a.params.name for a in arms] == ["baseline", "speculative", "hf_assisted"]
    assert [getattr(a.params, "k", None) for a in arms] == [None, 3, 2]
    assert all(a.run.generation.max_new_tokens == 5 for a in arms)  # the job's overrides reach every arm
    assert arm_overrides("x", {"method": "speculative", "method.k": 4}) == ["method=speculative", "method.k=4"]


def test_only_narrows_the_arms_and_the_reference_must_stay():
    assert [a.name for a in arms_of([*BASE, *TWO_ARMS, "compare.only=[sps]"])] == ["sps"]
    with pytest.raises(ConfigError, match=r"^compare.only: no arm named \['nope'\]"):
        arms_of([*BASE, *TWO_ARMS, "compare.only=[nope]"])
    with pytest.raises(ConfigError, match=r"^compare.reference: 'base' is not among the arms run"):
        arms_of([*BASE, *TWO_ARMS, "compare.reference=base", "compare.only=[sps]"])


@pytest.mark.parametrize("arm, field", [
    ("{method:no_such_method}", "compare.arms.bad: "),  # does not compose
    ("{method:speculative,method.k:0}", "compare.arms.bad: method.k"),  # does not validate
    ("{method:speculative,method.nope:1}", "compare.arms.bad: "),  # unknown key
    ("{dataset.max_samples:2}", "compare.arms.bad: changes dataset"),  # would break the pairing
])
def test_a_bad_arm_is_one_config_error_naming_it(arm, field):
    with pytest.raises(ConfigError) as err:
        arms_of([*BASE, *TWO_ARMS, f"+compare.arms.bad={arm}"])
    assert str(err.value).startswith(field) and "\n" not in str(err.value)


def test_a_bad_arm_fails_run_py_before_any_model_loads(tmp_path):
    proc = run_py([*BASE, *TWO_ARMS, "+compare.arms.bad={method:speculative,method.k:0}", f"hydra.run.dir={tmp_path}/r"], check=False)
    assert proc.returncode == 2
    assert "config error: compare.arms.bad: method.k" in proc.stderr + proc.stdout
    assert "models ready" not in proc.stderr + proc.stdout and not (tmp_path / "r" / "records.jsonl").exists()


def test_an_arm_that_picks_a_group_owns_it():
    job = ["experiment=sweep_autojudge_threshold", "method.threshold=0.5", "generation.seed=3"]
    assert merged_overrides(job, ["method=baseline"]) == ["experiment=sweep_autojudge_threshold", "generation.seed=3", "method=baseline"]
    arms = {a.name: a for a in arms_of(job)}
    assert arms["baseline"].params.name == "baseline" and arms["autojudge"].params.threshold == 0.5


def test_abba_order():
    assert [abba_order("AB", i) for i in range(4)] == [["A", "B"], ["B", "A"], ["A", "B"], ["B", "A"]]
    assert abba_order("ABC", 1) == ["C", "B", "A"]


# ---- running -----------------------------------------------------------------------------------


def test_arms_interleave_abba_share_models_and_carry_their_names(tmp_path, monkeypatch):
    import spsamp.models.loading as loading

    loading.clear_model_cache()
    built = []
    real = loading._build
    monkeypatch.setattr(loading, "_build", lambda spec, *a, **k: built.append(spec.name) or real(spec, *a, **k))
    comparison(tmp_path)
    df = pd.read_parquet(tmp_path / "records.parquet").sort_values("started_at")
    assert len(df) == 6 and (df.status == "ok").all() and df.resume_key.is_unique
    assert list(df.arm) == ["base", "sps", "sps", "base", "base", "sps"]  # ABBA, prompt by prompt
    assert list(df.prompt_id) == [p for p in df.prompt_id.drop_duplicates() for _ in range(2)]
    assert set(df.reference_arm) == {"base"} and df.comparison.nunique() == 1
    assert df.comparison.iloc[0] == tmp_path.name
    # each row records its accepted lengths: a histogram over its steps (vLLM's per-request metric)
    assert (df.accept_len_hist.map(sum) == df.steps).all()
    kept = df.accept_len_hist.map(lambda h: sum(i * n for i, n in enumerate(h)))
    assert (kept == (df.avg_tokens_per_step * df.steps).round()).all()
    # one target and one draft object for both arms (the baseline's target is the speculative arm's)
    assert sorted(built) == sorted({n for n in built}) and len(built) == 2


def test_a_plain_job_keeps_its_rows_and_keys(tmp_path):
    overrides = [*BASE]
    cfg = compose_cfg(overrides)
    run_job(cfg, JobInfo(output_dir=str(tmp_path), overrides=overrides))
    df = pd.read_parquet(tmp_path / "records.parquet")
    assert df.arm.isna().all() and df.comparison.isna().all() and df.reference_arm.isna().all()
    job = Job(cfg, JobInfo(output_dir=str(tmp_path / "other")))
    arm = job.arms[0]
    # the key a plain job always had: no arm in the identity
    assert [t.key for t in arm.tasks] == [resume_key(arm.run, arm.params, t.prompt, t.turn, t.repeat) for t in arm.tasks]
    assert set(df.resume_key) == {t.key for t in arm.tasks}


def test_an_a_a_control_keeps_two_sets_of_rows(tmp_path):
    overrides = [*BASE, "+compare.arms.a={method:baseline}", "+compare.arms.b={method:baseline}"]
    run_job(compose_cfg(overrides), JobInfo(output_dir=str(tmp_path), overrides=overrides), compose=compose_cfg)
    df = pd.read_parquet(tmp_path / "records.parquet")
    assert len(df) == 6 and df.resume_key.is_unique and df.groupby("arm").size().to_dict() == {"a": 3, "b": 3}


def test_a_failing_prompt_fails_only_its_arm(tmp_path):
    overrides = [*BASE, *TWO_ARMS, '+compare.arms.broken=["method=baseline","+fail_on_prompt=writing-2"]']
    run_job(compose_cfg(overrides), JobInfo(output_dir=str(tmp_path), overrides=overrides), compose=compose_cfg)
    df = pd.read_parquet(tmp_path / "records.parquet").set_index(["arm", "prompt_id"])
    assert df.loc[("broken", "writing-2"), "status"] == "error"
    assert df.loc[("broken", "writing-2"), "error_type"] == "InjectedFailure"
    assert (df.drop(index=("broken", "writing-2")).status == "ok").all() and len(df) == 9


def test_an_arm_that_cannot_load_leaves_the_others(tmp_path):
    overrides = [*BASE, *TWO_ARMS, '+compare.arms.gone=["method=baseline","model.target.source=local","+model.target.id=/nonexistent/model"]']
    run_job(compose_cfg(overrides), JobInfo(output_dir=str(tmp_path), overrides=overrides), compose=compose_cfg)
    df = pd.read_parquet(tmp_path / "records.parquet")
    assert (df[df.arm == "gone"].status == "error").all() and len(df[df.arm == "gone"]) == 3
    assert (df[df.arm != "gone"].status == "ok").all() and len(df) == 9


def test_resume_redoes_only_the_missing_arm_rows(tmp_path):
    comparison(tmp_path)
    log = tmp_path / "records.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    first = [json.loads(ln) for ln in lines]
    # as if killed after the first arm of the second prompt: its second arm and the third prompt are missing
    log.write_text("".join(lines[:3]))
    (tmp_path / "records.parquet").unlink()
    comparison(tmp_path)
    df = pd.read_parquet(tmp_path / "records.parquet")
    assert len(df) == 6 and df.resume_key.is_unique and (df.status == "ok").all()
    assert set(df.resume_key) == {r["resume_key"] for r in first}
    kept = {r["resume_key"]: r["run_id"] for r in first[:3]}
    assert all(df.set_index("resume_key").run_id[k] == v for k, v in kept.items())
    assert (df.run_id != first[0]["run_id"]).sum() == 3


@pytest.mark.slow
def test_kill9_inside_a_comparison_then_relaunch_completes_it(tmp_path):
    args = ["-m", "experiment=smoke_compare", "dataset.max_samples=8", f"paths.output_dir={tmp_path}"]
    log = tmp_path / "sweeps" / "smoke_compare" / "default" / "records.jsonl"
    # mid-prompt: one arm of the third prompt done, the other not
    rc = kill9_when(args, lambda: log.exists() and len(log.read_text().splitlines()) >= 5, "the third prompt")
    assert rc == -signal.SIGKILL
    killed = pd.read_parquet(log.with_name("records.parquet")) if log.with_name("records.parquet").exists() else None
    done = [json.loads(x) for x in log.read_text().splitlines() if x.strip().endswith("}")]
    assert 5 <= len(done) < 16
    run_py(args)
    final = pd.read_parquet(log.with_name("records.parquet"))
    assert len(final) == 16 and final.resume_key.is_unique and (final.status == "ok").all()
    assert final.groupby("arm").size().to_dict() == {"baseline": 8, "speculative": 8}
    before = {r["resume_key"]: r["run_id"] for r in done}
    assert all(final.set_index("resume_key").run_id[k] == v for k, v in before.items())
    assert killed is None or killed.resume_key.is_unique


@pytest.mark.slow
def test_smoke_comparison_end_to_end_through_run_py(tmp_path):
    proc = run_py(["-m", "experiment=smoke_compare", f"paths.output_dir={tmp_path}"])
    sweep = tmp_path / "sweeps" / "smoke_compare"
    df = pd.read_parquet(sweep / "default" / "records.parquet")
    assert len(df) == 6 and (df.status == "ok").all() and set(df.arm) == {"baseline", "speculative"}
    assert df.comparison.iloc[0] == "smoke_compare/default"
    out = proc.stdout + proc.stderr
    assert "comparison `smoke_compare/default` on " in out and "| speculative |" in out  # the end-of-sweep paired table
    summ = subprocess.run([sys.executable, "-m", "spsamp.analysis", "summary", str(sweep)], cwd=ROOT, capture_output=True, text=True)
    assert summ.returncode == 0 and "speedup [95% CI]" in summ.stdout and "mean_accepted_tokens" in summ.stdout
    line = next(ln for ln in summ.stdout.splitlines() if ln.startswith("| baseline |"))
    assert "| reference |" in line and "| 1 |" in line  # plain decoding: 1.00 mean accepted tokens
    rep = subprocess.run([sys.executable, "-m", "spsamp.analysis", "report", str(sweep), "--out", str(tmp_path / "rep")],
                         cwd=ROOT, capture_output=True, text=True)
    assert rep.returncode == 0, rep.stderr[-2000:]
    table = pd.read_csv(tmp_path / "rep" / "tables" / "paired_speedup.csv")
    fast = table[table.arm == "speculative"].iloc[0]
    assert fast.n_prompts == 3 and fast.speedup_lo <= fast.speedup <= fast.speedup_hi
    assert "## Paired speedups (comparison jobs)" in (tmp_path / "rep" / "report.md").read_text()
    # adding an arm from the command line lands in the same job dir and decodes only the new arm
    proc = run_py(["-m", "experiment=smoke_compare", "+compare.arms.k2={method:speculative,method.k:2}", f"paths.output_dir={tmp_path}"])
    df2 = pd.read_parquet(sweep / "default" / "records.parquet")
    assert len(df2) == 9 and set(df2[df2.arm != "k2"].run_id) == set(df.run_id)
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["default"]
