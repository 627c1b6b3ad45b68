"""Atomic, resumable record files in a run's output dir: Parquet and JSONL with the same rows.

Every ``add`` rewrites both files through a temp file and ``os.replace``, so a crash or ``kill -9``
leaves either the previous complete file or the new one — never half a Parquet or a torn JSONL
line. Rows are keyed by ``resume_key``; a re-run into the same dir skips keys already ``ok`` and
replaces error rows when it redoes them.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from spsamp.records.schema import SUMMARY_FIELDS, schema_for

RECORDS_PARQUET = "records.parquet"
RECORDS_JSONL = "records.jsonl"
SUMMARY_PARQUET = "summary.parquet"
SUMMARY_JSONL = "summary.jsonl"


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the finished file over ``path`` in one rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_jsonl(rows: list[dict], tmp: str) -> None:
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, default=str, ensure_ascii=False) + "\n")


def write_rows(directory: Path, rows: list[dict], schema: pa.Schema, parquet_name: str, jsonl_name: str) -> None:
    table = pa.Table.from_pylist(rows, schema=schema)
    atomic_write(directory / parquet_name, lambda tmp: pq.write_table(table, tmp))
    atomic_write(directory / jsonl_name, lambda tmp: _write_jsonl(table.to_pylist(), tmp))


class RecordStore:
    """The rows of one run dir, kept in memory and mirrored to disk after every change."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._rows: dict[str, dict] = {}
        path = self.dir / RECORDS_PARQUET
        if path.exists():
            for row in pq.read_table(path).to_pylist():
                self._rows[row["resume_key"]] = row

    @property
    def rows(self) -> list[dict]:
        return list(self._rows.values())

    def finished(self, key: str) -> dict | None:
        """The ``ok`` row stored under ``key``, if any."""
        row = self._rows.get(key)
        return row if row is not None and row["status"] == "ok" else None

    def add(self, row: dict) -> None:
        self._rows[row["resume_key"]] = row
        self.flush()

    def flush(self) -> None:
        rows = self.rows
        write_rows(self.dir, rows, schema_for(rows), RECORDS_PARQUET, RECORDS_JSONL)
        write_rows(self.dir, summarize(rows), pa.schema(SUMMARY_FIELDS), SUMMARY_PARQUET, SUMMARY_JSONL)


def _median(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else None


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def summarize(rows: list[dict]) -> list[dict]:
    """One row per (run, method, params): medians of timings over ok rows; rates pooled over tokens."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["run_id"], row["method"], row.get("method_params")), []).append(row)
    out = []
    for (run_id, method, params), grp in groups.items():
        ok = [r for r in grp if r["status"] == "ok"]
        tokens = sum(r["new_tokens"] or 0 for r in ok)
        proposed = sum(r.get("proposed") or 0 for r in ok)
        steps = sum(r.get("steps") or 0 for r in ok)
        step_tokens = sum((r.get("avg_tokens_per_step") or 0) * (r.get("steps") or 0) for r in ok)
        out.append({
            "run_id": run_id, "method": method, "method_params": params,
            "model": grp[0].get("model"), "draft_model": grp[0].get("draft_model"), "dataset": grp[0].get("dataset"),
            "rows": len(grp), "ok": len(ok), "errors": sum(r["status"] == "error" for r in grp),
            "new_tokens": tokens,
            "median_tokens_per_sec": _median([r["tokens_per_sec"] for r in ok]),
            "median_ttft_s": _median([r["ttft_s"] for r in ok]),
            "median_prefill_s": _median([r["prefill_s"] for r in ok]),
            "median_decode_tokens_per_sec": _median([r["decode_tokens_per_sec"] for r in ok]),
            "acceptance_rate": _ratio(sum(r.get("accepted") or 0 for r in ok), proposed),
            "avg_tokens_per_step": _ratio(step_tokens, steps),
            "target_calls_per_token": _ratio(sum(r.get("target_calls") or 0 for r in ok), tokens),
            "draft_calls_per_token": _ratio(sum(r.get("draft_calls") or 0 for r in ok), tokens),
        })
    return out
