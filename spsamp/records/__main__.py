"""``python -m spsamp.records validate <path>``: check a records.parquet / records.jsonl file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq

from spsamp.records.schema import schema_for, validate_table


def read_any(path: Path) -> pa.Table:
    if path.suffix == ".parquet":
        return pq.read_table(path)
    if path.suffix == ".jsonl":
        # types come from the schema, not from guessing over JSON values
        import json

        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return pa.Table.from_pylist(rows, schema=schema_for(rows))
    return pj.read_json(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spsamp.records")
    sub = parser.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="check a records file against the schema")
    v.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    bad = 0
    for path in args.paths:
        if path.is_dir():
            path = path / "records.parquet"
        try:
            table = read_any(path)
        except Exception as exc:  # noqa: BLE001 - report any unreadable file the same way
            sys.stderr.write(f"{path}: unreadable ({type(exc).__name__}: {exc})\n")
            bad += 1
            continue
        problems = validate_table(table)
        for p in problems:
            sys.stderr.write(f"{path}: {p}\n")
        bad += bool(problems)
        if not problems:
            sys.stdout.write(f"{path}: ok ({table.num_rows} rows)\n")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
