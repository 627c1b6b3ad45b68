"""Records: the schema of a run's rows and their atomic, resumable Parquet + JSONL files."""

from spsamp.records.schema import CORE_NAMES, PARAM_PREFIX, schema_for, validate_table
from spsamp.records.store import RECORDS_JSONL, RECORDS_PARQUET, SUMMARY_PARQUET, RecordStore, atomic_write

__all__ = [
    "CORE_NAMES",
    "PARAM_PREFIX",
    "RECORDS_JSONL",
    "RECORDS_PARQUET",
    "SUMMARY_PARQUET",
    "RecordStore",
    "atomic_write",
    "schema_for",
    "validate_table",
]
