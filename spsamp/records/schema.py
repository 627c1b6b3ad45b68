"""The record schema: one row per (prompt, turn, repeat) of a run — shared by writer, tests and users.

Core columns are fixed here (names are a public contract: notebooks rely on them). Method
parameters are flattened into ``param_<name>`` columns (``param_k``, ``param_budget``...), whose
set depends on the method; they are the only columns allowed beyond the core ones.
"""

from __future__ import annotations

import pyarrow as pa

PARAM_PREFIX = "param_"

_S, _I, _F, _B = pa.string(), pa.int64(), pa.float64(), pa.bool_()

CORE_FIELDS: list[pa.Field] = [
    # identity
    pa.field("run_id", _S, nullable=False),
    pa.field("resume_key", _S, nullable=False),
    pa.field("status", _S, nullable=False),  # ok | error
    pa.field("started_at", _S),
    pa.field("method", _S, nullable=False),
    pa.field("method_params", _S),  # JSON of every method parameter
    pa.field("model_preset", _S),
    pa.field("model", _S),
    pa.field("draft_model", _S),
    pa.field("target_dtype", _S),
    pa.field("draft_dtype", _S),
    pa.field("target_quantization", _S),
    pa.field("draft_quantization", _S),
    pa.field("device", _S),
    pa.field("device_map", _S),
    pa.field("cpu_linear", _S),  # linear kernels the target ran with on the CPU (aten | onednn | split), null off the CPU
    pa.field("dataset", _S),
    pa.field("prompt_id", _S),
    pa.field("category", _S),
    pa.field("turn", _I),
    pa.field("repeat", _I),
    # generation settings
    pa.field("max_new_tokens", _I),
    pa.field("temperature", _F),
    pa.field("top_p", _F),
    pa.field("top_k", _I),
    pa.field("seed", _I),
    pa.field("use_chat_template", _B),
    pa.field("batch_size", _I),  # generation.batch_size: prompts decoded together (1: one at a time)
    # output and timing
    pa.field("prompt_tokens", _I),
    pa.field("prompt_truncated_from", _I),  # the prompt's length before dataset.truncate=left cut it; null: not cut
    pa.field("new_tokens", _I),
    pa.field("generated_text", _S),
    pa.field("generated_ids", pa.list_(_I)),
    pa.field("wall_time_s", _F),
    pa.field("prefill_s", _F),
    pa.field("decode_s", _F),
    pa.field("ttft_s", _F),
    pa.field("tokens_per_sec", _F),
    pa.field("decode_tokens_per_sec", _F),
    # the batch the row was decoded in (every row of a batch has the batch's wall_time_s): one batch
    # is (run_id, arm, batch_index); its aggregate tokens/s = sum(new_tokens) / wall_time_s
    pa.field("batch_index", _I),  # the arm's batch counter within the run (run_id)
    pa.field("batch_padding", _I),  # left-padding tokens of the batch's prompts (0 for a batch of one)
    pa.field("peak_mem_bytes", _I),  # CUDA: the batch's peak allocated bytes; CPU: the process's resident high-water mark
    # answer quality (spsamp.data.checkers); null where the dataset has no checker
    pa.field("task_correct", _B),  # the answer is right (HumanEval: its tests pass; arithmetic: the final number)
    pa.field("task_check", _S),  # why: passed | failed | syntax_error | timeout | no_code | ... (TASK_CHECKS)
    # method metrics (null where a method has no such thing)
    pa.field("steps", _I),
    pa.field("target_calls", _I),
    pa.field("draft_calls", _I),
    pa.field("target_calls_per_token", _F),
    pa.field("draft_calls_per_token", _F),
    pa.field("proposed", _I),
    pa.field("accepted", _I),
    pa.field("rejections", _I),
    pa.field("acceptance_rate", _F),
    pa.field("avg_tokens_per_step", _F),
    pa.field("accept_len_hist", pa.list_(_I)),
    pa.field("metrics_json", _S),  # method-specific extras (tree sizes, judge stats, ...)
    # failure
    pa.field("error_type", _S),
    pa.field("error_message", _S),
    pa.field("traceback", _S),
    # job identity (sweeps, SLURM)
    pa.field("output_dir", _S),
    pa.field("job_overrides", _S),
    # a comparison job (spsamp/comparison.py): its name, this row's arm, the arm speedups pair with; null in a plain job
    pa.field("comparison", _S),
    pa.field("arm", _S),
    pa.field("reference_arm", _S),
    pa.field("job_num", _I),
    pa.field("sweep_dir", _S),
    pa.field("slurm_job_id", _S),
    pa.field("slurm_array_job_id", _S),
    pa.field("slurm_array_task_id", _S),
    # system
    pa.field("git_sha", _S),
    pa.field("hostname", _S),
    pa.field("cpu_model", _S),
    pa.field("num_threads", _I),
    pa.field("gpu_name", _S),
    pa.field("gpu_driver", _S),
    pa.field("cuda_runtime", _S),
    pa.field("python_version", _S),
    pa.field("torch_version", _S),
    pa.field("transformers_version", _S),
    pa.field("spsamp_version", _S),
    pa.field("display_active", _B),
]
CORE_NAMES = [f.name for f in CORE_FIELDS]
_CORE = {f.name: f for f in CORE_FIELDS}
# Columns added after records were first written (2026-11). Files from before lack them; they load
# as nulls (spsamp.analysis.load_records) and validate. A new column goes here too, or every old
# records dir stops validating (tests/test_old_records.py holds real pre-lock files).
ADDED_LATER = frozenset({"task_correct", "task_check", "prompt_truncated_from", "comparison", "arm", "reference_arm",
                         "batch_size", "batch_index", "batch_padding", "peak_mem_bytes"})
STATUSES = ("ok", "error")


def param_type(value: object) -> pa.DataType:
    if isinstance(value, bool):
        return _B
    if isinstance(value, int):
        return _I
    if isinstance(value, float):
        return _F
    return _S


def schema_for(rows: list[dict]) -> pa.Schema:
    """Core fields plus the ``param_*`` columns present in ``rows`` (sorted, typed from values)."""
    params: dict[str, pa.DataType] = {}
    for row in rows:
        for k, v in row.items():
            if k.startswith(PARAM_PREFIX) and v is not None:
                t = param_type(v)
                if params.get(k) not in (None, t):
                    t = _F if {params[k], t} == {_I, _F} else _S
                params[k] = t
            elif k.startswith(PARAM_PREFIX):
                params.setdefault(k, _S)
    return pa.schema(CORE_FIELDS + [pa.field(k, params[k]) for k in sorted(params)])


def records_table(rows: list[dict]) -> pa.Table:
    """``rows`` as an Arrow table of :func:`schema_for`'s schema. A ``param_*`` column whose rows
    disagree on the type (a comparison's arms: ``k=4`` beside ``k=auto``) is a string column, and
    its numbers are written as strings there."""
    schema = schema_for(rows)
    mixed = {f.name for f in schema if f.name.startswith(PARAM_PREFIX) and f.type == _S}
    if mixed:
        rows = [{k: (str(v) if k in mixed and v is not None and not isinstance(v, str) else v) for k, v in row.items()}
                for row in rows]
    return pa.Table.from_pylist(rows, schema=schema)


def _check_task_columns(table: pa.Table) -> list[str]:
    """task_check takes a known value, is set wherever task_correct is (task_correct is null only
    where nothing was checked or the check could not run), and says ``passed`` exactly where
    task_correct is true."""
    # lazy: the checker module owns the values
    from spsamp.data.checkers import NO_NET_ISOLATION, TASK_CHECKS, UNKNOWN, known_task_check, verdict

    if "task_check" not in table.column_names or "task_correct" not in table.column_names:
        return []  # records from before these columns existed
    checks, correct = table.column("task_check").to_pylist(), table.column("task_correct").to_pylist()
    out = []
    unknown = sorted({c for c in checks if c is not None and not known_task_check(c)})
    if unknown:
        out.append(f"column 'task_check' has unknown values {unknown} (known: {list(TASK_CHECKS)}, sandbox verdicts "
                   f"optionally suffixed {NO_NET_ISOLATION!r})")
    if any((c is None) != (k is None) and not (k is None and verdict(c) in UNKNOWN) for c, k in zip(checks, correct)):
        out.append(f"columns 'task_check' and 'task_correct' must be null on the same rows (task_correct alone may be null for {list(UNKNOWN)})")
    if any(k is not None and bool(k) != (verdict(c) == "passed") for c, k in zip(checks, correct)):
        out.append("column 'task_correct' must be true exactly where task_check is 'passed'")
    return out


def validate_table(table: pa.Table) -> list[str]:
    """Problems with a records table (empty list: valid)."""
    problems: list[str] = []
    names = set(table.column_names)
    for name in CORE_NAMES:
        if name not in names:
            if name not in ADDED_LATER:
                problems.append(f"missing column {name!r}")
        elif not table.schema.field(name).type.equals(_CORE[name].type):
            problems.append(f"column {name!r} has type {table.schema.field(name).type}, expected {_CORE[name].type}")
    for name in names - set(CORE_NAMES):
        if not name.startswith(PARAM_PREFIX):
            problems.append(f"unexpected column {name!r} (only {PARAM_PREFIX}* columns may be added)")
    if problems:
        return problems
    for name in ("run_id", "resume_key", "status", "method"):
        if table.column(name).null_count:
            problems.append(f"column {name!r} has nulls")
    statuses = set(table.column("status").to_pylist())
    if statuses - set(STATUSES):
        problems.append(f"unknown status values {sorted(statuses - set(STATUSES))}")
    problems += _check_task_columns(table)
    keys = table.column("resume_key").to_pylist()
    if len(keys) != len(set(keys)):
        problems.append("duplicate resume_key values")
    return problems
