"""Importance checks for label mining: did swapping one token change the outcome?

Garipov et al. 2025 (AutoJudge), Sec. 3: a mismatch is *important* when replacing the target's
token by the draft's and letting the target continue greedily changes the response's outcome.
Two checks, named in config (``method.check``):

- ``final_answer`` (math, GSM8K-style): the outcome is the final number of the response
  (``The answer is N`` when present, else the last number). Different numbers -> important. The
  prompts ask to finish with that statement, so decoding an answer or a continuation stops once
  it is stated (:func:`~spsamp.data.checkers.answer_stated`).
- ``tests`` (code, AutoJudge's LiveCodeBench setting): the outcome is pass/fail of the answer's
  code on the problem's unit tests, run in the sandbox (:mod:`spsamp.sandbox`); important iff
  swapping changes pass/fail. Needs prompts with tests (``mining_source=humaneval``); decoding a
  continuation stops once its code block has closed (the outcome is fixed from there).
- ``continuation`` (open-ended prompts): the swapped continuation is equivalent when it
  *re-converges* to the original — a run of ``match_len`` identical token ids starts within
  ``window`` tokens after the mismatch in both — or when its similarity to the original
  continuation is >= ``tau``. Similarity is ``difflib.SequenceMatcher(None, a, b).ratio()`` over
  token ids (2 * matches / (len(a) + len(b))), each continuation taken from the mismatch position.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from spsamp.data.checkers import answer_stated, check_text, extract_final_number
from spsamp.data.humaneval import block_closed
from spsamp.sandbox import Limits


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

    def stop(self, text: str) -> bool:
        return answer_stated(text)


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


@dataclass
class Tests:
    """Pass/fail on the problem's tests; :meth:`bind` gives the check for one problem."""

    timeout_s: float = 10.0
    name: str = "tests"

    def bind(self, problem: Any) -> "BoundTests":
        if not isinstance(problem, dict) or "test" not in problem:
            raise ValueError("importance_check=tests needs prompts with unit tests — use method.mining_source=humaneval")
        return BoundTests(problem, self.timeout_s)


class BoundTests:
    name = "tests"

    def __init__(self, problem: dict, timeout_s: float):
        self.problem, self.limits = problem, Limits(timeout_s=timeout_s)
        self._outcomes: dict[tuple[int, ...], bool] = {}

    def passes(self, ids: list[int], decode: Callable[[list[int]], str]) -> bool:
        key = tuple(ids)
        if key not in self._outcomes:  # the original answer is compared with every swap: run it once
            correct, verdict = check_text("tests", self.problem, decode(ids), self.limits)
            if correct is None:  # no outcome at all (sandbox_error): labels from it would be noise
                raise RuntimeError(f"importance_check=tests: the sandbox could not run the tests ({verdict}: its child could not start, e.g. no Python the sandbox user may execute)")
            self._outcomes[key] = correct
        return self._outcomes[key]

    def stop(self, text: str) -> bool:
        return block_closed(text)

    def __call__(self, original: list[int], swapped: list[int], pos: int, decode: Callable[[list[int]], str]) -> bool:
        return self.passes(original, decode) != self.passes(swapped, decode)


CHECKS = ("final_answer", "continuation", "tests")


def make_check(name: str, window: int = 8, match_len: int = 4, tau: float = 0.8, timeout_s: float = 10.0) -> ImportanceCheck:
    if name == "tests":
        return Tests(timeout_s=timeout_s)
    if name == "final_answer":
        return FinalAnswer()
    if name == "continuation":
        return Continuation(window=window, match_len=match_len, tau=tau)
    raise ValueError(f"check: unknown importance check {name!r} — use one of {CHECKS}")
