"""HumanEval and arithmetic as checked datasets: loading, splits, code extraction, checkers, and the
task_correct / task_check columns on every method's rows (hf_* references included)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pyarrow as pa
import pytest

from conftest import compose_cfg, run_py
from spsamp.config import ConfigError, DatasetConfig, validate
from spsamp.data import humaneval, load_prompts, split_half
from spsamp.data.checkers import check_text as check_text_raw
from spsamp.data.checkers import extract_final_number, task_columns, verdict
from spsamp.records import validate_table
from spsamp.records.schema import schema_for
from spsamp.sandbox import Limits

ADD = {"task_id": "toy/add", "prompt": "def add(a, b):\n    \"\"\"Sum of a and b.\"\"\"\n", "entry_point": "add",
       "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"}


def packaged_with_solutions() -> list[dict]:
    with gzip.open(humaneval.package_file(), "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_packaged_humaneval_loads_164_problems_as_instruct_prompts():
    prompts = load_prompts(DatasetConfig(name="humaneval"))
    assert len(prompts) == 164 and len({p.id for p in prompts}) == 164
    p = prompts[0]
    assert p.id == "HumanEval/0" and p.check == "tests" and p.reference["entry_point"] == "has_close_elements"
    assert "```python" in p.turns[0] and "def has_close_elements" in p.turns[0]


def test_split_halves_are_disjoint_fixed_and_cover_everything():
    train = {p.id for p in load_prompts(DatasetConfig(name="humaneval", split="train"))}
    test = {p.id for p in load_prompts(DatasetConfig(name="humaneval", split="test"))}
    assert len(train) == len(test) == 82 and not train & test and len(train | test) == 164
    # fixed by ids alone: the same id set in another order gives the same halves
    ids = [f"q{i}" for i in range(11)]
    assert split_half(ids, "train") == split_half(ids[::-1], "train") and len(split_half(ids, "train")) == 6
    assert split_half(ids, "train") | split_half(ids, "test") == set(ids)
    with pytest.raises(ConfigError, match="dataset.split: must be all, train or test"):
        validate(compose_cfg(["dataset=humaneval", "dataset.split=val"]))


def check_text(*args, **kw):
    """check_text with the verdict alone: where the machine gives the sandbox no network namespace,
    task_check carries a containment suffix (tests/test_sandbox_hostile.py checks it)."""
    correct, task_check = check_text_raw(*args, **kw)
    return correct, verdict(task_check)


def test_canonical_solutions_pass_and_broken_ones_fail():
    probs = packaged_with_solutions()
    for prob in (probs[0], probs[2], probs[53]):
        answer = f"Here you go:\n```python\n{prob['prompt']}{prob['canonical_solution']}```\nDone."
        assert check_text("tests", prob, answer) == (True, "passed"), prob["task_id"]
        # the body alone (no signature) completes the problem's own prompt
        assert check_text("tests", prob, f"```python\n{prob['canonical_solution']}```") == (True, "passed")
    wrong = f"```python\ndef {probs[2]['entry_point']}(number):\n    return 0.0\n```"
    assert check_text("tests", probs[2], wrong) == (False, "failed")


@pytest.mark.parametrize(
    "answer, verdict",
    [
        ("```python\ndef add(a, b):\n    return a + b\n```", "passed"),
        ("```py\ndef add(a, b):\n    return a - b\n```", "failed"),
        ("```python\ndef add(a, b)\n    return a + b\n```", "syntax_error"),
        ("I cannot help with that.", "no_code"),
        ("def add(a, b):\n    return a + b\n", "passed"),  # no fence, but the whole answer is code
        ("```python\ndef add(a, b):\n    while True:\n        pass\n```", "timeout"),
        ("```python\nimport os\ndef add(a, b):\n    os.system('true')\n    return a + b\n```", "blocked"),
        ("```python\ndef add(a, b):\n    return bytearray(2**40)\n```", "resource_limit"),
        ("```python\ndef add(a, b):\n    return a + b", "passed"),  # cut by max_new_tokens inside the block
    ],
)
def test_checker_verdicts_on_a_hand_written_problem(answer, verdict):
    correct, got = check_text("tests", ADD, answer, limits=Limits(timeout_s=2))
    assert (correct, got) == (verdict == "passed", verdict)


def test_a_sandbox_that_cannot_start_leaves_correctness_unknown(monkeypatch):
    import spsamp.sandbox as sb

    monkeypatch.setattr(sb, "interpreter", lambda as_root=None: None)
    assert check_text("tests", ADD, "```python\ndef add(a, b):\n    return a + b\n```") == (None, "sandbox_error")


def test_extract_code_prefers_the_block_defining_the_entry_point():
    text = "Usage:\n```python\nprint(add(1, 2))\n```\nCode:\n```python\ndef add(a, b):\n    return a + b\n```"
    assert humaneval.extract_code(text, "add").startswith("def add")
    assert humaneval.extract_code("```\nx = 1\n```", "add") == "x = 1\n"
    assert humaneval.block_closed("```python\nx\n```") and not humaneval.block_closed("```python\nx\n")


def test_arithmetic_checker_and_question_file_answers(tmp_path):
    assert extract_final_number("so 3 + 4 = 7. The answer is 1,234.") == 1234.0
    assert check_text("final_number", 12, "6 + 6 = 12. The answer is 12.") == (True, "passed")
    assert check_text("final_number", 12, "The answer is 13.") == (False, "failed")
    assert check_text("final_number", 12, "no idea") == (False, "no_number")
    ps = load_prompts(DatasetConfig(name="arithmetic", max_samples=4))
    assert len(ps) == 4 and all(p.check == "final_number" and isinstance(p.reference, int) for p in ps)
    f = tmp_path / "q.jsonl"
    f.write_text(json.dumps({"question_id": "a", "turns": ["1+1?"], "answer": 2}) + "\n" + json.dumps({"question_id": "b", "turns": ["hi"]}) + "\n")
    a, b = load_prompts(DatasetConfig(name="mine", path=str(f)))
    assert (a.check, a.reference, b.check) == ("final_number", 2, None)
    assert task_columns(a, 0, "It is 2.") == {"task_correct": True, "task_check": "passed"}
    assert task_columns(a, 1, "It is 2.") == {"task_correct": None, "task_check": None}  # later turns: unchecked
    assert task_columns(b, 0, "2") == {"task_correct": None, "task_check": None}
    f.write_text(json.dumps({"question_id": "a", "turns": ["1+1?"], "answer": "two"}) + "\n")
    with pytest.raises(ConfigError, match=r"q.jsonl:1: 'answer' must be a number"):
        load_prompts(DatasetConfig(name="mine", path=str(f)))


def test_bad_problem_file_names_the_line(tmp_path):
    f = tmp_path / "he.jsonl"
    f.write_text(json.dumps(ADD) + "\n" + json.dumps({"task_id": "x", "prompt": "p"}) + "\n")
    with pytest.raises(ConfigError, match=r"he.jsonl:2: needs string field\(s\) \['entry_point', 'test'\]"):
        load_prompts(DatasetConfig(name="humaneval", path=str(f)))


def test_every_method_row_carries_the_task_columns(tmp_path):
    # hand-written problems, tiny random models: the answers are garbage, so every verdict is a
    # failure — what matters is that each method's rows (hf_* references too) are checked
    f = tmp_path / "he.jsonl"
    sub = dict(ADD, task_id="toy/sub", prompt="def sub(a, b):\n", entry_point="sub",
               test="def check(candidate):\n    assert candidate(3, 1) == 2\n")
    f.write_text(json.dumps(ADD) + "\n" + json.dumps(sub) + "\n")
    run_py(["-m", "model=tiny_random", "generation.max_new_tokens=6", "dataset=humaneval", f"dataset.path={f}",
            "method=baseline,speculative,hf_generate", f"hydra.sweep.dir={tmp_path}/sweep"])
    from spsamp.analysis import load_records

    df = load_records(str(tmp_path / "sweep"))
    assert set(df.method) == {"baseline", "speculative", "hf_generate"} and len(df) == 6
    assert df.task_correct.notna().all() and not df.task_correct.astype(bool).any()
    assert {verdict(c) for c in df.task_check} <= {"no_code", "failed", "syntax_error"}
    for records in (tmp_path / "sweep").rglob("records.parquet"):
        out = subprocess.run([sys.executable, "-m", "spsamp.records", "validate", str(records)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_validator_checks_the_task_columns():
    base = {"run_id": "r", "resume_key": "k", "status": "ok", "method": "baseline"}
    rows = [dict(base, resume_key="a", task_correct=True, task_check="passed"),
            dict(base, resume_key="b", task_correct=None, task_check=None)]
    rows.append(dict(base, resume_key="s", task_correct=None, task_check="sandbox_error"))  # the check could not run
    assert validate_table(pa.Table.from_pylist(rows, schema=schema_for(rows))) == []
    for bad, msg in (
        (dict(base, resume_key="c", task_correct=False, task_check="exploded"), "unknown values ['exploded']"),
        (dict(base, resume_key="c", task_correct=True, task_check=None), "null on the same rows"),
        (dict(base, resume_key="c", task_correct=True, task_check="failed"), "true exactly where"),
        (dict(base, resume_key="c", task_correct=None, task_check="failed"), "null on the same rows"),
    ):
        problems = validate_table(pa.Table.from_pylist(rows + [bad], schema=schema_for(rows + [bad])))
        assert any(msg in p for p in problems), problems
