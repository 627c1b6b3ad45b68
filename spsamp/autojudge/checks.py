"""Importance checks for label mining: did swapping one token change the outcome?

Garipov et al. 2025 (AutoJudge), Sec. 3: a mismatch is *important* when replacing the target's
token by the draft's and letting the target continue greedily changes the response's outcome.
Two checks, named in config (``method.check``):

- ``final_answer`` (math, GSM8K-style): the outcome is the final number of the response
  (``The answer is N`` when present, else the last number). Different numbers -> important.
- ``continuation`` (open-ended prompts): the swapped continuation is equivalent when it
  *re-converges* to the original — a run of ``match_len`` identical token ids starts within
  ``window`` tokens after the mismatch in both — or when its similarity to the original
  continuation is >= ``tau``. Similarity is ``difflib.SequenceMatcher(None, a, b).ratio()`` over
  token ids (2 * matches / (len(a) + len(b))), each continuation taken from the mismatch position.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Protocol

from spsamp.data.checkers import extract_final_number


class ImportanceCheck(Protocol):
    name: str

    def __call__(self, original: list[int], swapped: list[int], pos: int, decode: Callable[[list[int]], str]) -> bool:
        """True when ``swapped`` (original[:pos] + draft token + target continuation) is important."""
        ...


@dataclass
class FinalAnswer:
    name: str = "final_answer"

    def __call__(self, original: list[int], swapped: list[int], pos: int, decode: Callable[[list[int]], str]) -> bool:
        a, b = extract_final_number(decode(original)), extract_final_number(decode(swapped))
        if a is None or b is None:
            return (a is None) != (b is None)
        return abs(a - b) > 1e-6 * max(1.0, abs(a))


def reconverges(a: list[int], b: list[int], window: int, match_len: int) -> bool:
    """A common run of ``match_len`` ids starting within the first ``window`` positions of both."""
    if len(a) < match_len or len(b) < match_len:
        return a == b  # both ended early: equal only if identical
    starts_b = {}
    for j in range(min(window, len(b) - match_len) + 1):
        starts_b.setdefault(tuple(b[j : j + match_len]), j)
    return any(tuple(a[i : i + match_len]) in starts_b for i in range(min(window, len(a) - match_len) + 1))


@dataclass
class Continuation:
    window: int = 8
    match_len: int = 4
    tau: float = 0.8
    name: str = "continuation"

    def __call__(self, original: list[int], swapped: list[int], pos: int, decode: Callable[[list[int]], str]) -> bool:
        # compare only after the swapped token: both share original[:pos]
        a, b = original[pos + 1 :], swapped[pos + 1 :]
        if reconverges(a, b, self.window, self.match_len):
            return False
        return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() < self.tau


CHECKS = ("final_answer", "continuation")


def make_check(name: str, window: int = 8, match_len: int = 4, tau: float = 0.8) -> ImportanceCheck:
    if name == "final_answer":
        return FinalAnswer()
    if name == "continuation":
        return Continuation(window=window, match_len=match_len, tau=tau)
    raise ValueError(f"check: unknown importance check {name!r} — use one of {CHECKS}")
