"""Building one records row (see ``schema.py`` for the columns): what ran, where, and what came out.

:class:`RowBuilder` holds what every row of a job shares (config, method parameters, loaded
models, the job's place in a sweep); the runner asks it for an ``ok`` row from a decode's output
or an ``error`` row from an exception.
"""

from __future__ import annotations

import dataclasses
import json
import os
import traceback
from datetime import datetime, timezone
from typing import Any, Optional

import torch

from spsamp.config import RunConfig, params_dict
from spsamp.records.schema import PARAM_PREFIX
from spsamp.system_info import system_info


@dataclasses.dataclass
class JobInfo:
    """Where a job sits in a sweep; stamped on its rows."""

    output_dir: str
    overrides: list[str] = dataclasses.field(default_factory=list)
    job_num: Optional[int] = None
    sweep_dir: Optional[str] = None


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


def histogram(lengths: list[int]) -> Optional[list[int]]:
    """counts[i] = number of steps that kept i tokens (index 0 unused by current methods)."""
    if not lengths:
        return None
    counts = [0] * (max(lengths) + 1)
    for n in lengths:
        counts[n] += 1
    return counts


@dataclasses.dataclass
class RowBuilder:
    """The columns every row of one job shares. Records are data: what the loaded models say about
    themselves arrives as plain values once they load (``CausalLM.info`` dicts, the placement JSON)."""

    run: RunConfig
    params: Any
    method: str
    needs_draft: bool
    job: JobInfo
    run_id: str
    target_info: Optional[dict] = None  # CausalLM.info of the loaded target (dtype, cpu_linear...)
    draft_info: Optional[dict] = None  # ... of the loaded draft, None without one
    device_map: Optional[str] = None  # spsamp.models.placement.placement_json of both models
    speculative: bool = False  # the method proposes draft tokens, with a draft model or without (prompt_lookup)
    comparison: Optional[str] = None  # a comparison job's name (spsamp.comparison); None in a plain job
    arm: Optional[str] = None  # this configuration's arm in it
    reference_arm: Optional[str] = None  # the arm its speedups are paired against

    def base(self, *, key: str, prompt_id: str, category: Optional[str], turn: int, repeat: int, status: str,
             started: str) -> dict[str, Any]:
        """Identity, settings and machine columns (``turn`` 0-based here, 1-based in the row)."""
        run, gen = self.run, self.run.generation
        params = params_dict(self.params)
        draft_spec = run.model.draft if self.needs_draft else None
        row: dict[str, Any] = {
            "run_id": self.run_id,
            "resume_key": key,
            "status": status,
            "started_at": started,
            "method": self.method,
            "method_params": json.dumps(params, sort_keys=True, default=str),
            "model_preset": run.model.name,
            "model": run.model.target.name,
            "draft_model": draft_spec.name if draft_spec else None,
            # the dtype the loaded model computes in (int8_dynamic: float32), else the configured one
            "target_dtype": self.target_info["dtype"] if self.target_info else run.hardware.dtype or run.model.target.dtype,
            "draft_dtype": (self.draft_info["dtype"] if self.draft_info else run.hardware.dtype or draft_spec.dtype) if draft_spec else None,
            "target_quantization": run.model.target.quantization,
            "draft_quantization": draft_spec.quantization if draft_spec else None,
            "device": run.model.target.device or run.hardware.device,
            "device_map": self.device_map,
            "cpu_linear": self.target_info.get("cpu_linear") if self.target_info else None,
            # a harder arithmetic set is another dataset: its label says so, as its prompt ids do
            "dataset": run.dataset.name if run.dataset.difficulty == 1 else f"{run.dataset.name}-d{run.dataset.difficulty}",
            "prompt_id": prompt_id,
            "category": category,
            "turn": turn + 1,
            "repeat": repeat,
            "max_new_tokens": gen.max_new_tokens,
            "temperature": gen.temperature,
            "top_p": gen.top_p,
            "top_k": gen.top_k,
            "seed": gen.seed,
            "use_chat_template": gen.use_chat_template,
            "batch_size": gen.batch_size,
            "output_dir": self.job.output_dir,
            "job_overrides": json.dumps(self.job.overrides),
            "comparison": self.comparison,
            "arm": self.arm,
            "reference_arm": self.reference_arm,
            "job_num": self.job.job_num,
            "sweep_dir": self.job.sweep_dir,
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_array_job_id": os.environ.get("SLURM_ARRAY_JOB_ID"),
            "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
            "num_threads": torch.get_num_threads(),
            **system_info(),
        }
        row.update({f"{PARAM_PREFIX}{k}": v for k, v in params.items() if k != "name"})
        return row

    def ok(self, base: dict[str, Any], *, prompt_tokens: int, tokens: list[int], text: str, wall_s: float,
           out: Any) -> dict[str, Any]:
        """``base`` plus output, timings and method counters of one decode (``out``: a DecodeOutput;
        ``tokens``: its tokens cut at EOS / max_new_tokens)."""
        s, n = out.stats, len(tokens)
        has_draft = self.draft_info is not None
        drafts = has_draft or self.speculative
        decode_s = wall_s - out.ttft_s
        row = dict(base)
        row.update({
            "prompt_tokens": prompt_tokens,
            "new_tokens": n,
            "generated_text": text,
            "generated_ids": tokens,
            "wall_time_s": wall_s,
            "prefill_s": out.prefill_s,
            "decode_s": decode_s,
            "ttft_s": out.ttft_s,
            "tokens_per_sec": n / wall_s if wall_s > 0 else None,
            "decode_tokens_per_sec": (n - 1) / decode_s if n > 1 and decode_s > 0 else None,
            "steps": s.steps,
            "target_calls": s.target_calls,
            "draft_calls": s.draft_calls,
            "target_calls_per_token": s.target_calls / n if n else None,
            "draft_calls_per_token": s.draft_calls / n if n and has_draft else None,
            "proposed": s.proposed if drafts else None,
            "accepted": s.accepted if drafts else None,
            "rejections": s.rejections if drafts else None,
            "acceptance_rate": s.accepted / s.proposed if s.proposed else None,
            "avg_tokens_per_step": sum(s.accepted_lengths) / len(s.accepted_lengths) if s.accepted_lengths else None,
            "accept_len_hist": histogram(s.accepted_lengths),
            "metrics_json": json.dumps(s.extra, default=float) if s.extra else None,
        })
        return row

    @staticmethod
    def error(base: dict[str, Any], exc: BaseException) -> dict[str, Any]:
        """``base`` plus the exception's type, message and traceback."""
        row = dict(base)
        row.update({
            "error_type": type(exc).__name__,
            "error_message": str(exc),
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        })
        return row
