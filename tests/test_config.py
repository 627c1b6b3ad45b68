"""Every option of every config group composes and validates; bad input fails with one line."""

from __future__ import annotations

import pytest

from conftest import CONF, compose_cfg, run_py
from spsamp.config import ConfigError, validate

GROUPS = ["model", "method", "dataset", "hardware", "paths"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(group, option):
    overrides = [f"{group}={option}"]
    if group == "dataset" and option != "builtin":
        overrides.append("dataset.path=/some/questions.jsonl")  # required field, not read by validate
    if group == "hardware" and option in ("cuda", "offload"):
        overrides.append("model=tiny_random")  # smollm2's int8_dynamic draft is CPU-only
    if group == "model" and option == "gpt_oss_20b":
        overrides.append("method=baseline")  # no draft in this preset
    cfg = compose_cfg(overrides)
    run, params = validate(cfg)
    assert params.name == cfg.method.name
    assert run.model.name == cfg.model.name


def test_default_composition():
    run, params = validate(compose_cfg())
    assert (run.model.name, params.name, run.dataset.name, run.hardware.name) == ("smollm2_135m", "baseline", "builtin", "cpu")
    assert run.paths.output_dir.endswith("/outputs")
    assert run.generation.temperature == 0.0


BAD = [
    (["generation.max_new_tokens=0"], "generation.max_new_tokens: must be > 0"),
    (["generation.temperature=-0.1"], "generation.temperature: must be >= 0"),
    (["generation.top_p=0"], "generation.top_p: must be in (0, 1]"),
    (["generation.top_p=1.5"], "generation.top_p: must be in (0, 1]"),
    (["generation.top_k=-1"], "generation.top_k: must be >= 0"),
    (["generation.repeats=0"], "generation.repeats: must be >= 1"),
    (["generation.max_new_tokens=abc"], "generation.max_new_tokens:"),
    (["generation.temperature=hot"], "generation.temperature:"),
    (["+generation.tempreature=0.5"], "generation.tempreature: unknown key"),
    (["+model.target.dtpye=float32"], "model.target.dtpye: unknown key"),
    (["model.target.dtype=float8"], "model.target.dtype: unknown dtype"),
    (["model.draft.quantization=int3"], "model.draft.quantization: unknown quantization"),
    (["hardware.dtype=half-ish"], "hardware.dtype: unknown dtype"),
    (["dataset=mt_bench"], "dataset.path: dataset 'mt_bench' needs a path"),
    (["dataset.turns=all"], "dataset.turns: must be 'first' or 'both'"),
    (["+method.k=3"], "method.k: unknown key"),
    (["method=speculative", "method.stop_below=1.5"], "method.stop_below: must be a probability in (0, 1)"),
    (["method=speculative", "method.stop_below=0"], "method.stop_below: must be a probability in (0, 1)"),
    (["method=speculative", "method.k=auto", "method.stop_below=0.4"], "method.stop_below: k=auto sizes plain chains, not stopped ones — give a fixed cap"),
    (["method=speculative", "method.stop_below=often"], "method.stop_below:"),
    (["method=speculative", "method.stop_below=0.4"], None),
    (["method=speculative", "method.lookup=-1"], "method.lookup: must be an integer >= 0"),
    (["method=speculative", "method.lookup=10", "method.lookup_ngram=0"], "method.lookup_ngram: must be an integer >= 1"),
    (["method=speculative", "method.lookup=10", "method.lookup_min_ngram=4"], "method.lookup_min_ngram: 4 is above method.lookup_ngram=3"),
    (["method=speculative", "method.lookup=many"], "method.lookup:"),
    (["method=speculative", "method.k=8", "method.lookup=10", "method.stop_below=0.4"], None),
    (["method._target_=spsamp.nope.Decoder"], "method._target_: cannot import"),
    (["model=gpt_oss_20b", "method._target_=spsamp.decoders.baseline.BaselineDecoder"], None),  # baseline needs no draft
]


@pytest.mark.parametrize("overrides,expected", BAD)
def test_bad_input_is_one_line_naming_the_field(overrides, expected):
    cfg = compose_cfg(overrides)
    if expected is None:
        validate(cfg)
        return
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    msg = str(err.value)
    assert msg.startswith(expected), msg
    assert "\n" not in msg and " — " in msg  # one line: problem, then the fix


def test_run_py_reports_config_error_in_one_line_before_loading(tmp_path):
    # a model that does not exist anywhere: the run must stop at validation, long before loading
    proc = run_py(["model.target.source=hub", "generation.top_p=2", f"hydra.run.dir={tmp_path}"], check=False)
    assert proc.returncode == 2
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "config error" in ln]
    assert len(lines) == 1 and "generation.top_p: must be in (0, 1], got 2" in lines[0], proc.stdout + proc.stderr
    assert "Loading weights" not in proc.stderr


def test_bad_dataset_file_names_file_and_line(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question_id": 1, "category": "math", "turns": ["What is 2+2?"]}\n{"question_id": 2, "turns": [}\n')
    cfg = compose_cfg(["dataset=mt_bench", f"dataset.path={bad}"])
    from spsamp.data import load_prompts

    run, _ = validate(cfg)
    with pytest.raises(ConfigError, match=rf"^{bad}:2: invalid JSON"):
        load_prompts(run.dataset)


def test_cfg_job_prints_the_composition():
    proc = run_py(["--cfg", "job", "model=tiny_random"])
    assert "tiny-llama-target" in proc.stdout and "generation:" in proc.stdout and "_target_: spsamp.decoders.baseline" in proc.stdout
