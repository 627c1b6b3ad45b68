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
import time
import uuid
from dataclasses import asdict
from typing import Any, Optional

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm.auto import tqdm

from spsamp.config import GenerationConfig, RunConfig, identity_params, legacy_identities, validate
from spsamp.data import Prompt, load_prompts
from spsamp.data.chat import encode, messages_for
from spsamp.data.checkers import task_columns
from spsamp.decoders.base import DecodeOutput, Decoder, truncate_at_eos
from spsamp.models import CausalLM, check_same_tokenizer, load_model
from spsamp.models.loading import check_tokenizers_before_load
from spsamp.models.placement import placement_json
from spsamp.records import RecordStore
from spsamp.records.rows import JobInfo, RowBuilder, now
from spsamp.sampling import row_generator
import spsamp.sweeps  # noqa: F401 - registers the sweep-dir resolvers that launcher workers resolve
from spsamp.models.threads import set_threads
from spsamp.system_info import check_machine

log = logging.getLogger(__name__)


class InjectedFailure(RuntimeError):
    """Raised on purpose by ``fail_on_prompt`` (tests of the error-row path)."""


@dataclasses.dataclass
class Task:
    prompt: Prompt
    turn: int
    repeat: int
    key: str
    aliases: tuple[str, ...] = ()  # keys the same row had under earlier versions (legacy_identities)


def resume_key(run: RunConfig, params: Any, prompt: Prompt, turn: int, repeat: int, method: dict | None = None) -> str:
    """Stable identity of one row: everything that changes its tokens, nothing that only times it
    (``method``: the method's identity, :func:`identity_params` unless given)."""
    g = asdict(run.generation)
    for timing_only in ("repeats", "warmup"):
        g.pop(timing_only)
    ident = {
        "method": identity_params(params) if method is None else method,
        "model": asdict(run.model),
        "hardware_dtype": run.hardware.dtype,
        "device": run.hardware.device,
        # other kernels round differently (near-tied tokens may flip), so the setting is part of the
        # identity — the *configured* one (auto stays auto): the choice is made at load, after the
        # pending rows are known, and may differ run to run (a deleted memory, a noisy machine);
        # keying on it would redo finished rows. The chosen kernel is in each row's cpu_linear column
        "cpu_linear": run.hardware.cpu_linear,
        "dataset": [run.dataset.name, run.dataset.path, run.dataset.system_prompt],
        "prompt": [prompt.id, prompt.turns[: turn + 1]],
        "turn": turn,
        "repeat": repeat,
        "generation": g,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:24]


def row_seed(seed: int, key: str) -> int:
    # per-row seed from the resume key: a resumed row draws from the same stream as it would have in
    # order. Fixed-size methods then repeat its tokens; k=auto / grow=cost start their sizing state
    # fresh each row but size steps from the row's own pass timings, so at T > 0 their tokens repeat
    # only where the sizes do (docs/records.md, "What repeats")
    return (seed * 1_000_003 + int(key[:12], 16)) % (2**63)


class PromptTooLong(ValueError):
    """A prompt that, with ``generation.max_new_tokens``, does not fit the model's context."""


# warm-up runs on this fixed prompt, never on a dataset prompt: a bad question fails only its own row
WARMUP_PROMPT = Prompt("warmup", "warmup", ("Say hello.",))


def context_limit(*models: Optional[CausalLM]) -> tuple[Optional[int], str]:
    """The smallest number of positions any of ``models`` can attend to, and where it comes from."""
    best: tuple[Optional[int], str] = (None, "")
    for m in models:
        if m is None:
            continue
        cfg = getattr(m.model, "config", None)
        candidates = [(getattr(cfg, "max_position_embeddings", None), f"{m.name} max_position_embeddings")]
        tok_max = getattr(m.tokenizer, "model_max_length", None)
        candidates.append((tok_max if isinstance(tok_max, int) and tok_max < 10**9 else None, f"{m.name} tokenizer model_max_length"))
        for n, where in candidates:
            if isinstance(n, int) and n > 0 and (best[0] is None or n < best[0]):
                best = (n, where)
    return best


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
        self.rows = RowBuilder(self.run, self.params, self.decoder.name, self.decoder.needs_draft, job, self.run_id,
                               speculative=self.decoder.speculative)
        self.tasks = [
            Task(p, t, r, resume_key(self.run, self.params, p, t, r),
                 tuple(resume_key(self.run, self.params, p, t, r, ident) for ident in legacy_identities(self.params)))
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
        return [t for t in self.tasks if self._finished(t) is None]

    def _finished(self, task: Task) -> dict | None:
        """The task's finished row, under its key or one an earlier version gave it."""
        for key in (task.key, *task.aliases):
            row = self.store.finished(key)
            if row is not None:
                return row
        return None

    def execute(self) -> RecordStore:
        with self.store:  # the derived files (Parquet, summaries) are written however the job ends
            self._execute()
        return self.store

    def _execute(self) -> None:
        pending = self.pending
        done = len(self.tasks) - len(pending)
        if done:
            log.info("resume: %d of %d rows already finished in %s", done, len(self.tasks), self.job.output_dir)
        if not pending:
            return
        try:
            t0 = time.perf_counter()
            self._load_models()
            self.setup_s = time.perf_counter() - t0  # model loads (memoised) + the decoder's prepare (e.g. a judge)
        except Exception as exc:
            for task in pending:  # finished rows stay; only pending keys get error rows
                self._add_error(task, exc)
            exc.error_rows = len(pending)  # type: ignore[attr-defined] - run.py says where they are
            raise
        self._warmup()
        answers: dict[tuple[str, int], list[str]] = {}
        for task in tqdm(self.tasks, desc=f"{self.decoder.name}", unit="row", disable=None):
            history = answers.setdefault((task.prompt.id, task.repeat), [])
            finished = self._finished(task)
            if finished is not None:
                history.append(finished["generated_text"])
                continue
            if len(history) < task.turn:
                continue  # an earlier turn failed: this one has no conversation to follow
            try:
                row = self._decode(task, history)
                self.store.add(row)  # a row the schema refuses is this prompt's failure too
            except Exception as exc:  # noqa: BLE001 - any failure becomes an error row, the run goes on
                log.error("prompt %s turn %d repeat %d failed: %s: %s", task.prompt.id, task.turn, task.repeat, type(exc).__name__, exc)
                self._add_error(task, exc)
                continue
            history.append(row["generated_text"])

    # ---- steps -------------------------------------------------------------------------------

    def _load_models(self) -> None:
        hw, paths = self.run.hardware, self.run.paths
        set_threads(hw.num_threads)  # null: the stated default of spsamp/models/threads.py
        t0 = time.perf_counter()
        if self.decoder.needs_draft and self.run.model.draft is not None:
            # from tokenizer files: a mismatched pair fails in seconds, before any weights load
            check_tokenizers_before_load(self.run.model.target, self.run.model.draft, hw, paths.cache_dir)
        self.target = load_model(self.run.model.target, hw, paths.cache_dir, offload=True)
        if self.decoder.needs_draft:
            assert self.run.model.draft is not None
            self.draft = load_model(self.run.model.draft, hw, paths.cache_dir)
            check_same_tokenizer(self.target, self.draft)
        self.rows.target_info = self.target.info
        self.rows.draft_info = self.draft.info if self.draft is not None else None
        self.rows.device_map = placement_json({"target": self.target, "draft": self.draft})
        log.info("models ready in %.2fs", time.perf_counter() - t0)
        self.decoder.prepare(self.target, self.draft, self.run)

    def _warmup(self) -> None:
        """Untimed generations on :data:`WARMUP_PROMPT`; a failure here is logged, not fatal: each
        dataset prompt then succeeds or fails on its own row."""
        gen = dataclasses.replace(self.run.generation, max_new_tokens=min(8, self.run.generation.max_new_tokens))
        t0 = time.perf_counter()
        try:
            for _ in range(self.run.generation.warmup):
                self._generate(Task(WARMUP_PROMPT, 0, 0, "warmup"), [], gen, seed=0)
        except Exception as exc:  # noqa: BLE001 - the rows will tell whether the decoder works at all
            log.warning("warm-up failed (%s: %s); decoding without it", type(exc).__name__, exc)
        self.warmup_s = time.perf_counter() - t0

    def _fit_context(self, ids: torch.Tensor, gen: GenerationConfig) -> tuple[torch.Tensor, Optional[int]]:
        """``ids`` if prompt + max_new_tokens fit every model's context; else cut from the left when
        ``dataset.truncate=left`` (returning the original length), else :class:`PromptTooLong`."""
        limit, where = context_limit(self.target, self.draft)
        n = int(ids.numel())
        if limit is None or n + gen.max_new_tokens <= limit:
            return ids, None
        keep = limit - gen.max_new_tokens
        if self.run.dataset.truncate == "left" and keep > 0:
            return ids[-keep:], n
        fix = ("lower generation.max_new_tokens" if keep <= 0
               else "shorten the prompt, lower generation.max_new_tokens, or set dataset.truncate=left to keep its last tokens")
        raise PromptTooLong(f"prompt of {n} tokens + generation.max_new_tokens={gen.max_new_tokens} = {n + gen.max_new_tokens} "
                            f"exceeds the model context of {limit} positions ({where}) — {fix}")

    def _generate(self, task: Task, history: list[str], gen: GenerationConfig, seed: int) -> tuple[torch.Tensor, Optional[int], DecodeOutput]:
        assert self.target is not None
        msgs = messages_for(self.run.dataset.system_prompt, task.prompt.turns[: task.turn + 1], history)
        ids, cut_from = self._fit_context(encode(self.target.tokenizer, msgs, gen.use_chat_template), gen)
        rng = row_generator(self.target.device, seed)  # lives where q is drawn from: spsamp.sampling
        return ids, cut_from, self.decoder.generate(self.target, self.draft, ids, gen, rng)

    def _decode(self, task: Task, history: list[str]) -> dict[str, Any]:
        if self.run.fail_on_prompt is not None and task.prompt.id == self.run.fail_on_prompt:
            raise InjectedFailure(f"fail_on_prompt={task.prompt.id}")
        gen = self.run.generation
        started = now()
        t0 = time.perf_counter()
        ids, cut_from, out = self._generate(task, history, gen, row_seed(gen.seed, task.key))
        wall = time.perf_counter() - t0
        assert self.target is not None
        tokens, _ = truncate_at_eos(out.tokens, self.target.eos_ids, gen.max_new_tokens)
        text = self.target.tokenizer.decode(tokens, skip_special_tokens=True)
        row = self.rows.ok(self._base_row(task, "ok", started), prompt_tokens=int(ids.numel()), tokens=tokens,
                           text=text, wall_s=wall, out=out)
        row["prompt_truncated_from"] = cut_from
        # is the answer right? (checked datasets run the tests in a sandboxed subprocess, untimed)
        row.update(task_columns(task.prompt, task.turn, text, self.run.dataset.check_timeout_s))
        return row

    def _add_error(self, task: Task, exc: BaseException) -> None:
        self.store.add(self.rows.error(self._base_row(task, "error", now()), exc))

    def _base_row(self, task: Task, status: str, started: str) -> dict[str, Any]:
        return self.rows.base(key=task.key, prompt_id=task.prompt.id, category=task.prompt.category, turn=task.turn,
                              repeat=task.repeat, status=status, started=started)


def run_job(cfg: DictConfig, job: JobInfo) -> RecordStore:
    """Validate, then decode everything pending into ``job.output_dir``."""
    t0 = time.perf_counter()
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
