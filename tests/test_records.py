"""Records: schema round trip, validation CLI, resume, error rows, atomic writes."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import compose_cfg, run_py
from spsamp.records import RECORDS_JSONL, RECORDS_PARQUET, SUMMARY_PARQUET, RecordStore, validate_table
from spsamp.records.schema import CORE_NAMES
from spsamp.runner import JobInfo, run_job

REQUIRED = [
    "run_id", "resume_key", "status", "method", "model", "draft_model", "dataset", "prompt_id", "category", "turn",
    "repeat", "prompt_tokens", "new_tokens", "generated_text", "generated_ids", "wall_time_s", "ttft_s", "tokens_per_sec",
    "acceptance_rate", "avg_tokens_per_step", "error_type", "error_message", "traceback", "git_sha", "hostname",
    "torch_version", "transformers_version", "display_active",
]


def tiny_job(tmp_path, *extra: str, samples: int = 3):
    cfg = compose_cfg(["model=tiny_random", "generation.max_new_tokens=10", f"dataset.max_samples={samples}", *extra])
    return run_job(cfg, JobInfo(output_dir=str(tmp_path)))


def test_contract_columns_exist():
    assert set(REQUIRED) <= set(CORE_NAMES)


def test_run_writes_same_rows_to_parquet_and_jsonl(tmp_path):
    tiny_job(tmp_path, "generation.repeats=2", "dataset.turns=both")
    df = pd.read_parquet(tmp_path / RECORDS_PARQUET)
    assert len(df) == 3 * 2 * 2  # prompts x repeats x turns: one tidy row per answer
    assert set(df.status) == {"ok"} and set(df.turn) == {1, 2} and set(df["repeat"]) == {0, 1}
    assert df.resume_key.is_unique
    assert (df.new_tokens == df.generated_ids.map(len)).all()
    assert (df.tokens_per_sec > 0).all() and (df.ttft_s <= df.wall_time_s).all()
    assert (df.target_calls_per_token == 1.0).all() and df.acceptance_rate.isna().all()
    lines = (tmp_path / RECORDS_JSONL).read_text().splitlines()
    assert [json.loads(ln)["resume_key"] for ln in lines] == list(df.resume_key)
    assert validate_table(pq.read_table(tmp_path / RECORDS_PARQUET)) == []
    summary = pd.read_parquet(tmp_path / SUMMARY_PARQUET)
    assert summary.loc[0, "ok"] == 12 and summary.loc[0, "new_tokens"] == df.new_tokens.sum()


def test_second_turn_follows_the_first_answer(tmp_path):
    tiny_job(tmp_path, "dataset.turns=both", samples=1)
    df = pd.read_parquet(tmp_path / RECORDS_PARQUET).sort_values("turn")
    first, second = df.iloc[0], df.iloc[1]
    # the second prompt contains the first prompt, the model's answer and the new user turn
    assert second.prompt_tokens > first.prompt_tokens + first.new_tokens


def test_resume_skips_finished_rows(tmp_path):
    tiny_job(tmp_path)
    store = RecordStore(tmp_path)
    rows = store.rows
    assert len(rows) == 3
    # drop one row on disk, as if the run had been killed before it: the log lacks its line and
    # the Parquet, derived from the log, was last written before it
    jsonl = tmp_path / RECORDS_JSONL
    lines = jsonl.read_text().splitlines(keepends=True)
    jsonl.write_text("".join(ln for ln in lines if rows[1]["resume_key"] not in ln))
    (tmp_path / RECORDS_PARQUET).unlink()
    before = {r["resume_key"]: r["run_id"] for r in RecordStore(tmp_path).rows}
    tiny_job(tmp_path)
    after = pd.read_parquet(tmp_path / RECORDS_PARQUET)
    assert len(after) == 3 and after.resume_key.is_unique
    redone = after[~after.resume_key.isin(before)]
    assert list(redone.resume_key) == [rows[1]["resume_key"]]  # exactly the missing row came back
    kept = after[after.resume_key.isin(before)]
    assert (kept.run_id == kept.resume_key.map(before)).all()  # finished rows untouched


def test_changed_settings_are_new_rows_not_resumed(tmp_path):
    tiny_job(tmp_path)
    tiny_job(tmp_path, "generation.temperature=0.7")
    df = pd.read_parquet(tmp_path / RECORDS_PARQUET)
    assert len(df) == 6 and sorted(df.temperature.unique()) == [0.0, 0.7]


@pytest.mark.parametrize("aliases", [True, False])
def test_rows_keyed_by_an_earlier_version_are_resumed_not_redone(tmp_path, monkeypatch, aliases):
    """Rows written while speculative's added-later options (stop_below, the lookup ones) still sat
    in a row's identity at their defaults keep counting as finished (runner: the keys of
    config.legacy_identities); without those keys (the negative control) they would be decoded again."""
    import spsamp.runner as runner
    from spsamp.config import params_dict

    with monkeypatch.context() as patch:
        patch.setattr(runner, "identity_params", params_dict)  # that version's identity: every param
        tiny_job(tmp_path, "method=speculative", samples=2)
    if not aliases:
        monkeypatch.setattr(runner, "legacy_identities", lambda params: [])
    cfg = compose_cfg(["model=tiny_random", "generation.max_new_tokens=10", "dataset.max_samples=2", "method=speculative"])
    assert len(runner.Job(cfg, JobInfo(output_dir=str(tmp_path))).pending) == (0 if aliases else 2)


def test_failing_prompt_becomes_error_row_and_run_goes_on(tmp_path):
    tiny_job(tmp_path, "+fail_on_prompt=writing-2")
    df = pd.read_parquet(tmp_path / RECORDS_PARQUET).set_index("prompt_id")
    assert df.loc["writing-2", "status"] == "error"
    assert df.loc["writing-2", "error_type"] == "InjectedFailure"
    assert "fail_on_prompt" in df.loc["writing-2", "traceback"]
    assert (df.drop(index="writing-2").status == "ok").all() and len(df) == 3
    # a later run without the fault redoes only the error row
    tiny_job(tmp_path)
    df2 = pd.read_parquet(tmp_path / RECORDS_PARQUET)
    assert len(df2) == 3 and set(df2.status) == {"ok"}


def test_model_that_cannot_load_records_error_rows_and_keeps_finished(tmp_path):
    tiny_job(tmp_path, samples=2)
    with pytest.raises(Exception):
        tiny_job(tmp_path, "model.target.source=local", "+model.target.id=/nonexistent/model", samples=3)
    df = pd.read_parquet(tmp_path / RECORDS_PARQUET)
    assert (df.status == "ok").sum() == 2  # the first job's rows survive
    err = df[df.status == "error"]
    assert len(err) == 3 and set(err.error_type) == {"ModelLoadError"}


def test_validate_cli(tmp_path):
    tiny_job(tmp_path, samples=1)
    ok = subprocess.run([sys.executable, "-m", "spsamp.records", "validate", str(tmp_path / RECORDS_PARQUET), str(tmp_path / RECORDS_JSONL)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    df = pd.read_parquet(tmp_path / RECORDS_PARQUET).drop(columns=["hostname"]).assign(extra_col=1)
    bad = tmp_path / "bad.parquet"
    df.to_parquet(bad)
    res = subprocess.run([sys.executable, "-m", "spsamp.records", "validate", str(bad)], capture_output=True, text=True)
    assert res.returncode == 1
    assert "missing column 'hostname'" in res.stderr and "unexpected column 'extra_col'" in res.stderr


def test_atomic_write_leaves_old_file_when_writer_dies(tmp_path):
    from spsamp.records import atomic_write

    target = tmp_path / "f.txt"
    target.write_text("complete\n")

    def dies(tmp):
        with open(tmp, "w") as fh:
            fh.write("half")
        raise KeyboardInterrupt  # as if killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, dies)
    assert target.read_text() == "complete\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temp file left behind


def test_default_hydra_run_lands_under_outputs_and_multirun(tmp_path):
    # a real multirun with the basic launcher, into tmp_path
    run_py(["-m", "model=tiny_random", "generation.max_new_tokens=6", "dataset.max_samples=2",
            "generation.temperature=0,0.7", f"hydra.sweep.dir={tmp_path}/sweep"])
    parts = sorted((tmp_path / "sweep").glob("*/records.parquet"))
    assert len(parts) == 2
    df = pd.concat(pd.read_parquet(p) for p in parts)
    assert sorted(df.temperature.unique()) == [0.0, 0.7] and len(df) == 4
    assert df.job_num.notna().all() and df.sweep_dir.notna().all()
    assert df.job_overrides.map(lambda s: "generation.temperature" in s).all()


def test_cpu_model_names_the_widest_matrix_instructions():
    from spsamp.system_info import cpu_model

    xeon = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2 avx512f avx512_bf16 {}\n"
    assert cpu_model(xeon.format("amx_bf16 amx_tile")) == "Intel(R) Xeon(R) Processor (AMX)"  # one name, two machines
    assert cpu_model(xeon.format("")) == "Intel(R) Xeon(R) Processor (AVX-512 bf16)"
    assert cpu_model("model name\t: AMD EPYC 9B14\nflags\t: fpu avx2\n") == "AMD EPYC 9B14 (AVX2)"
    assert cpu_model("model name\t: Some ARM core\nFeatures\t: fp asimd\n") == "Some ARM core"
