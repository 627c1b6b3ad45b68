"""Where mining prompts come from (``method.mining_source``), as streams read only as far as needed.

- ``problems``: generated arithmetic word problems (``final_answer`` check), problem ``i`` of seed
  ``mining_seed`` for i = 0, 1, 2, ... — a stream that never runs out.
- ``humaneval``: HumanEval's ``train`` half (``tests`` check), shuffled by ``mining_seed``; 82
  problems, never the ``test`` half evaluation uses.
- ``file``: a FastChat question file, shuffled by ``mining_seed``.

Every stream skips prompts that an evaluation could meet (same id or same text hash as a prompt of
the run's dataset, or of the arithmetic evaluation set for ``problems``): generated problems are
drawn from a small grammar, so another seed can produce the very text of an evaluation problem.
A stream's order depends only on the source and its seed, so a longer mining run reads the same
prefix first (the journal then re-reads rather than re-mines it).
"""

from __future__ import annotations

import itertools
import logging
import random
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from spsamp.autojudge.journal import prompt_sha
from spsamp.config import DatasetConfig
from spsamp.data import load_prompts, read_question_file
from spsamp.data.arithmetic import generate_problems

log = logging.getLogger(__name__)

SOURCES = ("problems", "file", "humaneval")

Item = tuple[str, str, Any]  # (prompt id, user turn, reference for an outcome check)


def arithmetic_problem(seed: int, index: int) -> Item:
    """Problem ``index`` of the generated stream for ``seed`` (a pure function of both)."""
    p = generate_problems(1, seed=seed, start=index)[0]
    return p.id, p.prompt, None


def source_items(source: str, seed: int, file: Optional[str] = None) -> Iterator[Item]:
    """The raw stream of ``source`` (module doc), before evaluation prompts are skipped."""
    if source == "problems":
        return (arithmetic_problem(seed, i) for i in itertools.count())
    if source == "humaneval":
        train = load_prompts(DatasetConfig(name="humaneval", split="train"))  # never the test half
        random.Random(seed).shuffle(train)
        return iter([(q.id, q.turns[0], q.reference) for q in train])
    if source == "file":
        qs = read_question_file(Path(str(file)).expanduser())
        random.Random(seed).shuffle(qs)
        return iter([(q.id, q.turns[0], None) for q in qs])
    raise ValueError(f"mining_source: unknown {source!r} — use one of {SOURCES}")


def evaluation_prompts(dataset: DatasetConfig, source: str) -> tuple[set[str], set[str]]:
    """(ids, text hashes) of every prompt an evaluation of ``dataset`` could use — all of it, not
    only ``max_samples`` of it, so that raising ``max_samples`` later stays disjoint — plus, for the
    ``problems`` source, the arithmetic evaluation set."""
    sets = [replace(dataset, max_samples=None)]
    if source == "problems" and dataset.name != "arithmetic":
        sets.append(DatasetConfig(name="arithmetic"))
    ids: set[str] = set()
    shas: set[str] = set()
    for ds in sets:
        for p in load_prompts(ds):
            ids.add(p.id)
            shas.update(prompt_sha(t) for t in p.turns)
    return ids, shas


def disjoint(items: Iterable[Item], ids: set[str], shas: set[str]) -> Iterator[Item]:
    """``items`` without those whose id or text hash is in ``ids`` / ``shas``."""
    for item in items:
        if item[0] in ids or prompt_sha(item[1]) in shas:
            log.info("mining: skipping %s (it is, or reads exactly like, an evaluation prompt)", item[0])
            continue
        yield item
