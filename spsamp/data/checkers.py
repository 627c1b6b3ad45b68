"""Task checkers: is an answer right? One call per row gives the ``task_correct`` / ``task_check`` columns.

A prompt of a checked dataset carries ``check`` (the checker's name) and ``reference`` (what it
compares with). Checkers:

- ``tests`` (HumanEval): extract the code from the answer, join it with the problem's unit tests
  and run them in the sandbox (:mod:`spsamp.sandbox` — model-written code never runs in this
  process). ``task_check`` is the sandbox verdict (``passed``, ``failed``, ``syntax_error``,
  ``timeout``, ``resource_limit``, ``blocked``, ``sandbox_error``) or ``no_code``; where the
  machine gave the sandbox no network namespace (only its audit hook kept the answer off the
  network) the verdict carries the suffix ``:no_net_isolation`` (``passed:no_net_isolation``).
- ``final_number`` (arithmetic word problems): the answer's final number (``The answer is N``,
  else the last number) equals the known answer. ``task_check``: ``passed``, ``failed``,
  ``no_number``.

Prompts without a checker (builtin, MT-Bench) get nulls in both columns; so do turns after the
first (the reference belongs to the first question).
"""

from __future__ import annotations

import re
from typing import Any, Optional

from spsamp.data import humaneval
from spsamp.sandbox import STATUSES, Limits, run_python

CHECKERS = ("tests", "final_number")
# every value task_check may take (the records validator checks the column against it)
TASK_CHECKS = ("passed", "failed", "syntax_error", "timeout", "resource_limit", "blocked", "sandbox_error", "no_code", "no_number")

UNKNOWN = ("sandbox_error",)  # verdicts that say nothing about the answer: task_correct stays null
NO_NET_ISOLATION = ":no_net_isolation"  # suffix of a sandbox verdict the kernel did not keep off the network


def verdict(task_check: Optional[str]) -> Optional[str]:
    """The verdict in a ``task_check`` value, without its containment suffix."""
    return None if task_check is None else task_check.split(":", 1)[0]


def known_task_check(task_check: str) -> bool:
    """A value ``task_check`` may take: a checker's verdict, a sandbox one possibly suffixed."""
    base, sep, suffix = task_check.partition(":")
    return base in TASK_CHECKS and (not sep or (base in STATUSES and sep + suffix == NO_NET_ISOLATION))

# "answer is N", N possibly wrapped as LaTeX or markdown writes it: $N$, \(N\), \boxed{N}, **N**
_OPEN = r"(?:\$|\\\(|\\\[|\\boxed\{|\*\*|\s)*"
_CLOSE = r"(?:\$|\\\)|\\\]|\}|\*\*)*"
ANSWER_RE = re.compile(r"answer\s*(?:is|:)?\s*[:=]?" + _OPEN + r"(-?[\d,]*\.?\d+)", re.IGNORECASE)
# the statement finished: its number closed by a sentence end that cannot continue it (".", "!" or a
# newline, the "." not followed by a digit: "12." could still become "12.5")
STATED_RE = re.compile(ANSWER_RE.pattern + _CLOSE + r"(?:\.(?=\D)|!|\n)", re.IGNORECASE)
NUMBER_RE = re.compile(r"-?\d[\d,]*\.?\d*|-?\.\d+")


def answer_stated(text: str) -> bool:
    """Whether ``text`` has finished an ``answer is N`` statement (:data:`STATED_RE`): from there a
    response that follows the instruction to finish with it has its final number."""
    return STATED_RE.search(text) is not None


def extract_final_number(text: str) -> Optional[float]:
    """The response's final numeric answer: the last ``answer is N``, else the last number, else None."""
    hits = ANSWER_RE.findall(text)
    raw = hits[-1] if hits else (NUMBER_RE.findall(text) or [None])[-1]
    if raw is None:
        return None
    try:
        return float(raw.replace(",", "").rstrip("."))
    except ValueError:
        return None


def run_tests(problem: dict, text: str, limits: Limits = Limits()) -> str:
    """The ``task_check`` of ``text`` (a model's answer) on a HumanEval-format problem's tests: the
    sandbox verdict, suffixed with :data:`NO_NET_ISOLATION` where the network was not isolated."""
    code = humaneval.extract_code(text, problem["entry_point"])
    if code is None:
        return "no_code"
    res = run_python(humaneval.program(problem, code), limits)
    if res.containment is not None and not res.containment.net_isolated:
        return res.status + NO_NET_ISOLATION
    return res.status


def check_text(check: Optional[str], reference: Any, text: str, limits: Limits = Limits()) -> tuple[Optional[bool], Optional[str]]:
    """``(task_correct, task_check)`` of one answer; ``(None, None)`` when there is no checker."""
    if check is None:
        return None, None
    if check == "tests":
        task_check = run_tests(reference, text, limits)
        if verdict(task_check) in UNKNOWN:
            return None, task_check  # the check itself could not run: the answer is neither right nor wrong
        return verdict(task_check) == "passed", task_check
    if check == "final_number":
        got = extract_final_number(text)
        if got is None:
            return False, "no_number"
        ok = abs(got - float(reference)) <= 1e-6 * max(1.0, abs(float(reference)))
        return ok, "passed" if ok else "failed"
    raise ValueError(f"unknown checker {check!r} — use one of {CHECKERS}")


def task_columns(prompt: Any, turn: int, text: str, timeout_s: float = Limits.timeout_s) -> dict[str, Any]:
    """The ``task_correct`` / ``task_check`` record columns for answer ``text`` to ``prompt``'s
    turn ``turn`` (0-based): the runner's one call into this module."""
    check = getattr(prompt, "check", None) if turn == 0 else None
    correct, verdict = check_text(check, getattr(prompt, "reference", None), text, Limits(timeout_s=timeout_s))
    return {"task_correct": correct, "task_check": verdict}


__all__ = ["CHECKERS", "NO_NET_ISOLATION", "TASK_CHECKS", "answer_stated", "check_text", "extract_final_number", "known_task_check",
           "run_tests", "task_columns", "verdict"]
