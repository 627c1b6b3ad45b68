"""Prompt sets: the built-in one, MT-Bench-style question files (FastChat format), HumanEval
(:mod:`spsamp.data.humaneval`) and arithmetic word problems (:mod:`spsamp.data.arithmetic`).

A prompt set is a list of :class:`Prompt` (id, category, turns, and for checked datasets the
checker and its reference, see :mod:`spsamp.data.checkers`). ``dataset.turns=first`` keeps the
first user turn; ``both`` makes a two-turn conversation in which the second turn follows the
model's own first answer (as MT-Bench does). ``dataset.split`` = ``train`` | ``test`` keeps one of
two fixed, disjoint halves (:func:`split_half`), so judge mining and evaluation never share a prompt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from spsamp.config import ConfigError, DatasetConfig
from spsamp.data.builtin import BUILTIN_PROMPTS

MT_BENCH_CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")


@dataclass(frozen=True)
class Prompt:
    id: str
    category: str
    turns: tuple[str, ...]
    check: Optional[str] = None  # checker of the first turn's answer (spsamp.data.checkers); None: unchecked
    reference: Any = field(default=None, compare=False, repr=False)  # what the checker compares with


SPLITS = ("all", "train", "test")


def split_half(ids: list[str], split: str) -> set[str]:
    """The ids of one half: ids ordered by sha256 of the id, the first half (rounded up) is
    ``train``, the rest ``test``. Fixed by the ids alone (no seed, no file order), so the halves of
    one dataset never overlap and never change."""
    if split == "all":
        return set(ids)
    order = sorted(ids, key=lambda i: hashlib.sha256(i.encode("utf-8")).hexdigest())
    n_train = (len(order) + 1) // 2
    return set(order[:n_train] if split == "train" else order[n_train:])


def load_prompts(cfg: DatasetConfig) -> list[Prompt]:
    """Prompts selected by ``cfg`` (categories, then max_samples), in file order."""
    if cfg.name == "builtin" and not cfg.path:
        prompts = [Prompt(p["id"], p["category"], tuple(p["turns"])) for p in BUILTIN_PROMPTS]
    elif cfg.name == "humaneval":
        from spsamp.data import humaneval

        prompts = [
            Prompt(p["task_id"], "coding", (humaneval.instruction(p),), check="tests", reference=p)
            for p in humaneval.load_problems(cfg.path)
        ]
    elif cfg.name == "arithmetic" and not cfg.path:
        from spsamp.data.arithmetic import EVAL_SEED, generate_problems

        prompts = [Prompt(p.id, "math", (p.prompt,), check="final_number", reference=p.answer)
                   for p in generate_problems(cfg.max_samples or 300, seed=EVAL_SEED, difficulty=cfg.difficulty)]
    else:
        prompts = read_question_file(Path(str(cfg.path)).expanduser())
    if cfg.split != "all":
        keep = split_half([p.id for p in prompts], cfg.split)
        prompts = [p for p in prompts if p.id in keep]
    if cfg.categories:
        known = {p.category for p in prompts}
        unknown = sorted(set(cfg.categories) - known)
        if unknown:
            raise ConfigError(f"dataset.categories: {unknown} not in this dataset — use some of {sorted(known)}")
        prompts = [p for p in prompts if p.category in cfg.categories]
    if cfg.max_samples:
        prompts = prompts[: cfg.max_samples]
    if cfg.turns == "first":
        prompts = [Prompt(p.id, p.category, p.turns[:1], p.check, p.reference) for p in prompts]
    return prompts


def shard_prompts(prompts: list[Prompt], shard: int, shards: int) -> list[Prompt]:
    """Shard ``shard`` of ``shards``: prompts ``shard``, ``shard + shards``, ... in order (the shards
    of one selection are disjoint and together hold all of it; every turn of a prompt stays in one)."""
    return prompts[shard::shards]


def read_question_file(path: Path) -> list[Prompt]:
    """Read a FastChat question file: JSONL, or one JSON array, of {question_id, category, turns}.

    Errors name the file and line and what to fix.
    """
    if not path.exists():
        raise ConfigError(f"dataset.path: {path} does not exist — pass dataset.path=/path/to/question.jsonl")
    if path.is_dir():
        raise ConfigError(f"dataset.path: {path} is a directory — pass the questions file in it, e.g. dataset.path={path}/question.jsonl")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"dataset.path: cannot read {path} ({exc.strerror or type(exc).__name__}) — check the file's permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}) — save the file as UTF-8") from None
    records: list[tuple[int, object]] = []
    if text.lstrip().startswith("["):
        try:
            records = [(0, r) for r in json.loads(text)]
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}) — fix the file") from None
    else:
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{lineno}: invalid JSON ({exc.msg}) — one JSON object per line") from None
    prompts: list[Prompt] = []
    seen: dict[str, str] = {}
    for idx, (lineno, rec) in enumerate(records):
        where = f"{path}:{lineno}" if lineno else f"{path}[{idx}]"
        if not isinstance(rec, dict) or "question_id" not in rec or "turns" not in rec:
            raise ConfigError(f"{where}: needs 'question_id' and 'turns' (FastChat question format) — fix that record")
        qid = rec["question_id"]
        if qid is None or isinstance(qid, (bool, dict, list)) or not str(qid).strip():
            raise ConfigError(f"{where}: question_id is {json.dumps(qid)} — give every question a unique string or number id")
        if str(qid) in seen:
            raise ConfigError(f"{where}: question_id {str(qid)!r} is also used at {seen[str(qid)]} — give every question a unique id")
        seen[str(qid)] = where
        turns = rec["turns"]
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
            raise ConfigError(f"{where}: 'turns' must be a non-empty list of strings — fix that record")
        answer = rec.get("answer")  # a known numeric answer (e.g. arithmetic problems) makes the prompt checked
        if answer is not None and (isinstance(answer, bool) or not isinstance(answer, (int, float))):
            raise ConfigError(f"{where}: 'answer' must be a number (checked by its final number) — fix or remove it")
        prompts.append(Prompt(str(rec["question_id"]), str(rec.get("category", "uncategorized")), tuple(turns),
                              check="final_number" if answer is not None else None, reference=answer))
    if not prompts:
        raise ConfigError(f"{path}: no questions found — is it the right file?")
    return prompts
