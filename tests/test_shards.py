"""A job split into shards (dataset.shard / dataset.shards, spsamp/records/shards.py): each shard
decodes its own prompts into its own dir, nothing finished anywhere in the job is decoded again, and
the analysis reads the job dir and its shard dirs as one comparison."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pytest

from conftest import compose_cfg, run_py
from spsamp.config import ConfigError, validate
from spsamp.data import load_prompts, shard_prompts
from spsamp.records.shards import finished_elsewhere, job_dirs, job_root, read_finished
from spsamp.records.store import read_rows
from spsamp.sweeps import job_dirname


def test_shards_partition_the_prompts_in_order():
    run, _ = validate(compose_cfg(["dataset=arithmetic", "dataset.max_samples=11"]))
    prompts = load_prompts(run.dataset)
    for n in (1, 2, 3, 11, 15):
        parts = [shard_prompts(prompts, i, n) for i in range(n)]
        ids = [p.id for part in parts for p in part]
        assert sorted(ids) == sorted(p.id for p in prompts) and len(ids) == len(set(ids))  # disjoint, complete
        assert all([p.id for p in part] == [p.id for p in prompts if p in part] for part in parts)  # file order kept


@pytest.mark.parametrize("overrides, field", [
    (["dataset.shards=0"], "dataset.shards"),
    (["dataset.shards=2", "dataset.shard=2"], "dataset.shard"),
    (["dataset.shard=1"], "dataset.shard"),
    (["dataset.shards=3", "dataset.shard=-1"], "dataset.shard"),
])
def test_a_bad_shard_is_one_config_error_naming_its_field(overrides, field):
    with pytest.raises(ConfigError, match=rf"^{field}: .* — "):
        validate(compose_cfg(["model=tiny_random", *overrides]))


def test_a_shard_writes_into_its_own_subdir_of_the_job_dir():
    assert job_dirname("dataset=arithmetic,dataset.shard=1,dataset.shards=2") == "dataset=arithmetic/shard-1"
    assert job_dirname("dataset.shard=0,dataset.shards=4") == "default/shard-0"
    assert job_dirname("dataset.shards=4,method.k=2") == "method.k=2"  # the shard count is not the job
    assert job_dirname("dataset=arithmetic") == "dataset=arithmetic"


def _line(key: str, status: str = "ok") -> str:
    return json.dumps({"resume_key": key, "status": status}) + "\n"


def test_finished_rows_elsewhere_in_the_job_are_read_without_writing(tmp_path):
    root = tmp_path / "job"
    (root / "shard-0").mkdir(parents=True)
    (root / "shard-1").mkdir()
    (root / "shard-x").mkdir()  # not a shard dir
    (root / "records.jsonl").write_text(_line("a") + _line("b", "error"))
    (root / "shard-0" / "records.jsonl").write_text(_line("c"))
    torn = _line("d") + '{"resume_key": "e", "sta'  # a shard mid-append: its torn last line is not a row
    (root / "shard-1" / "records.jsonl").write_text(torn)
    (root / "shard-x" / "records.jsonl").write_text(_line("x"))
    assert job_root(root / "shard-1") == root and job_root(root) == root
    assert job_dirs(root / "shard-0") == [root, root / "shard-0", root / "shard-1"]
    assert set(read_finished(root)) == {"a"}  # an error row is not finished
    assert set(finished_elsewhere(root / "shard-0")) == {"a", "d"}
    assert set(finished_elsewhere(root)) == {"c", "d"}
    assert (root / "shard-1" / "records.jsonl").read_text() == torn  # read only: nothing repaired or rewritten
    assert not (root / "shard-1" / "records.parquet").exists()
    (root / "shard-0" / "records.parquet").write_bytes(b"PAR1 cut short")  # a mirror mid-write: its log still counts
    assert set(finished_elsewhere(root)) == {"c", "d"}
    with pytest.raises(pa.ArrowInvalid):
        read_rows(root / "shard-0")  # the strict reader says so


@pytest.mark.slow
def test_a_job_continued_in_shards_decodes_nothing_twice_and_analyses_as_one(tmp_path):
    from spsamp.analysis import load_records
    from spsamp.analysis.paired import paired_speedups

    common = ["-m", "experiment=smoke_compare", f"paths.output_dir={tmp_path}"]
    job = tmp_path / "sweeps" / "smoke_compare" / "default"
    run_py([*common, "dataset.max_samples=2"])  # started unsharded: prompts 0, 1
    run_py([*common, "dataset.max_samples=5", "dataset.shards=2", "dataset.shard=0,1"])  # 0, 2, 4 | 1, 3
    prompts = {d: set(pd.read_parquet(d / "records.parquet").prompt_id) for d in (job, job / "shard-0", job / "shard-1")}
    order = [p.id for p in load_prompts(validate(compose_cfg(["model=tiny_random", "dataset.max_samples=5"]))[0].dataset)]
    assert prompts == {job: set(order[:2]), job / "shard-0": {order[2], order[4]}, job / "shard-1": {order[3]}}
    # the whole job again, unsharded: everything is finished somewhere in it
    before = len(pd.read_parquet(job / "records.parquet"))
    run_py([*common, "dataset.max_samples=5"])
    assert len(pd.read_parquet(job / "records.parquet")) == before
    df = load_records(tmp_path / "sweeps" / "smoke_compare")
    assert len(df) == 10 and df.resume_key.is_unique and set(df.run_dir) == {str(job)}
    assert set(df.comparison) == {"smoke_compare/default"}
    sp = paired_speedups(df)
    assert sp.set_index("arm").loc["speculative", "n_prompts"] == 5  # one comparison over all five prompts


def test_a_shard_with_no_prompt_ends_cleanly_and_says_it_wrote_nothing(tmp_path):
    # more shards than prompts (an array job sized for a bigger set): the empty shard is not a failure
    out = tmp_path / "run"
    proc = run_py(["model=tiny_random", "dataset.max_samples=1", "dataset.shards=3", "dataset.shard=2",
                   "generation.max_new_tokens=4", f"hydra.run.dir={out}"])
    assert "no rows written to" in proc.stdout + proc.stderr and not (out / "records.parquet").exists()


def test_a_key_in_two_dirs_of_one_job_is_one_row(tmp_path):
    """As within one dir: the first finished row stands; an error row a shard redid is gone."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from spsamp.analysis import load_records
    from spsamp.records.schema import CORE_NAMES, schema_for

    def row(key, status, started, tps):
        r = {name: None for name in CORE_NAMES}
        r.update({"run_id": started[-2:], "resume_key": key, "status": status, "method": "baseline", "method_params": "{}",
                  "prompt_id": key, "turn": 0, "repeat": 0, "started_at": started, "tokens_per_sec": tps})
        return r

    job = tmp_path / "job"
    for d, rows in ((job, [row("a", "error", "2027-01-01T00:00:01", None), row("b", "ok", "2027-01-01T00:00:02", 5.0)]),
                    (job / "shard-0", [row("a", "ok", "2027-01-01T00:00:03", 7.0), row("b", "ok", "2027-01-01T00:00:04", 9.0)]),
                    (tmp_path / "other", [row("a", "error", "2027-01-01T00:00:05", None)])):
        d.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema_for(rows)), d / "records.parquet")
    df = load_records(tmp_path).set_index(["run_dir", "resume_key"])
    assert len(df) == 3
    assert df.loc[(str(job), "a"), "status"] == "ok" and df.loc[(str(job), "a"), "tokens_per_sec"] == 7.0
    assert df.loc[(str(job), "b"), "tokens_per_sec"] == 5.0  # the first finished row stands
    assert df.loc[(str(tmp_path / "other"), "a"), "status"] == "error"  # another job's row is its own
