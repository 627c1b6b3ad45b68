"""Task checkers: is an answer right? One call per row gives the ``task_correct`` / ``task_check`` columns.

A prompt of a checked dataset carries ``check`` (the checker's name) and ``reference`` (what it
compares with). Checkers:

- ``tests`` (HumanEval): extract the code from the answer, join it with the problem's unit tests
  and run them in the sandbox (:mod:`spsamp.sandbox` — model-written code never runs in this
  process). ``task_check`` is the sandbox verdict (``passed``, ``failed``, ``syntax_error``,
  ``timeout``, ``resource_limit``, ``blocked``, ``sandbox_error``) or ``no_code``.
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
from spsamp.sandbox import Limits, run_python

CHECKERS = ("tests", "final_number")
# every value task_check may take (the records validator checks the column against it)
TASK_CHECKS = ("passed", "failed", "syntax_error", "timeout", "resource_limit", "blocked", "sandbox_error", "no_code", "no_number")

ANSWER_RE = re.compile(r"answer\s*(?:is|:)?\s*[:=]?\s*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)
NUMBER_RE = re.compile(r"-?\d[\d,]*\.?\d*|-?\.\d+")


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
    """Verdict of ``text`` (a model's answer) on a HumanEval-format problem's tests."""
    code = humaneval.extract_code(text, problem["entry_point"])
    if code is None:
        return "no_code"
    return run_python(humaneval.program(problem, code), limits).status


def check_text(check: Optional[str], reference: Any, text: str, limits: Limits = Limits()) -> tuple[Optional[bool], Optional[str]]:
    """``(task_correct, task_check)`` of one answer; ``(None, None)`` when there is no checker."""
    if check is None:
        return None, None
    if check == "tests":
        verdict = run_tests(reference, text, limits)
        return verdict == "passed", verdict
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


__all__ = ["CHECKERS", "TASK_CHECKS", "check_text", "extract_final_number", "run_tests", "task_columns"]
