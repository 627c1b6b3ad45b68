"""A run dir's records: ``records.jsonl`` is the append-only log, ``records.parquet`` is derived from it.

Each finished row is one JSONL line, appended and fsync'ed (a kill -9 can only cut the last line,
which the next open drops). The Parquet file and the summaries are rewritten whole, atomically
(temp file + rename), when the store closes at the end of a job and at most every
``parquet_every_s`` seconds in between — so their cost grows with the job's duration, not with the
square of its rows, and every file on disk is always readable.

Rows are keyed by ``resume_key``. A later line for a key replaces an earlier ``error`` line (a
rerun redoing a failed row); an ``ok`` row is never replaced. Opening a dir rebuilds whatever is
damaged from whatever is intact — Parquet from JSONL, JSONL from Parquet, both merged when each
holds rows the other lost — with a warning naming the damaged file, which is kept beside it as
``<name>.damaged`` rather than deleted.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from spsamp.records.schema import records_table

log = logging.getLogger(__name__)

RECORDS_PARQUET = "records.parquet"
RECORDS_JSONL = "records.jsonl"
SUMMARY_PARQUET = "summary.parquet"
SUMMARY_JSONL = "summary.jsonl"


class RecordsError(RuntimeError):
    """A run dir whose records cannot be used (unwritable dir, a finished row about to be replaced)."""


def file_mode() -> int:
    """The mode ``open()`` would give a new file under the current umask (``mkstemp`` gives 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the finished file over ``path`` in one rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _json_line(row: dict) -> str:
    return json.dumps(row, default=str, ensure_ascii=False) + "\n"


def _write_jsonl(rows: Iterable[dict], tmp: str) -> None:
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(_json_line(r) for r in rows)


def write_table(directory: Path, table: pa.Table, parquet_name: str, jsonl_name: str) -> None:
    """Both files of a small derived table (the summaries), each atomically."""
    atomic_write(directory / parquet_name, lambda tmp: pq.write_table(table, tmp))
    atomic_write(directory / jsonl_name, lambda tmp: _write_jsonl(table.to_pylist(), tmp))


def merge_row(rows: dict[str, dict], row: dict) -> bool:
    """Put ``row`` under its key unless that would replace an ``ok`` row; True if it was taken.
    The analysis keeps the same row across a job's dirs (``spsamp.analysis.load.one_row_per_key``);
    a test holds the two to one rule."""
    old = rows.get(row["resume_key"])
    if old is not None and old.get("status") == "ok":
        return False  # the first finished row stands: its timings are the measurement
    rows[row["resume_key"]] = row
    return True


# ---- reading -----------------------------------------------------------------------------------


class JsonlContents:
    """What :func:`read_jsonl` found: rows in file order, problems as ``(line number, message)``,
    and whether the last line was cut by a kill mid-append (no newline, not parseable)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.problems: list[tuple[int, str]] = []
        self.torn_tail: Optional[int] = None  # 1-based line number of a cut last line
        self.good_bytes = 0  # length of the prefix made of complete lines (where appends may resume)


def read_jsonl(path: Path) -> JsonlContents:
    """Parse a records JSONL file line by line, with real (1-based) line numbers for bad lines."""
    out = JsonlContents()
    data = path.read_bytes()
    lines = data.split(b"\n")
    ends_clean = data.endswith(b"\n") or not data
    if ends_clean:
        lines = lines[:-1]
    offset = 0
    for i, raw in enumerate(lines, start=1):
        last = i == len(lines)
        nbytes = len(raw) + (0 if last and not ends_clean else 1)
        if not raw.strip():
            offset += nbytes
            out.good_bytes = offset
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
            if not isinstance(row, dict) or not isinstance(row.get("resume_key"), str):
                raise ValueError("not a records row (no resume_key)")
        except (UnicodeDecodeError, ValueError) as exc:
            if last and not ends_clean:
                out.torn_tail = i
            else:
                out.problems.append((i, f"truncated or garbled line ({type(exc).__name__}: {str(exc)[:120]})"))
            offset += nbytes
            continue
        out.rows.append(row)
        offset += nbytes
        if not (last and not ends_clean):
            out.good_bytes = offset
    return out


def rows_by_key(rows: Iterable[dict]) -> dict[str, dict]:
    """The rows of a log, one per key (see :func:`merge_row`), in order of first appearance."""
    merged: dict[str, dict] = {}
    for row in rows:
        merge_row(merged, row)
    return merged


def read_rows(directory: Path, skip_unreadable: bool = False) -> dict[str, dict]:
    """A run dir's rows by key, read without writing anything: the log's intact lines, then the rows
    only the Parquet mirror holds (a log lost or cut short) — the rows :class:`RecordStore` would
    open with, before it repairs either file. ``skip_unreadable``: a file that cannot be read (a
    mirror mid-rename or damaged, a log gone) counts as empty instead of raising — for reading a dir
    another process writes (its own writer repairs it)."""
    jsonl, parquet = directory / RECORDS_JSONL, directory / RECORDS_PARQUET
    rows: dict[str, dict] = {}
    try:
        if jsonl.exists():
            rows = rows_by_key(read_jsonl(jsonl).rows)
        if parquet.exists():
            for row in pq.read_table(parquet).to_pylist():
                merge_row(rows, row)
    except Exception:  # noqa: BLE001 - pyarrow raises several types for a damaged or half-renamed file
        if not skip_unreadable:
            raise
    return rows


def _set_aside(path: Path) -> Path:
    aside = path.with_name(path.name + ".damaged")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.damaged{n}")
    os.replace(path, aside)
    return aside


# ---- the store ---------------------------------------------------------------------------------


class RecordStore:
    """The rows of one run dir: in memory, appended to ``records.jsonl`` one line per row, mirrored
    to ``records.parquet`` at :meth:`close` (and every ``parquet_every_s`` seconds)."""

    def __init__(self, directory: str | Path, parquet_every_s: float = 30.0):
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecordsError(f"cannot create the output dir {self.dir}: {exc.strerror or exc} — choose a writable "
                               "hydra.run.dir / paths.output_dir") from None
        if not os.access(self.dir, os.W_OK | os.X_OK):
            raise RecordsError(f"the output dir {self.dir} is not writable — choose a writable hydra.run.dir / paths.output_dir")
        self.parquet_every_s = parquet_every_s
        self._rows: dict[str, dict] = {}
        self._last_parquet = float("-inf")
        self._dirty = False
        self.added: dict[str, int] = {}  # status -> rows this store instance appended (this job's outcome)
        self._open()

    # ---- opening: rebuild whatever is damaged from whatever is intact ----

    def _open(self) -> None:
        jsonl, parquet = self.dir / RECORDS_JSONL, self.dir / RECORDS_PARQUET
        for name in (RECORDS_JSONL, RECORDS_PARQUET, SUMMARY_JSONL, SUMMARY_PARQUET):
            for tmp in self.dir.glob(f".{name}.*.tmp"):  # left by a writer killed before its rename
                tmp.unlink(missing_ok=True)
        rewrite_jsonl = False
        log_rows: list[dict] = []
        if jsonl.exists():
            found = read_jsonl(jsonl)
            log_rows = found.rows
            if found.problems:
                where = ", ".join(f"line {n}" for n, _ in found.problems[:5])
                more = f" and {len(found.problems) - 5} more" if len(found.problems) > 5 else ""
                aside = _set_aside(jsonl)
                log.warning("%s is damaged (%s%s: %s); rebuilt from its intact lines and %s, the damaged file kept as %s",
                            jsonl, where, more, found.problems[0][1], RECORDS_PARQUET, aside.name)
                rewrite_jsonl = True
            elif found.torn_tail is not None:
                # a kill cut the last append: drop the partial line so the next append starts clean
                log.warning("%s: dropped line %d, cut short by an interrupted write", jsonl, found.torn_tail)
                with open(jsonl, "r+b") as fh:
                    fh.truncate(found.good_bytes)
            elif found.good_bytes and not jsonl.read_bytes().endswith(b"\n"):
                with open(jsonl, "ab") as fh:  # a complete last line that only lacks its newline
                    fh.write(b"\n")
        self._rows = rows_by_key(log_rows)
        table_rows: list[dict] = []
        parquet_ok = False
        if parquet.exists():
            try:
                table_rows = pq.read_table(parquet).to_pylist()
                parquet_ok = True
            except Exception as exc:  # noqa: BLE001 - any unreadable Parquet is rebuilt the same way
                aside = _set_aside(parquet)
                log.warning("%s is damaged (%s: %s); rebuilding it from %s, the damaged file kept as %s",
                            parquet, type(exc).__name__, str(exc)[:160], RECORDS_JSONL, aside.name)
        # rows the log lost but the Parquet still holds (a deleted or damaged JSONL, an old layout)
        missing = [r for r in table_rows if merge_row(self._rows, r)]
        if missing:
            if jsonl.exists() and not rewrite_jsonl:
                log.warning("%s lacks %d rows that %s holds; restored them", jsonl, len(missing), RECORDS_PARQUET)
            rewrite_jsonl = True
        if rewrite_jsonl or (self._rows and not jsonl.exists()):
            atomic_write(jsonl, lambda tmp: _write_jsonl(self.rows, tmp))
        in_parquet = {(r["resume_key"], r.get("run_id"), r.get("status")) for r in table_rows}
        current = {(r["resume_key"], r.get("run_id"), r.get("status")) for r in self.rows}
        if self._rows and (not parquet_ok or in_parquet != current):
            self.write_parquet()  # stale after a kill, or rebuilt after damage

    # ---- reading ----

    @property
    def rows(self) -> list[dict]:
        return list(self._rows.values())

    def finished(self, key: str) -> dict | None:
        """The ``ok`` row stored under ``key``, if any."""
        row = self._rows.get(key)
        return row if row is not None and row["status"] == "ok" else None

    # ---- writing ----

    def add(self, row: dict) -> None:
        """Append one row (it replaces an ``error`` row of its key; an ``ok`` row is never replaced)."""
        if self.finished(row["resume_key"]) is not None:
            raise RecordsError(f"row {row['resume_key']} is already finished in {self.dir}; finished rows are never overwritten")
        # through the schema first: a row that cannot be stored fails here, before it reaches the log
        row = records_table([row]).to_pylist()[0]
        with open(self.dir / RECORDS_JSONL, "a", encoding="utf-8") as fh:
            fh.write(_json_line(row))
            fh.flush()
            os.fsync(fh.fileno())
        self._rows[row["resume_key"]] = row
        self.added[row["status"]] = self.added.get(row["status"], 0) + 1
        self._dirty = True
        if time.monotonic() - self._last_parquet >= self.parquet_every_s:
            self.write_parquet()

    def write_parquet(self) -> None:
        rows = self.rows
        table = records_table(rows)
        atomic_write(self.dir / RECORDS_PARQUET, lambda tmp: pq.write_table(table, tmp))
        self._last_parquet = time.monotonic()
        self._dirty = False

    def flush(self) -> None:
        """Rewrite every derived file (Parquet and summaries) from the rows in memory."""
        if self._rows:
            self.write_parquet()
            self.write_summary()

    def close(self) -> None:
        if self._dirty or not (self.dir / SUMMARY_PARQUET).exists():
            self.flush()

    def __enter__(self) -> "RecordStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def write_summary(self) -> None:
        from spsamp.records.summary import STORE_KEYS, summarize, summary_schema

        df = summarize(pd.DataFrame(self.rows), STORE_KEYS)
        table = pa.Table.from_pandas(df, schema=summary_schema(), preserve_index=False)
        write_table(self.dir, table, SUMMARY_PARQUET, SUMMARY_JSONL)
