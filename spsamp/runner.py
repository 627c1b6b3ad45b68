"""One job: validate the config, load prompts and models, decode every (prompt, turn, repeat), record.

Order matters: the config and the dataset are checked before any model loads, so bad input fails
in a second with one line. Rows already ``ok`` in the output dir are skipped (resume); a prompt
that raises becomes a ``status=error`` row and the run goes on; a job that cannot start at all
(e.g. a model that will not load) records an error row for each pending prompt, so a sweep shows
the failure where its results would be.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
import traceback
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm.auto import tqdm

from spsamp.config import GenerationConfig, RunConfig, params_dict, validate
from spsamp.data import Prompt, load_prompts
from spsamp.data.chat import encode, messages_for
from spsamp.data.checkers import task_columns
from spsamp.decoders.base import DecodeOutput, Decoder, truncate_at_eos
from spsamp.models import CausalLM, check_same_tokenizer, load_model
from spsamp.records import PARAM_PREFIX, RecordStore
from spsamp.sampling import row_generator
import spsamp.sweeps  # noqa: F401 - registers the sweep-dir resolvers that launcher workers resolve
from spsamp.models.placement import placement_json
from spsamp.models.threads import set_threads
from spsamp.system_info import check_machine, system_info

log = logging.getLogger(__name__)


class InjectedFailure(RuntimeError):
    """Raised on purpose by ``fail_on_prompt`` (tests of the error-row path)."""


@dataclasses.dataclass
class JobInfo:
    """Where a job sits in a sweep; stamped on its rows."""

    output_dir: str
    overrides: list[str] = dataclasses.field(default_factory=list)
    job_num: Optional[int] = None
    sweep_dir: Optional[str] = None


@dataclasses.dataclass
class Task:
    prompt: Prompt
    turn: int
    repeat: int
    key: str


def resume_key(run: RunConfig, params: Any, prompt: Prompt, turn: int, repeat: int) -> str:
    """Stable identity of one row: everything that changes its tokens, nothing that only times it."""
    g = asdict(run.generation)
    for timing_only in ("repeats", "warmup"):
        g.pop(timing_only)
    ident = {
        "method": params_dict(params),
        "model": asdict(run.model),
        "hardware_dtype": run.hardware.dtype,
        "device": run.hardware.device,
        # other kernels round differently (near-tied tokens may flip), so the setting is part of the
        # identity — the *configured* one (auto stays auto): the choice is made at load, after the
        # pending rows are known, and may differ run to run on a noisy machine; keying on it would
        # redo finished rows. The chosen kernel is in each row's cpu_linear column
        "cpu_linear": run.hardware.cpu_linear,
        "dataset": [run.dataset.name, run.dataset.path, run.dataset.system_prompt],
        "prompt": [prompt.id, prompt.turns[: turn + 1]],
        "turn": turn,
        "repeat": repeat,
        "generation": g,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:24]


def row_seed(seed: int, key: str) -> int:
    # per-row seed from the resume key: a resumed row samples exactly as it would have in order
    return (seed * 1_000_003 + int(key[:12], 16)) % (2**63)


class Job:
    def __init__(self, cfg: DictConfig, job: JobInfo):
        # 1. everything that can be checked without a model
        self.run, self.params = validate(cfg)
        check_machine(self.run)  # cuda present, no display when require_headless
        self.prompts = load_prompts(self.run.dataset)
        self.decoder: Decoder = instantiate(cfg.method)
        self.job = job
        self.store = RecordStore(job.output_dir)
        self.run_id = uuid.uuid4().hex[:12]
        self.tasks = [
            Task(p, t, r, resume_key(self.run, self.params, p, t, r))
            for p in self.prompts
            for r in range(self.run.generation.repeats)
            for t in range(len(p.turns))
        ]
        self.target: Optional[CausalLM] = None
        self.draft: Optional[CausalLM] = None
        self.warmup_s = 0.0
        self.setup_s = 0.0

    @property
    def pending(self) -> list[Task]:
        return [t for t in self.tasks if self.store.finished(t.key) is None]

    def execute(self) -> RecordStore:
        pending = self.pending
        done = len(self.tasks) - len(pending)
        if done:
            log.info("resume: %d of %d rows already finished in %s", done, len(self.tasks), self.job.output_dir)
        if not pending:
            return self.store
        try:
            t0 = time.perf_counter()
            self._load_models()
            self.setup_s = time.perf_counter() - t0  # model loads (memoised) + the decoder's prepare (e.g. a judge)
            self._warmup(pending[0])
        except Exception as exc:
            for task in pending:  # finished rows stay; only pending keys get error rows
                self._add_error(task, exc)
            raise
        answers: dict[tuple[str, int], list[str]] = {}
        for task in tqdm(self.tasks, desc=f"{self.decoder.name}", unit="row", disable=None):
            history = answers.setdefault((task.prompt.id, task.repeat), [])
            finished = self.store.finished(task.key)
            if finished is not None:
                history.append(finished["generated_text"])
                continue
            if len(history) < task.turn:
                continue  # an earlier turn failed: this one has no conversation to follow
            try:
                row = self._decode(task, history)
            except Exception as exc:  # noqa: BLE001 - any failure becomes an error row, the run goes on
                log.error("prompt %s turn %d repeat %d failed: %s: %s", task.prompt.id, task.turn, task.repeat, type(exc).__name__, exc)
                self._add_error(task, exc)
                continue
            history.append(row["generated_text"])
            self.store.add(row)
        return self.store

    # ---- steps -------------------------------------------------------------------------------

    def _load_models(self) -> None:
        hw, paths = self.run.hardware, self.run.paths
        set_threads(hw.num_threads)  # null: the stated default of spsamp/models/threads.py
        t0 = time.perf_counter()
        self.target = load_model(self.run.model.target, hw, paths.cache_dir, offload=True)
        if self.decoder.needs_draft:
            assert self.run.model.draft is not None
            self.draft = load_model(self.run.model.draft, hw, paths.cache_dir)
            check_same_tokenizer(self.target, self.draft)
        log.info("models ready in %.2fs", time.perf_counter() - t0)
        self.decoder.prepare(self.target, self.draft, self.run)

    def _warmup(self, task: Task) -> None:
        gen = dataclasses.replace(self.run.generation, max_new_tokens=min(8, self.run.generation.max_new_tokens))
        t0 = time.perf_counter()
        for _ in range(self.run.generation.warmup):
            self._generate(task, [], gen, seed=0)
        self.warmup_s = time.perf_counter() - t0

    def _generate(self, task: Task, history: list[str], gen: GenerationConfig, seed: int) -> tuple[torch.Tensor, DecodeOutput]:
        assert self.target is not None
        msgs = messages_for(self.run.dataset.system_prompt, task.prompt.turns[: task.turn + 1], history)
        ids = encode(self.target.tokenizer, msgs, gen.use_chat_template)
        rng = row_generator(self.target.device, seed)  # lives where q is drawn from: spsamp.sampling
        return ids, self.decoder.generate(self.target, self.draft, ids, gen, rng)

    def _decode(self, task: Task, history: list[str]) -> dict[str, Any]:
        if self.run.fail_on_prompt is not None and task.prompt.id == self.run.fail_on_prompt:
            raise InjectedFailure(f"fail_on_prompt={task.prompt.id}")
        gen = self.run.generation
        started = datetime.now(timezone.utc).isoformat()
        t0 = time.perf_counter()
        ids, out = self._generate(task, history, gen, row_seed(gen.seed, task.key))
        wall = time.perf_counter() - t0
        assert self.target is not None
        tokens, _ = truncate_at_eos(out.tokens, self.target.eos_ids, gen.max_new_tokens)
        text = self.target.tokenizer.decode(tokens, skip_special_tokens=True)
        s, n = out.stats, len(tokens)
        decode_s = wall - out.ttft_s
        drafts = self.draft is not None or self.decoder.speculative  # prompt_lookup drafts without a model
        row = self._base_row(task, "ok", started)
        row.update({
            "prompt_tokens": int(ids.numel()),
            "new_tokens": n,
            "generated_text": text,
            "generated_ids": tokens,
            "wall_time_s": wall,
            "prefill_s": out.prefill_s,
            "decode_s": decode_s,
            "ttft_s": out.ttft_s,
            "tokens_per_sec": n / wall if wall > 0 else None,
            "decode_tokens_per_sec": (n - 1) / decode_s if n > 1 and decode_s > 0 else None,
            "steps": s.steps,
            "target_calls": s.target_calls,
            "draft_calls": s.draft_calls,
            "target_calls_per_token": s.target_calls / n if n else None,
            "draft_calls_per_token": s.draft_calls / n if n and self.draft is not None else None,
            "proposed": s.proposed if drafts else None,
            "accepted": s.accepted if drafts else None,
            "rejections": s.rejections if drafts else None,
            "acceptance_rate": s.accepted / s.proposed if s.proposed else None,
            "avg_tokens_per_step": sum(s.accepted_lengths) / len(s.accepted_lengths) if s.accepted_lengths else None,
            "accept_len_hist": _histogram(s.accepted_lengths),
            "metrics_json": json.dumps(s.extra, default=float) if s.extra else None,
        })
        # is the answer right? (checked datasets run the tests in a sandboxed subprocess, untimed)
        row.update(task_columns(task.prompt, task.turn, text, self.run.dataset.check_timeout_s))
        return row

    def _add_error(self, task: Task, exc: BaseException) -> None:
        row = self._base_row(task, "error", datetime.now(timezone.utc).isoformat())
        row.update({
            "error_type": type(exc).__name__,
            "error_message": str(exc),
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        })
        self.store.add(row)

    def _base_row(self, task: Task, status: str, started: str) -> dict[str, Any]:
        run, gen = self.run, self.run.generation
        params = params_dict(self.params)
        draft_spec = run.model.draft if self.decoder.needs_draft else None
        row: dict[str, Any] = {
            "run_id": self.run_id,
            "resume_key": task.key,
            "status": status,
            "started_at": started,
            "method": self.decoder.name,
            "method_params": json.dumps(params, sort_keys=True, default=str),
            "model_preset": run.model.name,
            "model": run.model.target.name,
            "draft_model": draft_spec.name if draft_spec else None,
            # the dtype the loaded model computes in (int8_dynamic: float32), else the configured one
            "target_dtype": self.target.info["dtype"] if self.target else run.hardware.dtype or run.model.target.dtype,
            "draft_dtype": (self.draft.info["dtype"] if self.draft else run.hardware.dtype or draft_spec.dtype) if draft_spec else None,
            "target_quantization": run.model.target.quantization,
            "draft_quantization": draft_spec.quantization if draft_spec else None,
            "device": run.model.target.device or run.hardware.device,
            "device_map": placement_json({"target": self.target, "draft": self.draft}),
            "cpu_linear": self.target.info.get("cpu_linear") if self.target else None,
            "dataset": run.dataset.name,
            "prompt_id": task.prompt.id,
            "category": task.prompt.category,
            "turn": task.turn + 1,
            "repeat": task.repeat,
            "max_new_tokens": gen.max_new_tokens,
            "temperature": gen.temperature,
            "top_p": gen.top_p,
            "top_k": gen.top_k,
            "seed": gen.seed,
            "use_chat_template": gen.use_chat_template,
            "output_dir": self.job.output_dir,
            "job_overrides": json.dumps(self.job.overrides),
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


def _histogram(lengths: list[int]) -> Optional[list[int]]:
    """counts[i] = number of steps that kept i tokens (index 0 unused by current methods)."""
    if not lengths:
        return None
    counts = [0] * (max(lengths) + 1)
    for n in lengths:
        counts[n] += 1
    return counts


def run_job(cfg: DictConfig, job: JobInfo) -> RecordStore:
    """Validate, then decode everything pending into ``job.output_dir``."""
    t0 = time.perf_counter()
    Path(job.output_dir).mkdir(parents=True, exist_ok=True)
    this = Job(cfg, job)
    store = this.execute()
    # per-job cost beyond decoding: what a sweep pays per job on top of the timed rows. Models are
    # memoised per process, so after the first job models/prepare is ~0 and "overhead" is config
    # validation, prompts and record writes
    total = time.perf_counter() - t0
    mine = [r for r in store.rows if r["run_id"] == this.run_id]
    decoding = sum(r["wall_time_s"] or 0.0 for r in mine if r["status"] == "ok")
    log.info(
        "job %s: %.2fs = %.2fs decoding (%d rows) + %.2fs warm-up + %.2fs models/prepare + %.2fs overhead",
        "-" if job.job_num is None else job.job_num, total, decoding, len(mine), this.warmup_s, this.setup_s,
        total - decoding - this.warmup_s - this.setup_s,
    )
    return store
