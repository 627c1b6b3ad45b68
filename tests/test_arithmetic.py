"""dataset=arithmetic: at least 300 checked problems, deterministic, the original stream unchanged, and
harder multi-step variants (dataset.difficulty) whose answers a separate reading of the text confirms."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from conftest import compose_cfg
from spsamp.config import ConfigError, validate
from spsamp.data import load_prompts
from spsamp.data.arithmetic import EVAL_SEED, generate_problems
from spsamp.data.checkers import check_text


def test_difficulty_1_is_the_stream_records_were_written_with():
    # sha256 of (id, prompt, answer) of the first 300 problems of the eval seed, as generated before
    # difficulties existed: a changed generator would silently re-key (and redo) every arithmetic row
    ps = generate_problems(300, seed=EVAL_SEED)
    digest = hashlib.sha256(json.dumps([[p.id, p.prompt, p.answer] for p in ps]).encode()).hexdigest()
    assert digest == "408da16be8aedfb4571a8960a76e2468a9450a3766e54f1ba8803cddf9d28054"


@pytest.mark.parametrize("difficulty", [1, 2, 4])
def test_dataset_has_300_checked_deterministic_problems(difficulty):
    run, _ = validate(compose_cfg(["dataset=arithmetic", f"dataset.difficulty={difficulty}"]))
    ps = load_prompts(run.dataset)
    assert len(ps) >= 300 and len({p.id for p in ps}) == len(ps) and len({p.turns[0] for p in ps}) > 0.95 * len(ps)
    assert all(p.check == "final_number" and isinstance(p.reference, int) and p.reference >= 0 for p in ps)
    assert ps == load_prompts(run.dataset)  # same config, same problems
    p = ps[7]
    assert check_text("final_number", p.reference, f"So the total is ... The answer is {p.reference}.") == (True, "passed")
    assert check_text("final_number", p.reference, f"The answer is {p.reference + 1}.") == (False, "failed")


def solve(question: str) -> int:
    """Reads a multi-step problem's text on its own and computes the answer (the generator's check)."""
    sentences = re.findall(r"[^.?]+[.?]", question)
    x = int(re.search(r"has (\d+) ", sentences[0]).group(1))
    for s in sentences[1:-1]:
        if m := re.search(r"into (\d+) equal bags", s):
            assert x % int(m.group(1)) == 0, s
            x //= int(m.group(1))
        elif "doubles" in s:
            x *= 2
        elif m := re.search(r"gets (\d+) boxes with (\d+) ", s):
            x += int(m.group(1)) * int(m.group(2))
        elif m := re.search(r"gives away (\d+) ", s):
            x -= int(m.group(1))
        elif m := re.search(r"buys (\d+) more", s):
            x += int(m.group(1))
        else:
            raise AssertionError(f"unknown step: {s}")
        assert x >= 0, s
    return x


@pytest.mark.parametrize("difficulty", [2, 3, 5, 8])
def test_harder_problems_have_d_steps_and_right_answers(difficulty):
    ps = generate_problems(200, seed=EVAL_SEED, difficulty=difficulty)
    for p in ps:
        assert p.id.startswith(f"arith-d{difficulty}-s{EVAL_SEED}-")
        assert len(re.findall(r"[^.?]+[.?]", p.question)) == difficulty + 2, p.question  # start, d steps, the question
        assert solve(p.question) == p.answer, p.question
    kinds = {w for p in ps for w in ("bags", "doubles", "boxes", "gives away", "buys") if w in p.question}
    assert len(kinds) == 5, f"some operations never appear: {kinds}"


def test_difficulties_and_seeds_never_share_an_id():
    ids = [p.id for d in (1, 2, 3) for s in (1000, EVAL_SEED) for p in generate_problems(50, seed=s, difficulty=d)]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["dataset=arithmetic", "dataset.difficulty=0"], r"^dataset\.difficulty: must be an integer >= 1, got 0"),
        (["dataset=humaneval", "+dataset.difficulty=3"], r"^dataset\.difficulty: only the generated arithmetic problems have a difficulty"),
    ],
)
def test_bad_difficulty_is_one_config_error_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        validate(compose_cfg(overrides))
    assert "\n" not in str(err.value)



def test_a_summary_keeps_difficulties_apart(tmp_path):
    """Rows of a harder arithmetic set say so in their dataset label, so a sweep over
    dataset.difficulty summarises one line per difficulty instead of pooling them."""
    import pandas as pd

    from spsamp.analysis.summary import sweep_summary
    from spsamp.runner import JobInfo, run_job

    rows = []
    for d in (1, 3):
        overrides = ["model=tiny_random", "method=baseline", "dataset=arithmetic", f"dataset.difficulty={d}",
                     "dataset.max_samples=2", "generation.max_new_tokens=2", "generation.warmup=0"]
        rows += run_job(compose_cfg(overrides), JobInfo(output_dir=str(tmp_path / f"d{d}"))).rows
    assert {r["dataset"] for r in rows} == {"arithmetic", "arithmetic-d3"}
    table = sweep_summary(pd.DataFrame(rows))
    assert sorted(table["dataset"]) == ["arithmetic", "arithmetic-d3"] and list(table["prompts"]) == [2, 2]


def test_older_rows_of_a_harder_set_are_labelled_from_their_prompt_ids():
    import pandas as pd

    from spsamp.analysis.load import dataset_labels

    df = pd.DataFrame({"dataset": ["arithmetic", "arithmetic", "arithmetic-d2", "humaneval"],
                       "prompt_id": ["arith-s7-0", "arith-d3-s7-0", "arith-d2-s7-1", "HumanEval/0"]})
    assert list(dataset_labels(df)) == ["arithmetic", "arithmetic-d3", "arithmetic-d2", "humaneval"]
