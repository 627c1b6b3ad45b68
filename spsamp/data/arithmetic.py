"""Arithmetic word problems with known answers (GSM8K-style, tiny), generated offline: `dataset=arithmetic`.

Mining labels with the ``final_answer`` check needs prompts whose answer is a number; this ships
them with the code so mining works without any download. Problems are a deterministic function of
``(difficulty, seed, index)``; ids are ``arith-s<seed>-<index>`` at difficulty 1 and
``arith-d<difficulty>-s<seed>-<index>`` above, so two sets drawn with different seeds, difficulties
or disjoint index ranges never share a prompt id (the train/eval split is by id).

Difficulty (``dataset.difficulty``): 1 = one or two operations on small numbers (the original
stream, unchanged); d >= 2 = a chain of d operations (buy, give away, boxes of n, doubling, sharing
into equal bags) on a running count whose numbers grow with d, so a model's accuracy can be aimed
at a range by choosing d.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

NAMES = ["Tom", "Anna", "Ravi", "Mia", "Lena", "Omar", "Sara", "Ken", "Ines", "Paul"]
ITEMS = ["apples", "marbles", "books", "stickers", "pencils", "cookies", "coins", "cards"]
EVAL_SEED = 2000  # dataset=arithmetic draws from this stream; AutoJudge mining defaults to seed 1000
INSTRUCTION = "Solve the problem step by step, then finish with 'The answer is N.'"


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: int

    @property
    def prompt(self) -> str:
        return f"{self.question}\n{INSTRUCTION}"


def _one(rng: random.Random) -> tuple[str, int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.randrange(4)
    if kind == 0:
        a, b, c = rng.randint(5, 40), rng.randint(2, 30), rng.randint(1, 5)
        c = min(c, a + b)
        return f"{name} has {a} {item}. {name} buys {b} more and then gives away {c}. How many {item} does {name} have now?", a + b - c
    if kind == 1:
        n, each = rng.randint(2, 9), rng.randint(2, 12)
        return f"{name} has {n} boxes with {each} {item} in each box. How many {item} does {name} have in total?", n * each
    if kind == 2:
        per, n, extra = rng.randint(2, 9), rng.randint(2, 8), rng.randint(1, 20)
        return (
            f"{name} buys {n} bags of {item}. Each bag holds {per} {item}. A friend then gives {name} {extra} more. "
            f"How many {item} does {name} have?",
            n * per + extra,
        )
    groups, size = rng.randint(2, 9), rng.randint(2, 9)
    total = groups * size
    return f"{name} shares {total} {item} equally among {groups} friends. How many {item} does each friend get?", size


def _chain(rng: random.Random, steps: int) -> tuple[str, int]:
    """A problem of ``steps`` operations on one running count (every intermediate count >= 0)."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    top = 10 + 10 * steps  # numbers grow with the chain
    x = rng.randint(5, top)
    text = [f"{name} has {x} {item}."]
    for _ in range(steps):
        kind = rng.randrange(5)
        shares = [g for g in range(2, 10) if x % g == 0 and x // g > 0]
        if kind == 4 and shares:
            g = rng.choice(shares)
            text.append(f"{name} splits the {item} into {g} equal bags and keeps only one bag.")
            x //= g
        elif kind == 3 and x <= 200:
            text.append(f"Then the number of {item} doubles.")
            x *= 2
        elif kind == 2:
            n, each = rng.randint(2, 6), rng.randint(2, 3 + steps)
            text.append(f"{name} gets {n} boxes with {each} {item} in each box.")
            x += n * each
        elif kind == 1 and x > 1:
            c = rng.randint(1, min(x - 1, top))
            text.append(f"{name} gives away {c} {item}.")
            x -= c
        else:
            b = rng.randint(2, top)
            text.append(f"{name} buys {b} more {item}.")
            x += b
    text.append(f"How many {item} does {name} have now?")
    return " ".join(text), x


def generate_problems(n: int, seed: int = 0, start: int = 0, difficulty: int = 1) -> list[Problem]:
    """Problems ``start .. start+n-1`` of the stream for ``(difficulty, seed)`` (each from its own RNG)."""
    if difficulty < 1:
        raise ValueError(f"difficulty: must be >= 1, got {difficulty}")
    out = []
    for i in range(start, start + n):
        if difficulty == 1:
            q, a = _one(random.Random(f"{seed}-{i}"))
            out.append(Problem(id=f"arith-s{seed}-{i}", question=q, answer=a))
        else:
            q, a = _chain(random.Random(f"d{difficulty}-{seed}-{i}"), difficulty)
            out.append(Problem(id=f"arith-d{difficulty}-s{seed}-{i}", question=q, answer=a))
    return out


def write_question_file(problems: list[Problem], path: str | Path) -> Path:
    """Write problems as a FastChat question file (``dataset=mt_bench dataset.path=<file>``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for p in problems:
            f.write(json.dumps({"question_id": p.id, "category": "math", "turns": [p.prompt], "answer": p.answer}) + "\n")
    return path
