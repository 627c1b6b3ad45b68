"""Bad input and faults a user meets (issue #16): a bad first prompt, prompts longer than the context,
jobs and sweeps whose rows all fail, and one line instead of a traceback."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import compose_cfg, run_py
from spsamp.records import RECORDS_PARQUET
from spsamp.runner import JobInfo, run_job


def questions(path, *turns: str):
    path.write_text("".join(json.dumps({"question_id": f"q{i}", "category": "x", "turns": [t]}) + "\n" for i, t in enumerate(turns)))
    return path


def job(tmp_path, qfile, *extra):
    cfg = compose_cfg(["model=tiny_random", "generation.max_new_tokens=8", "dataset=mt_bench", f"dataset.path={qfile}", *extra])
    return run_job(cfg, JobInfo(output_dir=str(tmp_path / "run")))


def test_bad_first_prompt_fails_only_its_own_row_and_over_long_prompts_name_both_lengths(tmp_path):
    qfile = questions(tmp_path / "q.jsonl", "word " * 80_000, "Say hi.", "Count to three.")
    job(tmp_path, qfile)
    df = pd.read_parquet(tmp_path / "run" / RECORDS_PARQUET).set_index("prompt_id")
    assert df.loc["q0", "status"] == "error" and df.loc["q0", "error_type"] == "PromptTooLong"
    msg = df.loc["q0", "error_message"]
    # both lengths (prompt + max_new_tokens, and the model's 512 positions) and the fix
    assert "+ generation.max_new_tokens=8" in msg and "context of 512 positions" in msg and "dataset.truncate=left" in msg
    assert (df.loc[["q1", "q2"], "status"] == "ok").all()
    assert df.prompt_truncated_from.isna().all()
    # asked for, the prompt is cut to fit and the row says so
    job(tmp_path, qfile, "dataset.truncate=left")
    df = pd.read_parquet(tmp_path / "run" / RECORDS_PARQUET).set_index("prompt_id")
    assert df.loc["q0", "status"] == "ok" and df.loc["q0", "prompt_tokens"] + 8 <= 512
    assert df.loc["q0", "prompt_truncated_from"] > 512


@pytest.mark.parametrize("value", ["right", "yes"])
def test_truncate_takes_only_left(value):
    from spsamp.config import ConfigError, validate

    with pytest.raises(ConfigError, match="dataset.truncate"):
        validate(compose_cfg(["model=tiny_random", f"dataset.truncate={value}"]))


def test_single_run_whose_rows_all_failed_exits_nonzero(tmp_path):
    proc = run_py(["model=tiny_random", "generation.max_new_tokens=4", "dataset.max_samples=1", "+fail_on_prompt=writing-1",
                   f"hydra.run.dir={tmp_path}/run"], check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "all 1 rows this job decoded failed" in proc.stderr + proc.stdout


def test_sweep_whose_jobs_all_failed_exits_nonzero_and_says_so(tmp_path):
    proc = run_py(["-m", "model=tiny_random", "generation.max_new_tokens=4", "dataset.max_samples=1", "+fail_on_prompt=writing-1",
                   "generation.temperature=0,0.5", f"hydra.sweep.dir={tmp_path}/sweep"], check=False)
    out = proc.stderr + proc.stdout
    assert proc.returncode == 1, out[-2000:]
    assert "all 2 jobs of this sweep failed" in out and "InjectedFailure" in out
    assert "Traceback" not in out


def test_output_dir_that_cannot_be_created_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_py(["model=tiny_random", f"hydra.run.dir={blocker}/x"], check=False)
    assert proc.returncode == 2
    assert "hydra.run.dir: cannot create" in proc.stderr and "Traceback" not in proc.stderr


BAD_VALUES = [
    (["generation.temperature=inf"], "generation.temperature: must be >= 0 and finite"),
    (["generation.temperature=nan"], "generation.temperature: must be >= 0 and finite"),
    (["generation.seed=-1"], "generation.seed: must be in [0, 2**63)"),
    (["dataset.categories=[]"], "dataset.categories: an empty list selects no question"),
    (["model=tiny_random", "method=speculative", "method.k=1000"], "method.k: must be <= 64"),
    (["dataset.truncate=both"], "dataset.truncate: must be null or 'left'"),
]


@pytest.mark.parametrize("overrides,expected", BAD_VALUES)
def test_silently_accepted_values_are_refused_in_one_line(overrides, expected):
    from spsamp.config import ConfigError, validate

    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(overrides))
    msg = str(err.value)
    assert msg.startswith(expected) and "\n" not in msg and " — " in msg, msg


def _load(path):
    from spsamp.config import DatasetConfig
    from spsamp.data import load_prompts

    return load_prompts(DatasetConfig(name="mt_bench", path=str(path)))


@pytest.mark.parametrize("content,expected", [
    (b'{"question_id": 1, "turns": ["a"]}\n{"question_id": "1", "turns": ["b"]}\n', r":2: question_id '1' is also used at .*:1"),
    (b'{"question_id": null, "turns": ["a"]}\n', r":1: question_id is null"),
    (b'{"question_id": 1, "turns": ["caf\xe9"]}\n', r":1: not UTF-8 text \(byte 0xe9\) — save the file as UTF-8"),
])
def test_bad_question_files_name_file_line_and_fix(tmp_path, content, expected):
    from spsamp.config import ConfigError

    path = tmp_path / "q.jsonl"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=expected):
        _load(path)


def test_directory_as_dataset_path_is_one_line(tmp_path):
    from spsamp.config import ConfigError

    with pytest.raises(ConfigError, match=r"^dataset.path: .* is a directory — pass the questions file in it"):
        _load(tmp_path)


def test_non_utf8_dataset_through_run_py_is_one_line(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(b'{"question_id": 1, "turns": ["\xff"]}\n')
    proc = run_py(["model=tiny_random", "dataset=mt_bench", f"dataset.path={path}", f"hydra.run.dir={tmp_path}/run"], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "not UTF-8 text" in out and "Traceback" not in out


def test_mismatched_tokenizers_are_refused_before_any_weights_load(tmp_path):
    from spsamp.models import loading

    loading.clear_model_cache()
    cfg = compose_cfg(["model=tiny_random", "method=speculative", "generation.max_new_tokens=4", "dataset.max_samples=1",
                       "model.draft.tiny.vocab_size=256"])
    with pytest.raises(loading.ModelLoadError, match=r"^model.draft: draft vocab \(256\) is larger than the target's \(128\)"):
        run_job(cfg, JobInfo(output_dir=str(tmp_path / "run")))
    assert not loading._LOADED  # refused from the tokenizer files: no model was built
    df = pd.read_parquet(tmp_path / "run" / RECORDS_PARQUET)
    assert list(df.error_type) == ["ModelLoadError"]


def _autojudge(checkpoint):
    from spsamp.config import validate

    return validate(compose_cfg(["model=tiny_random", "method=autojudge", f"method.checkpoint={checkpoint}"]))


def _pair(path, truncate_tensors=False, sidecar="ok"):
    import torch
    from safetensors.torch import save_file

    from spsamp.autojudge.checkpoint import FORMAT, sidecar_path

    save_file({"w": torch.zeros(64)}, str(path))
    if truncate_tensors:
        path.write_bytes(path.read_bytes()[:-40])
    side = sidecar_path(path)
    if sidecar == "ok":
        side.write_text(json.dumps({"format": FORMAT, "judge": {"kind": "logistic"}}))
    elif sidecar == "broken":
        side.write_text('{"format": "spsamp-autoj')
    return path


@pytest.mark.parametrize("case,expected", [
    ("unwritable", r"^method.checkpoint: cannot write .* — point method.checkpoint to a writable place"),
    ("truncated", r"^method.checkpoint: .* is unreadable \(.*\) — delete"),
    ("broken_sidecar", r"^method.checkpoint: .* is unreadable \(JSONDecodeError"),
    ("no_sidecar", r"^method.checkpoint: .* exists but judge.safetensors.json is missing \(half a checkpoint\)"),
    ("directory", r"^method.checkpoint: .* is a directory"),
])
def test_unusable_autojudge_checkpoint_is_refused_at_validation(tmp_path, case, expected):
    from spsamp.config import ConfigError

    path = tmp_path / "judge.safetensors"
    if case == "unwritable":
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "sub" / "judge.safetensors"
    elif case == "truncated":
        _pair(path, truncate_tensors=True)
    elif case == "broken_sidecar":
        _pair(path, sidecar="broken")
    elif case == "no_sidecar":
        _pair(path, sidecar=None)
    elif case == "directory":
        path = tmp_path
    # validate() runs before any model loads or any mining: the refusal costs no model time
    with pytest.raises(ConfigError, match=expected) as err:
        _autojudge(path)
    assert "\n" not in str(err.value)


def test_fresh_writable_autojudge_checkpoint_passes_validation(tmp_path):
    _autojudge(tmp_path / "new" / "dir" / "judge.safetensors")
    assert not (tmp_path / "new").exists()  # checking leaves nothing behind


def test_model_that_cannot_load_is_one_line_and_exit_1(tmp_path):
    proc = run_py(["model=tiny_random", "model.target.source=local", "+model.target.id=/nonexistent/model", "dataset.max_samples=2",
                   f"hydra.run.dir={tmp_path}/run"], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in out, out[-2000:]
    assert "job - failed: ModelLoadError" in out and "2 error rows" in out


@pytest.mark.parametrize("method", ["speculative", "specexec", "hf_generate", "hf_assisted"])
def test_over_long_prompt_is_an_error_row_for_every_method(tmp_path, method):
    qfile = questions(tmp_path / "q.jsonl", "word " * 200, "Hi.")  # ~1000 tokens > 512 positions
    job(tmp_path, qfile, f"method={method}")
    df = pd.read_parquet(tmp_path / "run" / RECORDS_PARQUET).set_index("prompt_id")
    assert df.loc["q0", "error_type"] == "PromptTooLong" and df.loc["q1", "status"] == "ok"


def test_local_pair_with_different_tokenizers_is_refused_from_files(tmp_path):
    import shutil

    from spsamp.models import loading
    from spsamp.models.placement import tiny_checkpoint

    run, _ = __import__("spsamp.config", fromlist=["validate"]).validate(compose_cfg(["model=tiny_random"]))
    target = tiny_checkpoint(run.model.target, tmp_path / "cache")
    draft = tmp_path / "draft"
    shutil.copytree(target, draft)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(draft))
    tok.add_tokens(["<not-in-the-target>"])
    tok.save_pretrained(str(draft))
    loading.clear_model_cache()
    cfg = compose_cfg(["model=tiny_random", "method=speculative", "dataset.max_samples=1", "model.target.source=local",
                       f"+model.target.id={target}", "model.draft.source=local", f"+model.draft.id={draft}"])
    with pytest.raises(loading.ModelLoadError, match=r"^model.draft: draft .* tokenize differently .* pick a draft from the target's family"):
        run_job(cfg, JobInfo(output_dir=str(tmp_path / "run")))
    assert not loading._LOADED
