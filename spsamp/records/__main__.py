"""``python -m spsamp.records validate <run dir or file ...>``: check records files against the schema.

A run dir is checked as a whole: ``records.jsonl`` (the log, line by line, with the real line
number of any truncated or garbled line), ``records.parquet`` (readable, valid) and whether the
Parquet holds exactly the log's rows (a Parquet a kill left behind the log is stale, not damaged:
reported, and rebuilt by the next run into the dir).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq

from spsamp.records.schema import records_table, validate_table
from spsamp.records.store import RECORDS_JSONL, RECORDS_PARQUET, read_jsonl, rows_by_key


def check_jsonl(path: Path) -> tuple[list[str], list[dict]]:
    """(problems, rows one per key) of a records JSONL log."""
    found = read_jsonl(path)
    problems = [f"line {n}: {msg}" for n, msg in found.problems]
    if found.torn_tail is not None:
        problems.append(f"line {found.torn_tail}: truncated last line (a write cut short; the next run into the dir drops it)")
    rows = list(rows_by_key(found.rows).values())
    try:
        table = records_table(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        return problems + [f"rows do not fit the schema ({exc})"], rows
    return problems + validate_table(table), rows


def check_parquet(path: Path) -> tuple[list[str], list[dict]]:
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - report any unreadable file the same way
        return [f"unreadable ({type(exc).__name__}: {str(exc)[:200]})"], []
    return validate_table(table), table.to_pylist()


def check_file(path: Path) -> tuple[list[str], list[dict]]:
    if not path.exists():
        return ["does not exist"], []
    if path.suffix == ".parquet":
        return check_parquet(path)
    if path.suffix == ".jsonl":
        return check_jsonl(path)
    try:
        table = pj.read_json(path)
    except Exception as exc:  # noqa: BLE001
        return [f"unreadable ({type(exc).__name__}: {exc})"], []
    return validate_table(table), table.to_pylist()


def _ident(rows: list[dict]) -> set[tuple]:
    return {(r.get("resume_key"), r.get("run_id"), r.get("status")) for r in rows}


def check_dir(directory: Path, out=sys.stdout, err=sys.stderr) -> int:
    """Validate a run dir's two records files; return how many files have problems."""
    jsonl, parquet = directory / RECORDS_JSONL, directory / RECORDS_PARQUET
    if not jsonl.exists() and not parquet.exists():
        err.write(f"{directory}: no {RECORDS_JSONL} or {RECORDS_PARQUET} — pass a run dir\n")
        return 1
    bad = 0
    results = {}
    for path in (jsonl, parquet):
        if not path.exists():
            err.write(f"{path}: missing (the next run into {directory} rebuilds it from the other file)\n")
            bad += 1
            continue
        problems, rows = check_file(path)
        results[path.suffix] = (problems, rows)
        for p in problems:
            err.write(f"{path}: {p}\n")
        bad += bool(problems)
        if not problems:
            out.write(f"{path}: ok ({len(rows)} rows)\n")
    if ".jsonl" in results and ".parquet" in results and not results[".parquet"][0]:
        log_rows, table_rows = _ident(results[".jsonl"][1]), _ident(results[".parquet"][1])
        if table_rows - log_rows:
            err.write(f"{parquet}: {len(table_rows - log_rows)} rows not in {RECORDS_JSONL} — the log lost rows; the next run "
                      "into the dir restores them from the Parquet\n")
            bad += 1
        elif log_rows - table_rows:
            out.write(f"{parquet}: stale, {len(log_rows - table_rows)} of the log's rows not yet in it (a job killed before it "
                      "ended); the next run into the dir rewrites it\n")
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spsamp.records")
    sub = parser.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="check a run dir's records files (or single files) against the schema")
    v.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    bad = 0
    for path in args.paths:
        if path.is_dir():
            bad += check_dir(path)
            continue
        problems, rows = check_file(path)
        for p in problems:
            sys.stderr.write(f"{path}: {p}\n")
        bad += bool(problems)
        if not problems:
            sys.stdout.write(f"{path}: ok ({len(rows)} rows)\n")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
