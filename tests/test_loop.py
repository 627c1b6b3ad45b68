"""The one speculative loop (spsamp/loop.py): what it computes, what it counts, what it never wastes.

Each test here failed on the three hand-written loops it replaced (issue #14, item 8).
"""

from __future__ import annotations

import sys

import pandas as pd
import pytest
import torch

from conftest import compose_cfg, run_py
from spsamp.config import GenerationConfig, validate
from spsamp.decoders.autojudge import AutoJudgeDecoder
from spsamp.decoders.specexec import SpecExecDecoder
from spsamp.decoders.speculative import SpeculativeDecoder
from spsamp.drafting.lookup import lookup
from spsamp.models import load_model
from toy_models import ToyLM


@pytest.fixture(scope="module")
def tiny():
    run, _ = validate(compose_cfg(["model=tiny_random"]))
    return load_model(run.model.target, run.hardware), load_model(run.model.draft, run.hardware)


def count_q_rows(monkeypatch) -> list[int]:
    """Rows turned into target probabilities: every ``logits_to_probs`` outside the drafters."""
    rows: list[int] = []
    for name, mod in list(sys.modules.items()):
        if not name.startswith("spsamp.") or name.startswith("spsamp.drafting") or not hasattr(mod, "logits_to_probs"):
            continue
        real = mod.logits_to_probs

        def counted(logits, *a, _real=real, **kw):
            rows.append(1 if logits.dim() == 1 else int(logits.shape[0]))
            return _real(logits, *a, **kw)

        monkeypatch.setattr(mod, "logits_to_probs", counted)
    return rows


@pytest.mark.parametrize("temperature, top_p", [(0.0, 1.0), (1.0, 1.0), (0.8, 0.9)])
def test_specexec_processes_only_the_rows_its_walk_visits(tiny, monkeypatch, temperature, top_p, one_thread):
    target, draft = tiny
    rows = count_q_rows(monkeypatch)
    gen = GenerationConfig(max_new_tokens=24, temperature=temperature, top_p=top_p)
    out = SpecExecDecoder(budget=16, parallel_branches=4).generate(target, draft, torch.tensor([3, 4, 5]), gen, torch.Generator().manual_seed(0))
    # the walk reads the root row, then one row per accepted node: the first token's row plus
    # (kept tokens of each step) rows — never the budget + 1 rows of every tree (no eos in this vocab)
    assert out.stats.proposed > out.stats.steps, "trees must be larger than the walks for this test to mean anything"
    assert sum(rows) == 1 + sum(out.stats.accepted_lengths) == len(out.tokens)


@pytest.mark.parametrize("max_new, deepest", [(1, 0), (2, 0), (3, 1), (4, 2), (6, 4)])
def test_specexec_never_drafts_deeper_than_the_tokens_left(tiny, max_new, deepest, one_thread):
    target, draft = tiny
    gen = GenerationConfig(max_new_tokens=max_new)
    dec = SpecExecDecoder(budget=16, parallel_branches=4, max_depth=8)
    depths: list[int] = []
    propose = dec.drafter.propose

    def spy(st, size, max_depth, hidden):
        prop = propose(st, size, max_depth, hidden)
        depths.append(prop.max_depth)
        assert prop.max_depth <= st.room - 1, "a node no output could hold was drafted"
        return prop

    dec.drafter.propose = spy
    out = dec.generate(target, draft, torch.tensor([3, 4, 5]), gen, torch.Generator())
    assert len(out.tokens) == max_new
    assert max(depths, default=0) <= deepest
    if deepest == 0:  # one token left after the prefill's: no tree, no draft pass beyond the prefill
        assert out.stats.proposed == 0 and out.stats.draft_calls == 1


@pytest.mark.parametrize("make", [lambda: SpeculativeDecoder(k=4), lambda: SpecExecDecoder(budget=8, parallel_branches=2, max_depth=4)],
                         ids=["speculative", "specexec"])
def test_statistics_count_only_tokens_that_reach_the_output(make, one_thread):
    # twin draft, eos = 0 likely: long accepted chunks that an eos cuts
    q, p = ToyLM(6, 11, 1.5, eos_ids=[0]), ToyLM(6, 11, 1.5, eos_ids=[0])
    rng = torch.Generator().manual_seed(5)
    cut = 0
    for _ in range(150):
        out = make().generate(q, p, torch.tensor([1]), GenerationConfig(max_new_tokens=8, temperature=1.0), rng)
        s = out.stats
        assert sum(s.accepted_lengths) == len(out.tokens) - 1, "a step counted tokens the output never got"
        assert s.accepted <= len(out.tokens) - 1
        assert s.accepted <= s.proposed
        cut += int(out.tokens[-1] == 0 and len(out.tokens) < 8)
    assert cut > 20, "the toy must end many answers on an eos for this test to mean anything"


class NoJudge:
    """Stands in for a trained judge at thresholds 0 and 1, where none may be consulted."""

    def p_important(self, x):
        raise AssertionError("the judge ran at a threshold that fixes every decision")


def test_autojudge_asks_for_hidden_states_only_when_a_judge_can_decide(tiny, monkeypatch, one_thread):
    target, draft = tiny
    asked: list[bool] = []
    for lm in (target, draft):
        real = lm.forward

        def forward(ids, *a, _real=real, hidden=False, **kw):
            asked.append(hidden)
            return _real(ids, *a, hidden=hidden, **kw)

        monkeypatch.setattr(lm, "forward", forward)
    gen = GenerationConfig(max_new_tokens=16)
    dec = AutoJudgeDecoder(k=4, checkpoint="unused")
    dec.judge = NoJudge()
    for threshold in (0.0, 1.0):
        dec.params.threshold = threshold
        asked.clear()
        out = dec.generate(target, draft, torch.tensor([3, 4, 5]), gen, torch.Generator())
        assert len(out.tokens) == 16 and asked and not any(asked), f"hidden states computed at threshold {threshold}"

    class Zero:
        def p_important(self, x):
            return torch.zeros(x.shape[0], dtype=torch.float64)

    dec.judge, dec.params.threshold = Zero(), 0.5
    asked.clear()
    out = dec.generate(target, draft, torch.tensor([3, 4, 5]), gen, torch.Generator())
    assert any(asked) and out.stats.extra["mismatches_judged"] == out.stats.extra["judge_accepted"] > 0


def test_lookup_finds_the_first_longest_match_and_stops_at_eos():
    assert lookup([1, 2, 3, 4, 1, 2], 3, 2) == [3, 4, 1]
    assert lookup([1, 2, 3, 4, 1, 2], 10, 2) == [3, 4, 1, 2]  # the continuation may run into the suffix
    assert lookup([7, 2, 9, 1, 2, 5, 1, 2], 2, 2) == [5, 1]  # bigram "1 2" first, not unigram "2"
    assert lookup([5, 1, 2], 3, 2) == []
    assert lookup([1, 2, 0, 3, 1, 2], 3, 2, eos_ids={0}) == [0]  # nothing past an eos
    assert lookup([1, 2, 3, 1, 2], 0, 2) == [] and lookup([4], 3, 2) == []


def test_prompt_lookup_runs_with_a_preset_that_has_no_draft(tmp_path):
    run, params = validate(compose_cfg(["model=tiny_random", "method=prompt_lookup", "model.draft=null", "method.k=3"]))
    assert run.model.draft is None and params.k == 3 and params.lookup_ngram == 2
    run_py(["model=tiny_random", "method=prompt_lookup", "model.draft=null", "generation.max_new_tokens=24",
            "dataset.max_samples=2", f"hydra.run.dir={tmp_path}/run"])
    df = pd.read_parquet(tmp_path / "run" / "records.parquet")
    assert (df.status == "ok").all() and df.draft_model.isna().all()
    assert df.proposed.notna().all() and (df.proposed > 0).any(), "prompt lookup rows record what they proposed"
    assert (df.target_calls <= df.new_tokens).all()
