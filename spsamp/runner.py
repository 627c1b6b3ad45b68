"""One job: validate the config, load prompts and models, decode every (prompt, turn, repeat), record.

Order matters: the config (every arm of a comparison) and the dataset are checked before any model loads, so bad input fails
in a second with one line. Rows already ``ok`` in the output dir, or in another dir of its job
(a shard's: ``dataset.shard``, spsamp/records/shards.py), are skipped (resume); a prompt
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
from pathlib import Path
from typing import Any, Optional

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm.auto import tqdm

from spsamp.comparison import Compose, abba_order, compose_arms, reference_arm
from spsamp.config import GenerationConfig, RunConfig, identity_params, legacy_identities, validate
from spsamp.data import Prompt, load_prompts, shard_prompts
from spsamp.data.chat import encode, messages_for
from spsamp.data.checkers import task_columns
from spsamp.decoders.base import DecodeOutput, Decoder, truncate_at_eos
from spsamp.models import CausalLM, check_same_tokenizer, load_model
from spsamp.models.loading import check_tokenizers_before_load
from spsamp.models.placement import placement_json
from spsamp.records import RecordStore
from spsamp.records.rows import JobInfo, RowBuilder, now
from spsamp.records.shards import finished_elsewhere, job_root
from spsamp.batching import padding
from spsamp.memory import free_cached, is_out_of_memory, peak_bytes, reset_peak
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


def resume_key(run: RunConfig, params: Any, prompt: Prompt, turn: int, repeat: int, method: dict | None = None,
               arm: Optional[str] = None) -> str:
    """Stable identity of one row: everything that changes its tokens, nothing that only times it
    (``method``: the method's identity, :func:`identity_params` unless given; ``arm``: the row's
    arm in a comparison, so two arms of equal settings, e.g. an A/A control, keep their own rows)."""
    g = asdict(run.generation)
    for timing_only in ("repeats", "warmup"):
        g.pop(timing_only)
    if g["batch_size"] == 1:
        # rows decoded one at a time keep the keys they had before batching existed; a batched row
        # is its own measurement (other shapes round differently, hf_generate samples per batch)
        g.pop("batch_size")
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
    if arm is not None:  # a plain job's keys stay what they always were
        ident["arm"] = arm
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:24]


def row_seed(seed: int, key: str) -> int:
    # per-row seed from the resume key: a resumed row draws from the same stream as it would have in
    # order. Fixed-size methods then repeat its tokens; k=auto / grow=cost start their sizing state
    # fresh each row but size steps from the row's own pass timings, so at T > 0 their tokens repeat
    # only where the sizes do (docs/records.md, "What repeats")
    return (seed * 1_000_003 + int(key[:12], 16)) % (2**63)


@dataclasses.dataclass
class Prepared:
    """A task ready to decode: its prompt ids (after ``dataset.truncate``) and their original length if cut."""

    task: Task
    ids: torch.Tensor
    cut_from: Optional[int]


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


class Arm:
    """One configuration a job decodes: its validated config, decoder, row builder, tasks and models.
    A plain job has one arm without a name; a comparison (:mod:`spsamp.comparison`) has several."""

    def __init__(self, cfg: DictConfig, run: RunConfig, params: Any, prompts: list[Prompt], job: JobInfo, store: RecordStore,
                 run_id: str, name: Optional[str] = None, comparison: Optional[str] = None, reference: Optional[str] = None,
                 elsewhere: Optional[dict[str, dict]] = None):
        self.run, self.params, self.name, self.store = run, params, name, store
        self.elsewhere = elsewhere or {}  # rows finished in the job's other dirs (spsamp/records/shards.py)
        self.decoder: Decoder = instantiate(cfg.method)
        self.rows = RowBuilder(run, params, self.decoder.name, self.decoder.needs_draft, job, run_id,
                               speculative=self.decoder.speculative, comparison=comparison, arm=name, reference_arm=reference)
        self.tasks = [
            Task(p, t, r, resume_key(run, params, p, t, r, arm=name),
                 tuple(resume_key(run, params, p, t, r, ident, arm=name) for ident in legacy_identities(params)))
            for p in prompts
            for r in range(run.generation.repeats)
            for t in range(len(p.turns))
        ]
        self.target: Optional[CausalLM] = None
        self.draft: Optional[CausalLM] = None
        self.threads = 0  # the intra-op threads it decodes with (set at load)
        self.warmup_s = 0.0
        self.setup_s = 0.0
        self.answers: dict[tuple[str, int], dict[int, str]] = {}  # (prompt, repeat) -> {turn: answer} so far
        self.batches = 0  # batches decoded so far: the next one's batch_index

    @property
    def label(self) -> str:
        return self.decoder.name if self.name is None else f"{self.name} ({self.decoder.name})"

    @property
    def pending(self) -> list[Task]:
        return [t for t in self.tasks if self._finished(t) is None]

    def _finished(self, task: Task) -> dict | None:
        """The task's finished row, under its key or one an earlier version gave it, in this dir or
        another dir of the job (a shard's, or the job dir's own)."""
        for key in (task.key, *task.aliases):
            row = self.store.finished(key) or self.elsewhere.get(key)
            if row is not None:
                return row
        return None

    def step_batch(self, tasks: list[Task]) -> None:
        """Decode the unfinished ``tasks`` whose conversation so far exists, together in batches of
        at most ``generation.batch_size`` (the runner hands at most that many pending ones); a
        failure is the failing prompt's error row only (:meth:`_decode_rows`)."""
        ready = []
        for task in tasks:
            answers = self.answers.setdefault((task.prompt.id, task.repeat), {})
            finished = self._finished(task)
            if finished is not None:
                answers[task.turn] = finished["generated_text"]
                continue
            history = [answers.get(t) for t in range(task.turn)]
            if None in history:
                continue  # an earlier turn failed: this one has no conversation to follow
            try:
                ready.append(self._prepare(task, history))  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - a prompt that cannot even be encoded is its own error row
                self._failed(task, exc)
        if not ready:
            return
        self._use_threads()
        self._decode_rows(ready)

    def _use_threads(self) -> None:
        """Decode with this arm's thread count (arms of one comparison may use different ones)."""
        if self.threads and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def _failed(self, task: Task, exc: BaseException) -> None:
        log.error("%sprompt %s turn %d repeat %d failed: %s: %s", self._where, task.prompt.id, task.turn, task.repeat,
                  type(exc).__name__, exc)
        self.add_error(task, exc)

    # ---- steps -------------------------------------------------------------------------------

    def load_models(self) -> None:
        hw, paths = self.run.hardware, self.run.paths
        t0 = time.perf_counter()
        self.threads = set_threads(hw.num_threads)  # null: the stated default of spsamp/models/threads.py
        if self.decoder.needs_draft and self.run.model.draft is not None:
            # from tokenizer files: a mismatched pair fails in seconds, before any weights load
            check_tokenizers_before_load(self.run.model.target, self.run.model.draft, hw, paths.cache_dir)
        # memoised per process (spsamp.models.loading): arms with equal model specs and kernels share one copy
        self.target = load_model(self.run.model.target, hw, paths.cache_dir, offload=True)
        if self.decoder.needs_draft:
            assert self.run.model.draft is not None
            self.draft = load_model(self.run.model.draft, hw, paths.cache_dir)
            check_same_tokenizer(self.target, self.draft)
        self.rows.target_info = self.target.info
        self.rows.draft_info = self.draft.info if self.draft is not None else None
        self.rows.device_map = placement_json({"target": self.target, "draft": self.draft})
        log.info("models ready in %.2fs%s", time.perf_counter() - t0, "" if self.name is None else f" (arm {self.name})")
        self.decoder.prepare(self.target, self.draft, self.run)
        self.setup_s = time.perf_counter() - t0  # model loads (memoised) + the decoder's prepare (e.g. a judge)

    def warmup(self) -> None:
        """Untimed generations on :data:`WARMUP_PROMPT`; a failure here is logged, not fatal: each
        dataset prompt then succeeds or fails on its own row."""
        gen = dataclasses.replace(self.run.generation, max_new_tokens=min(8, self.run.generation.max_new_tokens))
        self._use_threads()
        t0 = time.perf_counter()
        try:
            assert self.target is not None
            msgs = messages_for(self.run.dataset.system_prompt, WARMUP_PROMPT.turns, [])
            ids, _ = self._fit_context(encode(self.target.tokenizer, msgs, gen.use_chat_template), gen)
            for _ in range(self.run.generation.warmup):
                # a full batch of copies: the batched path's shapes warm up too
                rngs = [row_generator(self.target.device, 0) for _ in range(gen.batch_size)]
                self.decoder.generate_batch(self.target, self.draft, [ids] * gen.batch_size, gen, rngs)
        except Exception as exc:  # noqa: BLE001 - the rows will tell whether the decoder works at all
            log.warning("warm-up of %s failed (%s: %s); decoding without it", self.label, type(exc).__name__, exc)
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

    def _prepare(self, task: Task, history: list[str]) -> Prepared:
        if self.run.fail_on_prompt is not None and task.prompt.id == self.run.fail_on_prompt:
            raise InjectedFailure(f"fail_on_prompt={task.prompt.id}")
        assert self.target is not None
        gen = self.run.generation
        msgs = messages_for(self.run.dataset.system_prompt, task.prompt.turns[: task.turn + 1], history)
        ids, cut_from = self._fit_context(encode(self.target.tokenizer, msgs, gen.use_chat_template), gen)
        return Prepared(task, ids, cut_from)

    def _decode_rows(self, ready: list[Prepared]) -> None:
        """Decode ``ready`` as one batch and store a row for each. A batch that runs out of memory is
        halved and retried (with a warning); one that fails otherwise is decoded row by row, so only
        a failing prompt becomes an error row."""
        assert self.target is not None
        gen, device = self.run.generation, self.target.device
        index = self.batches
        self.batches += 1
        rngs = [row_generator(device, row_seed(gen.seed, r.task.key)) for r in ready]  # on q's device: spsamp.sampling
        started = now()
        reset_peak(device)
        t0 = time.perf_counter()
        try:
            outs = self.decoder.generate_batch(self.target, self.draft, [r.ids for r in ready], gen, rngs)
        except Exception as exc:  # noqa: BLE001 - sorted out below: one row's error, or a smaller batch
            if len(ready) == 1:
                self._failed(ready[0].task, exc)
                return
            self.target.reset()  # drop the failed batch's KV cache before retrying
            if is_out_of_memory(exc):
                free_cached(device)
                half = len(ready) // 2
                log.warning("%sa batch of %d rows ran out of memory (%s); splitting it into %d + %d rows — lower "
                            "generation.batch_size to avoid the retries", self._where, len(ready), type(exc).__name__, half,
                            len(ready) - half)
                self._decode_rows(ready[:half])
                self._decode_rows(ready[half:])
                return
            log.warning("%sa batch of %d rows failed (%s: %s); decoding its rows one by one", self._where, len(ready),
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            for r in ready:
                self._decode_rows([r])
            return
        wall = time.perf_counter() - t0
        batch = {"batch_index": index, "batch_padding": padding([int(r.ids.numel()) for r in ready]),
                 "peak_mem_bytes": peak_bytes(device)}
        for r, out in zip(ready, outs):
            try:
                row = self._row(r, out, started, wall, batch)
                self.store.add(row)  # a row the schema refuses is this prompt's failure too
            except Exception as exc:  # noqa: BLE001 - any failure becomes an error row, the run goes on
                self._failed(r.task, exc)
                continue
            self.answers.setdefault((r.task.prompt.id, r.task.repeat), {})[r.task.turn] = row["generated_text"]

    @property
    def _where(self) -> str:
        return "" if self.name is None else f"arm {self.name}: "

    def _row(self, r: Prepared, out: DecodeOutput, started: str, wall: float, batch: dict[str, Any]) -> dict[str, Any]:
        """The ``ok`` row of one prompt of a batch: ``wall`` is the batch's wall time (every row of it
        was in flight the whole time), ``batch`` its batch columns."""
        assert self.target is not None
        gen, task = self.run.generation, r.task
        tokens, _ = truncate_at_eos(out.tokens, self.target.eos_ids, gen.max_new_tokens)
        text = self.target.tokenizer.decode(tokens, skip_special_tokens=True)
        row = self.rows.ok(self._base_row(task, "ok", started), prompt_tokens=int(r.ids.numel()), tokens=tokens,
                           text=text, wall_s=wall, out=out)
        row["prompt_truncated_from"] = r.cut_from
        row.update(batch)
        # is the answer right? (checked datasets run the tests in a sandboxed subprocess, untimed)
        row.update(task_columns(task.prompt, task.turn, text, self.run.dataset.check_timeout_s))
        return row

    def add_error(self, task: Task, exc: BaseException) -> None:
        self.store.add(self.rows.error(self._base_row(task, "error", now()), exc))

    def _base_row(self, task: Task, status: str, started: str) -> dict[str, Any]:
        return self.rows.base(key=task.key, prompt_id=task.prompt.id, category=task.prompt.category, turn=task.turn,
                              repeat=task.repeat, status=status, started=started)


def comparison_name(job: JobInfo) -> str:
    """What a comparison's rows call it: ``<sweep dir>/<job dir>`` (a sweep dir is named after its
    experiment, spsamp/sweeps.py), or the run dir's name."""
    here = job_root(job.output_dir).name  # a shard's rows belong to its job's comparison
    return f"{Path(job.sweep_dir).name}/{here}" if job.sweep_dir else here


class Job:
    """Validate everything (every arm of a comparison), then decode each pending task under each arm."""

    def __init__(self, cfg: DictConfig, job: JobInfo, compose: Optional[Compose] = None):
        # 1. everything that can be checked without a model
        run, params = validate(cfg)
        arms = compose_arms(cfg, job.overrides, compose)  # [] for a plain job
        for spec in arms or [None]:
            check_machine(run if spec is None else spec.run)  # cuda present, no display when require_headless
        # arms share the dataset (compose_arms checks)
        prompts = shard_prompts(load_prompts(run.dataset), run.dataset.shard, run.dataset.shards)
        self.job = job
        self.store = RecordStore(job.output_dir)
        elsewhere = finished_elsewhere(job.output_dir)
        self.run_id = uuid.uuid4().hex[:12]
        if not arms:
            self.arms = [Arm(cfg, run, params, prompts, job, self.store, self.run_id, elsewhere=elsewhere)]
        else:
            ref = reference_arm(cfg, [a.name for a in arms])
            name = comparison_name(job)
            self.arms = [Arm(a.cfg, a.run, a.params, prompts, job, self.store, self.run_id, a.name, name, ref, elsewhere)
                         for a in arms]
        self.tasks = len(self.arms[0].tasks)

    @property
    def pending(self) -> list[Task]:
        """Every arm's tasks without a finished row."""
        return [t for a in self.arms for t in a.pending]

    @property
    def warmup_s(self) -> float:
        return sum(a.warmup_s for a in self.arms)

    @property
    def setup_s(self) -> float:
        return sum(a.setup_s for a in self.arms)

    def execute(self) -> RecordStore:
        with self.store:  # the derived files (Parquet, summaries) are written however the job ends
            self._execute()
        return self.store

    def _execute(self) -> None:
        pending = {id(a): a.pending for a in self.arms}  # one scan of the store per arm
        total, left = self.tasks * len(self.arms), sum(len(p) for p in pending.values())
        if total - left:
            where = f"the job {job_root(self.job.output_dir)} (its dir and shard dirs)" if self.arms[0].elsewhere else self.job.output_dir
            log.info("resume: %d of %d rows already finished in %s", total - left, total, where)
        live = []
        for arm in self.arms:
            if not pending[id(arm)]:
                continue
            try:
                arm.load_models()
            except Exception as exc:
                for task in pending[id(arm)]:  # finished rows stay; only pending keys get error rows
                    arm.add_error(task, exc)
                if len(self.arms) == 1:
                    exc.error_rows = len(pending[id(arm)])  # type: ignore[attr-defined] - run.py says where they are
                    raise
                log.error("arm %s could not start: %s: %s (%d error rows; the other arms go on)", arm.name,
                          type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "", len(pending[id(arm)]))
                continue
            live.append(arm)
        for arm in live:
            arm.warmup()  # per arm, untimed, after every load (shared models are warm for each)
        if not live:
            return
        desc = live[0].decoder.name if len(self.arms) == 1 else f"{len(live)} arms"
        todo = {id(t) for a in live for t in pending[id(a)]}
        waiting = [any(id(a.tasks[i]) in todo for a in live) for i in range(self.tasks)]
        size = self.arms[0].run.generation.batch_size
        chunks = batches([t.turn for t in self.arms[0].tasks], waiting, size)
        unit = ("row" if size == 1 else "batch") if len(self.arms) == 1 else ("prompt" if size == 1 else "batch")
        for c, chunk in enumerate(tqdm(chunks, desc=desc, unit=unit, disable=None)):
            for arm in abba_order(live, c):  # each arm decodes the whole batch in turn: ABBA by batch
                arm.step_batch([arm.tasks[i] for i in chunk])


def batches(turns: list[int], waiting: list[bool], size: int) -> list[list[int]]:
    """Task indices in the groups they are decoded in: with ``size`` 1 each task alone, in order;
    else turn by turn (every first turn, then every second one: a turn needs the previous turn's
    answer), at most ``size`` tasks still ``waiting`` per group; finished tasks ride along in the
    group (their stored answers feed the next turn's conversation)."""
    if size == 1:
        return [[i] for i in range(len(turns))]
    out: list[list[int]] = []
    group: list[int] = []
    count = 0
    for i in sorted(range(len(turns)), key=lambda i: (turns[i], i)):
        if group and (turns[i] != turns[group[-1]] or (waiting[i] and count == size)):
            out.append(group)
            group, count = [], 0
        group.append(i)
        count += waiting[i]
    if group:
        out.append(group)
    return out


def run_job(cfg: DictConfig, job: JobInfo, compose: Optional[Compose] = None) -> RecordStore:
    """Validate, then decode everything pending into ``job.output_dir`` (``compose``: how a
    comparison's arms are composed, :func:`spsamp.comparison.hydra_compose` unless given)."""
    t0 = time.perf_counter()
    this = Job(cfg, job, compose)
    store = this.execute()
    # per-job cost beyond decoding: what a sweep pays per job on top of the timed rows. Models are
    # memoised per process, so after the first job models/prepare is ~0 and "overhead" is config
    # validation, prompts and record writes
    total = time.perf_counter() - t0
    mine = [r for r in store.rows if r["run_id"] == this.run_id]
    # rows of one batch share its wall time: count each batch once
    decoding = sum({(r["arm"], r["batch_index"]): r["wall_time_s"] or 0.0 for r in mine if r["status"] == "ok"}.values())
    log.info(
        "job %s: %.2fs = %.2fs decoding (%d rows) + %.2fs warm-up + %.2fs models/prepare + %.2fs overhead",
        "-" if job.job_num is None else job.job_num, total, decoding, len(mine), this.warmup_s, this.setup_s,
        total - decoding - this.warmup_s - this.setup_s,
    )
    return store
