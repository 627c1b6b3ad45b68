"""Records: the schema of a run's rows, how a row is built, the append-only store and its one summary."""

from spsamp.records.schema import CORE_NAMES, PARAM_PREFIX, schema_for, validate_table
from spsamp.records.store import (
    RECORDS_JSONL,
    RECORDS_PARQUET,
    SUMMARY_JSONL,
    SUMMARY_PARQUET,
    RecordsError,
    RecordStore,
    atomic_write,
    file_mode,
)

__all__ = [
    "CORE_NAMES",
    "PARAM_PREFIX",
    "RECORDS_JSONL",
    "RECORDS_PARQUET",
    "SUMMARY_JSONL",
    "SUMMARY_PARQUET",
    "RecordStore",
    "RecordsError",
    "atomic_write",
    "file_mode",
    "schema_for",
    "validate_table",
]
