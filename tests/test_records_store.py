"""The append-only record store without a model: appends, damage and rebuild, never overwriting a
finished row, the validator on both files, file modes under the umask, and the one summary."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest

from spsamp.records import RECORDS_JSONL, RECORDS_PARQUET, SUMMARY_PARQUET, RecordsError, RecordStore
from spsamp.records.summary import SUMMARY_COLUMNS, summarize


def row(i: int, status: str = "ok", run: str = "r1", **extra) -> dict:
    base = {"run_id": run, "resume_key": f"k{i}", "status": status, "method": "baseline", "prompt_id": f"p{i}", "turn": 1,
            "new_tokens": 10, "wall_time_s": 2.0, "ttft_s": 0.1, "target_calls": 10, "generated_ids": list(range(10))}
    return {**base, **extra}


def filled(tmp_path, n=4, **kw) -> RecordStore:
    with RecordStore(tmp_path, **kw) as store:
        for i in range(n):
            store.add(row(i))
    return store


def validate(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spsamp.records", "validate", str(path)], capture_output=True, text=True)


def test_rows_are_appended_one_line_each_and_parquet_is_written_at_close(tmp_path):
    store = RecordStore(tmp_path, parquet_every_s=3600)
    store.add(row(0))  # the first row always reaches the Parquet: a fresh dir has a readable file at once
    store.add(row(1))
    assert len((tmp_path / RECORDS_JSONL).read_text().splitlines()) == 2
    assert pq.read_table(tmp_path / RECORDS_PARQUET).num_rows == 1  # derived, not rewritten per row
    store.close()
    assert pq.read_table(tmp_path / RECORDS_PARQUET).num_rows == 2
    assert pd.read_parquet(tmp_path / SUMMARY_PARQUET).loc[0, "ok"] == 2


def test_arms_whose_params_differ_in_type_share_one_store(tmp_path):
    # a comparison's arms in one job dir: k=4 beside k=auto, a number beside none
    with RecordStore(tmp_path, parquet_every_s=0) as store:
        store.add(row(0, param_k=4, param_threshold=0.5))
        store.add(row(1, param_k="auto", param_threshold=1))
        store.add(row(2, param_k=None))
    table = pq.read_table(tmp_path / RECORDS_PARQUET)
    assert table.column("param_k").to_pylist() == ["4", "auto", None]
    assert table.column("param_threshold").to_pylist() == [0.5, 1.0, None]
    assert validate(tmp_path).returncode == 0
    assert [r["param_k"] for r in RecordStore(tmp_path).rows] == [4, "auto", None]  # the log keeps each row's own value


def test_a_finished_row_is_never_overwritten(tmp_path):
    store = filled(tmp_path, 1)
    with pytest.raises(RecordsError, match="never overwritten"):
        store.add(row(0, status="error"))
    # an error row is replaced when its key is redone; the log keeps both lines, readers see the last
    store.add(row(7, status="error"))
    store.add(row(7))
    store.close()
    again = RecordStore(tmp_path)
    assert again.finished("k7") is not None and len(again.rows) == 2


def test_stale_parquet_after_a_kill_is_rebuilt_from_the_log(tmp_path):
    store = RecordStore(tmp_path, parquet_every_s=3600)
    for i in range(3):
        store.add(row(i))
    del store  # killed: no close, the Parquet holds only the first row
    assert pq.read_table(tmp_path / RECORDS_PARQUET).num_rows == 1
    (tmp_path / f".{RECORDS_PARQUET}.abc123.tmp").write_bytes(b"half a rewrite")  # killed mid-rewrite
    assert len(RecordStore(tmp_path).rows) == 3
    assert not list(tmp_path.glob(".*.tmp"))
    assert pq.read_table(tmp_path / RECORDS_PARQUET).num_rows == 3


def test_analysis_reads_rows_logged_but_not_yet_mirrored_without_touching_the_run(tmp_path):
    """A job killed (or still running) between two Parquet mirrorings: the analysis reads the
    log's rows too, names the run's own file as their source, and writes nothing into the run dir."""
    import time

    from spsamp.analysis import load_records

    run = tmp_path / "run"
    store = RecordStore(run, parquet_every_s=3600)
    store.add(row(0, status="error"))  # mirrored at once: the first add writes the Parquet
    time.sleep(0.01)
    store.add(row(0))  # the retry that finished it, and two more, only in the log
    for i in (1, 2):
        store.add(row(i))
    del store
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    df = load_records(tmp_path, metrics=False)
    assert sorted(df["resume_key"]) == ["k0", "k1", "k2"] and set(df["status"]) == {"ok"}
    assert set(df["source_file"]) == {str((run / RECORDS_PARQUET).resolve())}
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    assert pq.read_table(run / RECORDS_PARQUET).num_rows == 1  # the mirror is the next launch's to rebuild
    filled(tmp_path / "closed", n=2)  # a closed run reads from its Parquet alone, beside it
    assert len(load_records(tmp_path, metrics=False)) == 5


def test_line_cut_by_a_kill_is_dropped_and_appends_go_on(tmp_path, caplog):
    filled(tmp_path, 2)
    with open(tmp_path / RECORDS_JSONL, "a") as fh:
        fh.write(json.dumps(row(2))[:40])  # killed mid-append
    with caplog.at_level(logging.WARNING):
        store = RecordStore(tmp_path)
    assert "line 3" in caplog.text and "interrupted" in caplog.text
    assert len(store.rows) == 2
    store.add(row(3))
    store.close()
    lines = (tmp_path / RECORDS_JSONL).read_text().splitlines()
    assert [json.loads(ln)["resume_key"] for ln in lines] == ["k0", "k1", "k3"]


def test_damaged_parquet_is_rebuilt_from_jsonl_with_a_warning(tmp_path, caplog):
    filled(tmp_path, 3)
    data = (tmp_path / RECORDS_PARQUET).read_bytes()
    (tmp_path / RECORDS_PARQUET).write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        store = RecordStore(tmp_path)
    assert f"{RECORDS_PARQUET} is damaged" in caplog.text and RECORDS_JSONL in caplog.text
    assert len(store.rows) == 3 and pq.read_table(tmp_path / RECORDS_PARQUET).num_rows == 3
    assert (tmp_path / (RECORDS_PARQUET + ".damaged")).exists()  # kept, not deleted


def test_deleted_parquet_loses_nothing_and_keeps_original_rows(tmp_path):
    filled(tmp_path, 3)
    before = (tmp_path / RECORDS_JSONL).read_text()
    (tmp_path / RECORDS_PARQUET).unlink()
    store = RecordStore(tmp_path)
    assert {r["resume_key"] for r in store.rows} == {"k0", "k1", "k2"}  # nothing pending: nothing re-decoded
    assert (tmp_path / RECORDS_JSONL).read_text() == before  # the log's rows (and timings) untouched


def test_garbled_jsonl_line_is_restored_from_parquet(tmp_path, caplog):
    filled(tmp_path, 3)
    lines = (tmp_path / RECORDS_JSONL).read_text().splitlines(keepends=True)
    lines[1] = lines[1][:25] + "\n"  # damage in the middle of the log
    (tmp_path / RECORDS_JSONL).write_text("".join(lines))
    res = validate(tmp_path)
    assert res.returncode == 1 and f"{RECORDS_JSONL}: line 2: truncated or garbled" in res.stderr
    with caplog.at_level(logging.WARNING):
        store = RecordStore(tmp_path)
    assert f"{RECORDS_JSONL} is damaged (line 2" in caplog.text
    assert {r["resume_key"] for r in store.rows} == {"k0", "k1", "k2"}
    assert validate(tmp_path).returncode == 0  # both files whole again
    assert (tmp_path / (RECORDS_JSONL + ".damaged")).exists()


def test_deleted_jsonl_is_rebuilt_from_parquet(tmp_path):
    filled(tmp_path, 2)
    (tmp_path / RECORDS_JSONL).unlink()
    assert len(RecordStore(tmp_path).rows) == 2
    assert len((tmp_path / RECORDS_JSONL).read_text().splitlines()) == 2


def test_validate_checks_both_files_with_real_line_numbers(tmp_path):
    filled(tmp_path, 3)
    ok = validate(tmp_path)
    assert ok.returncode == 0 and ok.stdout.count("ok (3 rows)") == 2, ok.stderr
    text = (tmp_path / RECORDS_JSONL).read_text()
    (tmp_path / RECORDS_JSONL).write_text(text[: len(text) - 30])  # last line cut
    res = validate(tmp_path)
    assert res.returncode == 1 and "line 3: truncated last line" in res.stderr
    res = validate(tmp_path / RECORDS_JSONL)  # a file on its own too
    assert res.returncode == 1 and "line 3" in res.stderr


def test_unwritable_output_dir_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RecordsError, match="cannot create the output dir"):
        RecordStore(blocker / "run")


def test_files_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        filled(tmp_path, 2)
    finally:
        os.umask(old)
    for name in (RECORDS_JSONL, RECORDS_PARQUET, SUMMARY_PARQUET):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_one_summary_pools_ok_rows_and_counts_errors():
    df = pd.DataFrame([row(0), row(1, wall_time_s=8.0, new_tokens=30, target_calls=15), row(2, status="error")])
    s = summarize(df, ["method"])
    assert list(s.columns) == ["method", *SUMMARY_COLUMNS]
    r = s.iloc[0]
    assert (r.rows, r.ok, r.errors, r.prompts, r.new_tokens) == (3, 2, 1, 2, 40)
    assert r.tokens_per_sec == pytest.approx(40 / 10) and r.tokens_per_target_call == pytest.approx(40 / 25)
    assert pd.isna(r.acceptance)  # no drafter: no acceptance, not 0


WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from test_records_store import row
from spsamp.records import RecordStore
store = RecordStore({dir!r}, parquet_every_s=0)  # rewrite the Parquet on every row: the widest window
done = {{r["resume_key"] for r in store.rows}}
for i in range(100000):
    if f"k{{i}}" not in done:
        store.add(row(i, generated_text="x" * (i % 5000)))
"""


def test_kill9_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    import random
    import signal
    import time
    from pathlib import Path

    code = WRITER.format(tests=str(Path(__file__).parent), dir=str(tmp_path))
    rng = random.Random(0)
    seen = 0
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = (tmp_path / RECORDS_JSONL).stat().st_size if (tmp_path / RECORDS_JSONL).exists() else 0
        deadline = time.monotonic() + 60
        while not ((tmp_path / RECORDS_JSONL).exists() and (tmp_path / RECORDS_JSONL).stat().st_size > start):
            assert proc.poll() is None and time.monotonic() < deadline, "the writer never appended"
            time.sleep(0.01)
        time.sleep(rng.random())  # then kill at a random moment: mid-append, mid-rewrite or between
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        store = RecordStore(tmp_path)  # repairs the tail, brings the Parquet up to date
        keys = [r["resume_key"] for r in store.rows]
        assert len(keys) == len(set(keys)) and len(keys) >= seen  # nothing lost, nothing twice
        assert keys == [f"k{i}" for i in range(len(keys))]  # no gap: every appended row survived
        seen = len(keys)
        assert pq.read_table(tmp_path / RECORDS_PARQUET).num_rows == seen
        assert validate(tmp_path).returncode == 0
    assert seen > 0


def test_the_analysis_keeps_the_same_row_per_key_as_the_store():
    """``load.one_row_per_key`` is the DataFrame form of ``store.merge_row``: on any log of retries
    (errors, repeats, a finished row followed by later attempts) both keep the same row per key."""
    import random

    from spsamp.analysis.load import one_row_per_key
    from spsamp.records.store import rows_by_key

    rng = random.Random(7)
    for _ in range(50):
        log = []
        for t in range(rng.randint(1, 30)):
            i = rng.randrange(5)
            log.append(row(i, status=rng.choice(["ok", "error", "skipped"]), started_at=f"2026-01-01T00:00:{t:02d}+00:00", attempt=t))
        store_rows = rows_by_key(log)
        frame = one_row_per_key(pd.DataFrame(log).assign(run_dir="job"))
        assert sorted(frame["attempt"]) == sorted(r["attempt"] for r in store_rows.values())
        assert dict(zip(frame["resume_key"], frame["attempt"])) == {k: r["attempt"] for k, r in store_rows.items()}
