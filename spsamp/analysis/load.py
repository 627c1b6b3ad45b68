"""Read every ``records.parquet`` under runs and sweeps into one pandas DataFrame.

Files written by different spsamp versions or methods carry different column sets (``param_*``
columns depend on the method; newer versions may add core columns). The schemas are unified with
pyarrow's permissive promotion (int64 + float64 -> float64, a column missing in one file -> null);
a column whose types cannot be promoted (e.g. int in one file, string in another) is read as
string. Error rows are kept and flagged (``is_error``), so failures show up next to results.
A run whose ``records.jsonl`` log is newer than its Parquet mirror (a job still running, or killed
between two mirrorings) is read from both, as the next launch would rebuild it: rows are never
missed for being logged but not yet mirrored.
"""

from __future__ import annotations

import glob
import json
import logging
import tempfile
from pathlib import Path
from typing import Iterable, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from spsamp.records.schema import CORE_FIELDS, PARAM_PREFIX, records_table
from spsamp.records.store import RECORDS_JSONL, RECORDS_PARQUET, read_rows
from spsamp.records.shards import job_root

log = logging.getLogger(__name__)

METRIC_PREFIX = "metric_"
# knobs always shown in a configuration's label; other parameters only where they differ
MAIN_PARAMS = ("param_k", "param_threshold", "param_budget", "param_parallel_branches")
PathLike = Union[str, Path]


def find_record_files(paths: Union[PathLike, Iterable[PathLike]]) -> list[Path]:
    """``records.parquet`` files named by ``paths``: files, directories (searched recursively) or globs."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    found: list[Path] = []
    for item in items:
        p = Path(item).expanduser()
        matches = [p] if p.exists() else [Path(m) for m in sorted(glob.glob(str(p), recursive=True))]
        for m in matches:
            found.extend(sorted(m.rglob(RECORDS_PARQUET)) if m.is_dir() else [m])
    unique = list(dict.fromkeys(f.resolve() for f in found if f.is_file()))
    if not unique:
        raise FileNotFoundError(f"no {RECORDS_PARQUET} found under {paths!r} — pass a run dir, a sweep dir or outputs/")
    return unique


def _unify(schemas: list[pa.Schema]) -> pa.Schema:
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    # incompatible types somewhere: keep the first type of each field, string where they disagree
    types: dict[str, pa.DataType] = {}
    for schema in schemas:
        for field in schema:
            t = types.get(field.name)
            if t is None:
                types[field.name] = field.type
            elif not t.equals(field.type):
                numeric = pa.types.is_integer(t) or pa.types.is_floating(t)
                numeric_too = pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
                types[field.name] = pa.float64() if numeric and numeric_too else pa.string()
    return pa.schema([pa.field(n, t) for n, t in types.items()])


def _current(f: Path, copy: Path) -> Path:
    """``f``, or, where the run's log is newer than this mirror of it, ``copy``: the rows rebuilt
    from both (the log's rows, then the mirror's rows the log lacks), as the store does."""
    log_file = f.with_name(RECORDS_JSONL)
    if f.name != RECORDS_PARQUET or not log_file.exists() or log_file.stat().st_mtime <= f.stat().st_mtime:
        return f
    pq.write_table(records_table(list(read_rows(f.parent).values())), copy)
    return copy


def load_table(paths: Union[PathLike, Iterable[PathLike]]) -> pa.Table:
    """All records as one Arrow table (unified schema) plus a ``source_file`` column."""
    with tempfile.TemporaryDirectory(prefix="spsamp-load-") as tmp:
        files, schemas = {}, []
        for i, f in enumerate(find_record_files(paths)):
            try:
                read = _current(f, Path(tmp) / f"{i}.parquet")
                schemas.append(pq.read_schema(read))
                files[str(read)] = str(f)
            except Exception as exc:  # noqa: BLE001 - one unreadable file must not hide the others
                log.warning("skipping unreadable %s: %s", f, exc)
        if not files:
            raise FileNotFoundError(f"no readable {RECORDS_PARQUET} under {paths!r}")
        schema = _unify(schemas)
        # core columns an older writer did not have still exist, as nulls
        for field in CORE_FIELDS:
            if field.name not in schema.names:
                schema = schema.append(pa.field(field.name, field.type))
        dataset = ds.dataset(list(files), schema=schema, format="parquet")
        parts = []
        for frag in dataset.get_fragments():
            t = frag.to_table(schema=schema)
            parts.append(t.append_column("source_file", pa.array([files[frag.path]] * t.num_rows, pa.string())))
        return pa.concat_tables(parts)


def expand_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Scalar entries of ``metrics_json`` as ``metric_<key>`` columns (nested dicts joined by ``_``)."""

    def flat(obj: object, prefix: str, out: dict) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                flat(v, f"{prefix}{k}_" if isinstance(v, dict) else f"{prefix}{k}", out)
        elif obj is None or isinstance(obj, (bool, int, float, str)):
            out[prefix.rstrip("_")] = obj

    records = []
    for text in df.get("metrics_json", pd.Series([None] * len(df), index=df.index)):
        out: dict = {}
        if isinstance(text, str) and text:
            try:
                flat(json.loads(text), "", out)
            except (json.JSONDecodeError, TypeError):
                log.warning("unparseable metrics_json: %.80s", text)
        records.append(out)
    metrics = pd.DataFrame.from_records(records, index=df.index)
    if metrics.empty or not len(metrics.columns):
        return df
    metrics.columns = [f"{METRIC_PREFIX}{c}" for c in metrics.columns]
    metrics = metrics[[c for c in metrics.columns if c not in df.columns]]
    for c in metrics.columns:  # numeric where every present value is a number
        converted = pd.to_numeric(metrics[c], errors="coerce")
        if converted.notna().sum() == metrics[c].notna().sum():
            metrics[c] = converted
    return pd.concat([df, metrics], axis=1)


def label_params(df: pd.DataFrame) -> dict[str, list[str]]:
    """Per method, the ``param_*`` columns its label shows: MAIN_PARAMS it has, plus any parameter
    with more than one value among that method's rows (a checkpoint path that never changes is noise)."""
    params = sorted(c for c in df.columns if c.startswith(PARAM_PREFIX))
    out: dict[str, list[str]] = {}
    for method, rows in df.groupby("method", sort=False):
        out[method] = [
            c for c in params
            if rows[c].notna().any() and (c in MAIN_PARAMS or rows[c].dropna().astype(str).nunique() > 1)
        ]
    return out


def config_labels(df: pd.DataFrame) -> pd.Series:
    """:func:`config_label` of every row, with :func:`label_params` chosen over ``df``."""
    if df.empty:
        return pd.Series([], index=df.index, dtype=object)
    shown = label_params(df)
    return pd.Series([config_label(r, shown.get(r["method"], [])) for _, r in df.iterrows()], index=df.index, dtype=object)


def config_label(row: pd.Series, param_cols: list[str]) -> str:
    """``speculative k=2`` — the method and its non-null parameters (ints without ``.0``)."""
    parts = []
    for c in param_cols:
        v = row.get(c)
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        parts.append(f"{c[len(PARAM_PREFIX):]}={v}")
    return " ".join([str(row["method"])] + parts)


def batch_throughput(df: pd.DataFrame) -> pd.DataFrame:
    """``batch_size`` 1 where records predate batching (they decoded one prompt at a time), and
    ``batch_tokens_per_sec``: each ok row's batch's aggregate throughput, the new tokens of every
    row of the batch (``run_id``, ``arm``, ``batch_index``) over its wall time (null where unknown)."""
    df["batch_size"] = df["batch_size"].fillna(1).astype("int64")
    ok = df[df["status"].eq("ok") & df["batch_index"].notna()]
    keys = [ok["run_id"], ok["arm"].fillna(""), ok["batch_index"]]
    tokens = ok.groupby(keys)["new_tokens"].transform("sum")
    df["batch_tokens_per_sec"] = (tokens / ok["wall_time_s"]).reindex(df.index)
    return df


def dataset_labels(df: pd.DataFrame) -> pd.Series:
    """``df.dataset`` with rows of a harder arithmetic set labelled ``arithmetic-d<difficulty>``: rows
    written before the label carried the difficulty say ``arithmetic``, and only their prompt ids
    (``arith-d3-...``) tell the sets apart."""
    difficulty = df["prompt_id"].astype(str).str.extract(r"^arith-d(\d+)-", expand=False)
    old = df["dataset"].eq("arithmetic") & difficulty.notna()
    return df["dataset"].where(~old, "arithmetic-d" + difficulty)


def one_row_per_key(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (job dir, resume key), as one dir's store keeps them (:func:`spsamp.records.store.merge_row`), across
    the dirs of a job (its shards): the first ``ok`` row stands, else the key's last row. A key is
    in two dirs of one job only where two launches decoded the same prompt at once."""
    if df.empty or "resume_key" not in df.columns:
        return df
    order = df.assign(_i=np.arange(len(df)), _ok=df["status"].eq("ok"))
    when = pd.to_datetime(order["started_at"], utc=True, errors="coerce") if "started_at" in order else pd.Series(pd.NaT, index=order.index)
    order = order.assign(_t=when).sort_values(["_ok", "_t", "_i"], ascending=[False, True, True], na_position="last", kind="stable")
    ok = order[order["_ok"]].drop_duplicates(["run_dir", "resume_key"], keep="first")
    rest = order[~order["_ok"]].drop_duplicates(["run_dir", "resume_key"], keep="last")
    rest = rest[~rest.set_index(["run_dir", "resume_key"]).index.isin(ok.set_index(["run_dir", "resume_key"]).index)]
    return pd.concat([ok, rest]).sort_values("_i").drop(columns=["_i", "_ok", "_t"]).reset_index(drop=True)


def load_records(path_or_glob: Union[PathLike, Iterable[PathLike]], metrics: bool = True) -> pd.DataFrame:
    """Every ``records.parquet`` under ``path_or_glob`` (a run dir, a sweep dir, ``outputs/``, a file,
    a glob, or a list of those) as one DataFrame.

    ``dataset`` labels a harder arithmetic set's older rows as newer ones are (:func:`dataset_labels`).
    Added columns: ``source_file``, ``run_dir`` (the job dir: a shard dir's parent,
    :mod:`spsamp.records.shards`), ``is_error`` (status == "error"), ``ok``
    (status == "ok"), ``batch_tokens_per_sec`` (:func:`batch_throughput`), ``config`` (a label: the method, its k / threshold / budget /
    parallel_branches, and any other parameter that differs between its runs) and, with ``metrics=True``,
    ``metric_<key>`` for each scalar in ``metrics_json``.
    """
    df = load_table(path_or_glob).to_pandas()
    df["run_dir"] = df["source_file"].map(lambda p: str(job_root(Path(p).parent)))  # a shard's rows are its job's
    df = one_row_per_key(df)
    df["dataset"] = dataset_labels(df)
    df["is_error"] = df["status"].eq("error")
    df["ok"] = df["status"].eq("ok")
    df["config"] = config_labels(df)
    df = batch_throughput(df)
    if metrics:
        df = expand_metrics(df)
    n_err = int(df["is_error"].sum())
    log.info("loaded %d rows (%d errors) from %d files", len(df), n_err, df["source_file"].nunique())
    return df
