"""Batch size as a sweep axis (issue #37): generation.batch_size, batched baseline and hf_generate.

1. Validation: batch_size >= 1; a method that decodes one prompt at a time refuses batch_size > 1.
2. Exactness: at T=0 in float64 every batched row equals the prompt decoded alone (mixed prompt
   lengths, a row ending at EOS while others go on, rows hitting max_new_tokens); at T>0 a padded
   row's first two tokens pass a chi-square test against the target's exact distribution, and a
   batch that forgets the padding mask or the per-row positions fails it.
3. The runner: one row per prompt with its batch columns, rows equal to batch_size=1's, a failing
   prompt takes only its own row, resume, turn-by-turn batches, an out-of-memory batch is split.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from conftest import compose_cfg
from spsamp.batching import left_pad, padding, row_masks
from spsamp.config import ConfigError, GenerationConfig, validate
from spsamp.decoders import baseline as baseline_mod
from spsamp.decoders.baseline import BaselineDecoder
from spsamp.decoders.hf_generate import HFGenerateDecoder
from spsamp.decoders.prompt_lookup import PromptLookupDecoder
from spsamp.decoders.speculative import SpeculativeDecoder
from spsamp import loop
from spsamp.models import load_model
from spsamp.records import RECORDS_PARQUET
from spsamp.runner import JobInfo, batches, run_job
from test_losslessness import FAIL_P, PASS_P
from toy_models import chi_square_pvalue, exact_joint

# ---- 1. validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["specexec", "autojudge", "lossy", "hf_assisted",
                                    "hf_assisted_default", "hf_prompt_lookup"])
def test_methods_that_do_not_batch_refuse_batch_size_above_one(method):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(["model=tiny_random", f"method={method}", "generation.batch_size=2"]))
    msg = str(err.value)
    assert msg.startswith("generation.batch_size: ") and "\n" not in msg
    assert "generation.batch_size=1" in msg and "baseline" in msg and "hf_generate" in msg
    validate(compose_cfg(["model=tiny_random", f"method={method}", "generation.batch_size=1"]))  # the default path


@pytest.mark.parametrize("setting", ["method.stop_below=0.3", "method.lookup=4"])
def test_speculative_batches_plain_chains_only(setting):
    with pytest.raises(ConfigError, match=r"^generation.batch_size: speculative batches plain chains only") as err:
        validate(compose_cfg(["model=tiny_random", "method=speculative", setting, "generation.batch_size=2"]))
    assert setting.split("=")[0] in str(err.value)
    for k in ("3", "auto"):
        validate(compose_cfg(["model=tiny_random", "method=speculative", f"method.k={k}", "generation.batch_size=2"]))


@pytest.mark.parametrize("value", [0, -2])
def test_batch_size_must_be_positive(value):
    with pytest.raises(ConfigError, match=r"^generation.batch_size: must be >= 1"):
        validate(compose_cfg(["model=tiny_random", f"generation.batch_size={value}"]))


def test_comparison_arms_share_the_batch_size():
    from spsamp.comparison import compose_arms

    cfg = compose_cfg(["model=tiny_random", "+compare.arms.a={method:baseline}", "+compare.arms.b={method:hf_generate,generation.batch_size:2}"])
    with pytest.raises(ConfigError, match=r"^compare.arms.b: changes generation.batch_size"):
        compose_arms(cfg, [], compose_cfg)


# ---- 2. exactness ----------------------------------------------------------------------------------

# the third prompt's answer ends at EOS after 11 tokens (asserted below); the others run to max_new_tokens
PROMPTS = ([5, 6, 7], [40, 41, 42, 43, 44, 45], [80, 12, 33, 9], [3])


def tiny(dtype: str):
    run, _ = validate(compose_cfg(["model=tiny_random", f"hardware.dtype={dtype}"]))
    return load_model(run.model.target, run.hardware, run.paths.cache_dir)


@pytest.fixture(scope="module")
def tiny64():
    return tiny("float64")


def alone(target, prompts, gen, seeds=None):
    seeds = seeds or [0] * len(prompts)
    return [BaselineDecoder().generate(target, None, torch.tensor(p), gen, torch.Generator().manual_seed(s)).tokens
            for p, s in zip(prompts, seeds)]


def together(decoder, target, prompts, gen, seeds=None):
    seeds = seeds or [0] * len(prompts)
    return decoder.generate_batch(target, None, [torch.tensor(p) for p in prompts], gen, [torch.Generator().manual_seed(s) for s in seeds])


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (2, 3, 1, 0), (1, 2)])
def test_batched_baseline_rows_equal_each_prompt_alone_float64(tiny64, order, one_thread):
    gen = GenerationConfig(max_new_tokens=30)
    prompts = [PROMPTS[i] for i in order]
    ref = alone(tiny64, prompts, gen)
    out = together(BaselineDecoder(), tiny64, prompts, gen)
    assert [o.tokens for o in out] == ref
    # the cases are there: a row ended at EOS while the others went on to max_new_tokens
    ends = {len(t) < 30 and t[-1] in tiny64.eos_ids for t in ref}
    assert ends == {True, False}
    for o, t in zip(out, ref):  # a finished row stops being counted
        assert o.stats.target_calls == len(t) and sum(o.stats.accepted_lengths) == len(t) - 1


def test_batched_baseline_samples_each_row_as_alone_float64(tiny64, one_thread):
    gen = GenerationConfig(max_new_tokens=12, temperature=1.0, top_k=20)
    seeds = [11, 12, 13, 14]
    assert [o.tokens for o in together(BaselineDecoder(), tiny64, PROMPTS, gen, seeds)] == alone(tiny64, PROMPTS, gen, seeds)


def test_hf_generate_batched_rows_equal_each_prompt_alone(one_thread):
    target = tiny("float32")  # transformers' batched generate is refused in float64 with eager attention (below)
    gen = GenerationConfig(max_new_tokens=30)
    for order in ((0, 1, 2, 3), (2, 3, 1, 0)):
        prompts = [PROMPTS[i] for i in order]
        out = together(HFGenerateDecoder(), target, prompts, gen)
        assert [o.tokens for o in out] == alone(target, prompts, gen) == [o.tokens for o in together(BaselineDecoder(), target, prompts, gen)]
        assert [o.stats.target_calls for o in out] == [len(o.tokens) for o in out]


def test_hf_generate_batched_refuses_float64_eager(tiny64):
    with pytest.raises(ValueError, match="float64 model with eager attention"):
        together(HFGenerateDecoder(), tiny64, PROMPTS[:2], GenerationConfig(max_new_tokens=4))


def test_padding_query_sees_itself_and_real_queries_never_see_padding():
    _, mask = left_pad([torch.tensor([1, 2]), torch.tensor([1, 2, 3, 4])], 0)
    m = row_masks(object(), mask, 4)[:, 0] == 0  # visible
    assert m[0].tolist() == [[True, False, False, False], [False, True, False, False],
                             [False, False, True, False], [False, False, True, True]]
    assert m[1].tolist() == torch.ones(4, 4, dtype=torch.bool).tril().tolist()
    assert padding([2, 4]) == 2 and padding([3]) == 0
    # a model with sliding-window layers gets its masks row by row: a window wider than the text hides nothing more
    from types import SimpleNamespace

    windowed = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(sliding_window=64, layer_types=None)), dtype=torch.float32)
    assert torch.equal(row_masks(windowed, mask, 4), row_masks(object(), mask, 4))
    small = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(sliding_window=2, layer_types=None)), dtype=torch.float32)
    seen = row_masks(small, mask, 4)[1, 0] == 0
    assert seen[3].tolist() == [False, False, True, True]  # the last query sees only its window


# T > 0: the first two tokens of a padded row (prompt (5, 6, 7) next to a longer one) against the
# exact joint of the target, enumerated from single-prompt forwards (top_k keeps it small)
SAMPLED = GenerationConfig(max_new_tokens=2, temperature=1.0, top_k=3)
ROWS, BATCHES = 400, 20  # 8,000 draws of the padded row


class PrefillLogits:
    """A real model as :func:`toy_models.exact_joint` reads one: next-token logits of a whole context."""

    def __init__(self, lm):
        self.lm, self.eos_ids = lm, lm.eos_ids

    def logits(self, ctx):
        return self.lm.prefill(torch.tensor(ctx)).logits[-1]


def padded_row_draws(target, decoder=None, draft=None, gen=SAMPLED):
    short, long = [5, 6, 7], [40, 41, 42, 43, 44, 45, 46, 47]
    prompts = [short, long] * (ROWS // 2)
    draws = []
    for b in range(BATCHES):
        seeds = [b * ROWS + i for i in range(ROWS)]
        out = (decoder or BaselineDecoder()).generate_batch(target, draft, [torch.tensor(p) for p in prompts], gen,
                                                            [torch.Generator().manual_seed(s) for s in seeds])
        draws += [tuple(o.tokens) for o in out[::2]]
    return draws, exact_joint(PrefillLogits(target), short, gen.max_new_tokens, gen.temperature, gen.top_k, gen.top_p)


def test_batched_baseline_padded_row_follows_the_target_distribution(tiny64, one_thread):
    draws, joint = padded_row_draws(tiny64)
    assert len(joint) > 3  # the second token's distribution is in the test too
    assert chi_square_pvalue(draws, joint) > PASS_P


def test_negative_control_batch_without_padding_mask_fails(tiny64, monkeypatch, one_thread):
    # every row attends to the padding in front of it. (Positions counted from the padded column 0
    # are no control here: rotary positions only see offsets, so shifting a row's positions changes
    # nothing beyond rounding on a Llama; they matter for sliding windows and absolute positions)
    monkeypatch.setattr(baseline_mod, "row_masks", lambda lm, mask, n: row_masks(lm, torch.ones_like(mask), n))
    draws, joint = padded_row_draws(tiny64)
    try:
        pval = chi_square_pvalue(draws, joint)
    except AssertionError:  # drew a continuation the target cannot produce: failed outright
        return
    assert pval < FAIL_P


# batched SpS (spsamp.loop.speculate_rows): drafts that are always wrong (the tiny draft), always right
# (the target's own weights) and mostly right (the target with a noisy LM head: ragged acceptance)


@pytest.fixture(scope="module")
def drafts64(tiny64):
    import copy

    from spsamp.models import CausalLM

    run, _ = validate(compose_cfg(["model=tiny_random", "hardware.dtype=float64"]))
    wrong = load_model(run.model.draft, run.hardware, run.paths.cache_dir)
    twin = CausalLM(tiny64.model, tiny64.tokenizer, "twin")
    noisy = copy.deepcopy(tiny64.model)
    with torch.no_grad():
        w = noisy.lm_head.weight
        w.add_(0.08 * torch.randn(w.shape, generator=torch.Generator().manual_seed(0), dtype=w.dtype))
    return {"wrong": wrong, "twin": twin, "near": CausalLM(noisy, tiny64.tokenizer, "near")}


@pytest.mark.parametrize("k", [1, 3, 6])
def test_batched_sps_rows_equal_each_prompt_alone_float64(tiny64, drafts64, k, one_thread):
    greedy, sampled = GenerationConfig(max_new_tokens=30), GenerationConfig(max_new_tokens=14, temperature=1.0)
    seeds = [11, 12, 13, 14]
    ragged = set()
    for name, draft in drafts64.items():
        dec = SpeculativeDecoder(k=k)
        out = dec.generate_batch(tiny64, draft, [torch.tensor(p) for p in PROMPTS], greedy, [torch.Generator() for _ in PROMPTS])
        assert [o.tokens for o in out] == alone(tiny64, PROMPTS, greedy), f"k={k}, draft {name}"
        # sampled: each row draws what SpS draws for it alone (same generator, same order of draws)
        out = dec.generate_batch(tiny64, draft, [torch.tensor(p) for p in PROMPTS], sampled, [torch.Generator().manual_seed(s) for s in seeds])
        ref = [dec.generate(tiny64, draft, torch.tensor(p), sampled, torch.Generator().manual_seed(s)) for p, s in zip(PROMPTS, seeds)]
        assert [o.tokens for o in out] == [r.tokens for r in ref], f"k={k}, draft {name}, T=1"
        for o, r in zip(out, ref):
            assert (o.stats.target_calls, o.stats.proposed, o.stats.accepted, o.stats.rejections, o.stats.accepted_lengths) == \
                (r.stats.target_calls, r.stats.proposed, r.stats.accepted, r.stats.rejections, r.stats.accepted_lengths)
        steps = [tuple(o.stats.accepted_lengths) for o in out]
        ragged.add(len({s[:3] for s in steps}) > 1)
        if name == "twin":
            assert all(o.stats.rejections == 0 for o in out)
    assert True in ragged, "rows of one batch never kept different numbers of tokens in a step"


@pytest.mark.parametrize("k", [1, 3, 10])
def test_batched_prompt_lookup_rows_equal_each_prompt_alone_float64(tiny64, k, one_thread):
    prompts = [[5, 6, 7, 5, 6, 8, 5, 6], *PROMPTS[1:]]  # the first repeats itself: lookups find chains of several tokens
    dec = PromptLookupDecoder(k=k, lookup_ngram=2)
    for gen in (GenerationConfig(max_new_tokens=30), GenerationConfig(max_new_tokens=14, temperature=1.0)):
        out = dec.generate_batch(tiny64, None, [torch.tensor(p) for p in prompts], gen, [torch.Generator().manual_seed(s) for s in range(4)])
        ref = [dec.generate(tiny64, None, torch.tensor(p), gen, torch.Generator().manual_seed(s)) for s, p in enumerate(prompts)]
        assert [o.tokens for o in out] == [r.tokens for r in ref]
        assert [(o.stats.proposed, o.stats.accepted, o.stats.accepted_lengths) for o in out] == \
            [(r.stats.proposed, r.stats.accepted, r.stats.accepted_lengths) for r in ref]
    assert out[0].stats.proposed > out[2].stats.proposed  # ragged chains: rows looked up different lengths
    assert alone(tiny64, prompts, GenerationConfig(max_new_tokens=30)) == \
        [o.tokens for o in dec.generate_batch(tiny64, None, [torch.tensor(p) for p in prompts], GenerationConfig(max_new_tokens=30),
                                              [torch.Generator() for _ in prompts])]


# three tokens: a step that rejects is followed by a pass that reads the rolled-back caches
SPS_SAMPLED = GenerationConfig(max_new_tokens=3, temperature=1.0, top_k=3)


def test_batched_sps_padded_row_follows_the_target_distribution(tiny64, drafts64, one_thread):
    draws, joint = padded_row_draws(tiny64, SpeculativeDecoder(k=2), drafts64["wrong"], SPS_SAMPLED)
    assert len(joint) > 9
    assert chi_square_pvalue(draws, joint) > PASS_P


def test_negative_control_batched_sps_forgetting_the_rollback_fails(tiny64, drafts64, monkeypatch, one_thread):
    monkeypatch.setattr(loop, "roll_back", lambda mask, row, keep: None)  # rejected tokens stay visible
    draws, joint = padded_row_draws(tiny64, SpeculativeDecoder(k=2), drafts64["wrong"], SPS_SAMPLED)
    try:
        pval = chi_square_pvalue(draws, joint)
    except AssertionError:
        return
    assert pval < FAIL_P


# batched SpS with k=auto: one k per batch step, 0 = a plain batched step (no draft pass; the draft is
# fed what it missed in its next pass). A scripted k sequence walks every transition (plain -> chain,
# chain -> plain, rows whose room caps the chain); the sizer's own choice is tested in section 2b.

SCRIPT = (0, 0, 3, 0, 1, 5, 0, 2, 2, 0, 0, 0, 4)


def scripted(dec, script=SCRIPT):
    """``dec``'s batched steps take their k from ``script`` (cycled) instead of the sizer."""
    import itertools

    ks = itertools.cycle(script)
    dec.drafter.size_rows = lambda rows: next(ks)
    return dec


def auto_k(c=0.05, v=None, vd=None):
    """k=auto with fixed costs the run's timings cannot move (toy_models.priced): choices do not
    depend on this machine. Default: a verify pass that costs the same at every width."""
    from toy_models import priced

    dec = SpeculativeDecoder(k="auto")
    priced(dec.drafter, c, v if v is not None else {512: 1.0}, vd if vd is not None else {512: 1.0})
    return dec


@pytest.mark.parametrize("make", [lambda: scripted(SpeculativeDecoder(k="auto")), auto_k], ids=["scripted", "sized"])
def test_batched_auto_k_rows_equal_each_prompt_alone_float64(tiny64, drafts64, make, one_thread):
    """T=0, float64: whatever k each batch step takes (0 included), each row equals the prompt decoded
    alone at batch size 1 — a row ending at EOS while the others go on, rows reaching max_new_tokens.
    With the target's own weights as the draft nothing is ever rejected: after plain steps the draft
    was fed exactly the tokens it had missed."""
    greedy = GenerationConfig(max_new_tokens=30)
    ref = alone(tiny64, PROMPTS, greedy)
    assert {len(t) < 30 and t[-1] in tiny64.eos_ids for t in ref} == {True, False}
    for name, draft in drafts64.items():
        dec = make()
        out = dec.generate_batch(tiny64, draft, [torch.tensor(p) for p in PROMPTS], greedy, [torch.Generator() for _ in PROMPTS])
        assert [o.tokens for o in out] == ref, f"draft {name}"
        for o, t in zip(out, ref):
            s = o.stats
            assert s.target_calls == s.steps + 1 and sum(s.accepted_lengths) == len(t) - 1
            m = s.extra
            if "sizing_sizes" in m:  # the sized run: the batch's k at each of the row's steps
                assert len(m["sizing_sizes"]) == s.steps == m["sizing_steps"]
        if name == "twin":
            assert all(o.stats.rejections == 0 and o.stats.accepted > 0 for o in out)
    scripted_ks = [o.stats.extra.get("sizing_sizes") for o in out]
    assert all(k is None for k in scripted_ks) or all(max(k) > 0 for k in scripted_ks)


def test_batched_auto_k_padded_row_follows_the_target_distribution(tiny64, drafts64, one_thread):
    # four tokens: plain steps, chains after them (a draft pass that catches up) and rejections in one row
    gen = GenerationConfig(max_new_tokens=4, temperature=1.0, top_k=3)
    draws, joint = padded_row_draws(tiny64, scripted(SpeculativeDecoder(k="auto"), (0, 2, 1, 0, 3)), drafts64["near"], gen)
    assert len(joint) > 27
    assert chi_square_pvalue(draws, joint) > PASS_P


def test_batched_auto_k_sized_padded_row_follows_the_target_distribution(tiny64, drafts64, one_thread):
    draws, joint = padded_row_draws(tiny64, auto_k(v={4: 1.0, 512: 60.0}), drafts64["wrong"], SPS_SAMPLED)
    assert chi_square_pvalue(draws, joint) > PASS_P


# ---- 2b. the batch's k follows the verify pass's cost -------------------------------------------------


def batch_k(rows: int, v: dict, alpha_steps: int = 20, keep=lambda k: k) -> int:
    """The k a batch of ``rows`` rows settles on under costs ``v`` (fixed: priced) after
    ``alpha_steps`` steps in which every row kept ``keep(k)`` of its k draft tokens."""
    import dataclasses

    from spsamp.cost_model import PRIORS, Costs, VerifyCost
    from spsamp.drafting.sizing import RowsChainSizer
    from spsamp.proposals import Proposal, RowsStep

    sizer = RowsChainSizer(Costs(c=0.05, v=VerifyCost(v), vd=VerifyCost({512: 1.0})), rows, dataclasses.replace(PRIORS, cost_prior_steps=1e12))
    ks = []
    for _ in range(alpha_steps):
        k = sizer.choose([64] * rows, 2)
        props = [Proposal.chain(torch.arange(1, k + 1)) for _ in range(rows)]
        sizer.observe_rows(RowsStep(props, [keep(k)] * rows, 0.001 * k, 0.01, 0.0, rows * (k + 1), [rows] * k))
        ks.append(k)
    return max(set(ks[-8:]), key=ks[-8:].count)  # the most frequent of the last steps: a k = 1 re-measuring step aside


def test_batched_k_falls_to_zero_as_the_verify_pass_gets_dearer_per_token():
    """A verify pass that costs the same at every width (memory-bound) lets every batch size draft;
    one whose cost per token grows with its width (compute-bound: here v(n) = 1 + (n - 1) / 16, a
    CPU-like curve) makes a wider batch choose shorter chains, and plain steps (k = 0) once no chain
    pays for the wider pass."""
    flat = {n: 1.0 for n in (2, 512)}
    assert all(batch_k(b, flat) > 0 for b in (2, 4, 8, 16))
    steep = {512: 1 + 511 / 16}
    ks = [batch_k(b, steep, keep=lambda k: min(k, 3)) for b in (2, 4, 8, 16, 32)]  # at most 3 kept: shorter chains for wider batches
    assert ks == sorted(ks, reverse=True) and ks[0] > ks[-1] > 0, ks
    ks = [batch_k(b, steep, keep=lambda k: k // 2) for b in (2, 4, 8, 16, 32)]  # half kept: plain steps from some width on
    assert ks == sorted(ks, reverse=True) and ks[0] > 0 and ks[-1] == 0, ks
    # acceptance still counts: with a draft the target always rejects, even a flat pass is not worth drafting for
    assert batch_k(4, flat, keep=lambda k: 0) == 0


def test_a_batch_at_k_zero_re_measures_acceptance_and_drafts_once_chains_pay():
    """A plain step measures no acceptance: a batch whose prior made it choose k = 0 tries a k = 1
    step (its first, then after 8, 16, ... plain ones), and rows that keep every draft token move it
    to chains; rows that keep none leave it plain, its tries ever rarer."""
    import dataclasses

    from spsamp.cost_model import PRIORS, Costs, VerifyCost
    from spsamp.drafting.sizing import RowsChainSizer
    from spsamp.proposals import Proposal, RowsStep

    def run(keep, steps=60):
        pessimist = dataclasses.replace(PRIORS, alpha=0.05, cost_prior_steps=1e12)
        sizer = RowsChainSizer(Costs(c=0.3, v=VerifyCost({4: 1.0, 512: 1.0}), vd=VerifyCost({512: 1.0})), 4, pessimist)
        ks = []
        for _ in range(steps):
            k = sizer.choose([64] * 4, 2)
            props = [Proposal.chain(torch.arange(1, k + 1)) for _ in range(4)]
            sizer.observe_rows(RowsStep(props, [keep(k)] * 4, 0.001 * k, 0.01, 0.0, 4 * (k + 1), [4] * k))
            ks.append(k)
        return ks

    ks = run(lambda k: k)
    assert ks[0] == 1 and ks[-1] > 1
    ks = run(lambda k: 0)
    assert max(ks) == 1 and [i for i, k in enumerate(ks) if k] == [0, 9, 26, 59]


def test_a_batch_drafts_only_when_chains_could_pay_back_the_drafts_catch_up():
    """The draft catches up on the prompts in the batch's first draft pass (a prefill of every row's
    prompt, lazily): worth paying only when chains, even ones the target keeps whole, save more than
    it costs in the tokens left. Long prompts with few tokens to go stay plain without trying; the
    same prompts with many tokens to go, or a draft already caught up, draft."""
    import dataclasses

    from spsamp.cost_model import PRIORS, Costs, VerifyCost
    from spsamp.drafting.sizing import RowsChainSizer

    def first_k(fed: int, room: int) -> int:  # a draft pass costs its tokens; the verify pass is flat
        sizer = RowsChainSizer(Costs(c=0.05, v=VerifyCost({4: 1.0, 512: 1.0}), vd=VerifyCost({2: 2.0, 4096: 4096.0})), 4, PRIORS)
        return sizer.choose([room] * 4, fed)

    assert first_k(fed=2, room=64) > 0
    # the catch-up's price goes into the step's predicted cost, and so into the predicted speedup
    caught_up, behind = (RowsChainSizer(Costs(c=0.05, v=VerifyCost({4: 1.0, 512: 1.0}), vd=VerifyCost({2: 2.0, 4096: 4096.0})), 4, PRIORS)
                         for _ in range(2))
    assert caught_up.choose([4096] * 4, 2) == behind.choose([4096] * 4, 300) > 0
    assert behind.row_choices[0][0].tokens == caught_up.row_choices[0][0].tokens and behind.row_choices[0][0].cost > caught_up.row_choices[0][0].cost
    assert behind.row_metrics(0)["sizing_predicted_speedup"] < caught_up.row_metrics(0)["sizing_predicted_speedup"]
    assert first_k(fed=300, room=64) == 0  # 4 x 300 tokens of draft prefill: more than chains save in 64 tokens
    assert first_k(fed=300, room=4096) > 0
    # a batch that found chains paying, then stayed plain a while, re-measures only while catching up pays
    assert first_k(fed=40, room=64) > 0 and first_k(fed=40, room=8) == 0
    # re-measuring is hoped to find a good pair's acceptance, not a perfect one: where only perfect
    # chains would pay back the catch-up, a batch whose prior says no stays plain
    pessimist = dataclasses.replace(PRIORS, alpha=0.05)
    # a verify pass 0.85 units dearer per 4 more tokens: long perfect chains beat plain steps, 90 % ones do not
    steep = Costs(c=0.05, v=VerifyCost({4: 1.0, 4096: 1 + 0.85 * 4092 / 4}), vd=VerifyCost({4: 1.0, 4096: 1024.0}))
    assert RowsChainSizer(steep, 4, dataclasses.replace(pessimist, explore_alpha=1.0)).choose([64] * 4, 2) == 1
    assert RowsChainSizer(steep, 4, pessimist).choose([64] * 4, 2) == 0


def test_a_catch_up_past_the_widest_probed_draft_pass_costs_at_least_its_tokens_worth():
    """The probe's widest draft pass is ~128 tokens; a catch-up on 8 prompts of 180 tokens is 1,440.
    Extending the last two points' slope (a flat one: the pass over 16 tokens cost little more than
    over 2) would price it below what passes that wide cost per token, and a batch would draft where
    the catch-up does not pay back."""
    from spsamp.cost_model import PRIORS, Costs, VerifyCost
    from spsamp.drafting.sizing import RowsChainSizer

    vd = VerifyCost({16: 1.7, 128: 4.9})  # per token: 0.106 at 16, 0.038 at 128 (the last slope: 0.029)
    assert vd.wide(1440) == pytest.approx(4.9 * 1440 / 128) and vd.wide(1440) > vd(1440)
    assert vd.wide(64) == vd(64) and VerifyCost({2: 1.0, 4: 4.0}).wide(8) == VerifyCost({2: 1.0, 4: 4.0})(8)  # steeper: its own slope

    # a batch at the margin: its verify pass 0.6 units dearer per 8 more tokens, 63 tokens left a row
    v = VerifyCost({8: 1.0, 16: 1.6, 32: 2.8, 64: 5.2, 136: 10.6})
    linear = VerifyCost({16: 1.7, 128: 4.9, 1440: 4.9 + 0.029 * 1312})  # the probe, extended by its last slope
    for draft_curve, drafts in ((linear, True), (vd, False)):
        k = RowsChainSizer(Costs(c=0.1, v=v, vd=draft_curve), 8, PRIORS).choose([63] * 8, 180)
        assert (k > 0) == drafts, (draft_curve.as_dict(), k)


def test_a_wide_batch_on_a_compute_bound_pass_never_drafts():
    """A verify pass whose cost grows with its tokens (v(n) = n / 16 past 16: compute-bound, a
    CPU's wide batch) and a draft that must catch up on 150-token prompts: no chain pays that back
    in 64 tokens, so the batch decodes plainly from its first step to its last — no k = 1 steps to
    re-measure acceptance either."""
    from spsamp.cost_model import PRIORS, Costs, VerifyCost
    from spsamp.drafting.sizing import RowsChainSizer
    from spsamp.proposals import Proposal, RowsStep

    rows = 16
    sizer = RowsChainSizer(Costs(c=0.2, v=VerifyCost({16: 1.0, 4096: 256.0}), vd=VerifyCost({16: 1.0, 4096: 256.0})), rows, PRIORS)
    ks = []
    for step in range(64):
        k = sizer.choose([63 - step] * rows, 150 + step)  # the draft never ran: it lags by the prompt and every step
        assert k == 0, (step, k)
        sizer.observe_rows(RowsStep([Proposal.empty()] * rows, [0] * rows, 0.0, 0.01, 0.0, rows, []))
        ks.append(k)
    assert set(ks) == {0}


def test_a_draft_pass_that_catches_up_is_not_read_as_the_drafts_cost():
    """A batch's first draft pass feeds the prompts (the draft is prefilled lazily) or the tokens of
    plain steps: its seconds are a one-time catch-up, not what a draft pass costs."""
    from spsamp.cost_model import PRIORS, Costs, VerifyCost
    from spsamp.drafting.sizing import RowsChainSizer
    from spsamp.proposals import Proposal, RowsStep

    sizer = RowsChainSizer(Costs(c=0.2, v=VerifyCost({512: 1.0}), vd=VerifyCost({512: 1.0})), 2, PRIORS)
    props = [Proposal.chain(torch.arange(1, 3)) for _ in range(2)]
    sizer.observe_rows(RowsStep(props, [2, 2], 5.0, 0.01, 0.0, 6, [2 * 150, 2]))  # 150 prompt tokens a row, then one more pass
    assert sizer.cost.c == pytest.approx(0.2)
    sizer.observe_rows(RowsStep(props, [2, 2], 0.01, 0.01, 0.0, 6, [2 * 2, 2]))  # steady: 2 tokens a row in the first pass
    assert sizer.cost.c != pytest.approx(0.2)


def test_a_batch_probe_times_the_batch_passes_and_leaves_the_models_empty(monkeypatch, one_thread):
    """k=auto with batch_size > 1 prices passes by the batch's own timings: v and vd at rows x m
    tokens come from passes of rows rows x m columns (every m a chain verifies), measured once per job."""
    import weakref

    from spsamp import cost_model

    target, draft = tiny("float32"), tiny("float32")
    fed = []
    for lm in (target, draft):
        real = lm.forward_rows
        monkeypatch.setattr(lm, "forward_rows", lambda ids, *a, _real=real, **kw: fed.append(ids.numel()) or _real(ids, *a, **kw))
    monkeypatch.setattr(cost_model, "_PROBED", weakref.WeakKeyDictionary())
    dec = SpeculativeDecoder(k="auto")
    dec.prepare(target, draft, SimpleNamespace(generation=SimpleNamespace(batch_size=3)))
    v, vd = dec.drafter.costs.v.as_dict(), dec.drafter.costs.vd.as_dict()
    k_max = dec.drafter.priors.k_max
    assert {3 * m for m in range(1, k_max + 2)} <= set(v) and {3, 6} <= set(vd)  # every verify width a chain uses
    assert 3 * (k_max + 1) in fed and target.cache_len == 0 and draft.cache_len == 0
    again = SpeculativeDecoder(k="auto")
    n = len(fed)
    again.prepare(target, draft, SimpleNamespace(generation=SimpleNamespace(batch_size=3)))
    assert again.drafter.costs is dec.drafter.costs and len(fed) == n  # once per pair, thread count and batch size


@pytest.mark.parametrize("v, drafts", [({512: 1.0}, True), ({2: 3.0, 512: 600.0}, False)], ids=["flat", "steep"])
def test_batched_auto_k_decodes_plainly_when_no_chain_pays(tiny64, drafts64, v, drafts, one_thread):
    """Through the decoder: a pass whose cost grows as fast as its tokens never drafts (every step
    plain, no draft pass: proposed = 0), a flat one drafts; the tokens are the same either way."""
    greedy = GenerationConfig(max_new_tokens=20)
    out = auto_k(v=v).generate_batch(tiny64, drafts64["twin"], [torch.tensor(p) for p in PROMPTS], greedy,
                                     [torch.Generator() for _ in PROMPTS])
    assert [o.tokens for o in out] == alone(tiny64, PROMPTS, greedy)
    for o in out:
        sizes = o.stats.extra["sizing_sizes"]
        if drafts:
            assert max(sizes) > 1 and o.stats.proposed > 0
        else:  # plain steps, but for the k = 1 steps that re-measure acceptance: the first, then after 8, 16, ... plain ones
            assert sizes[0] == 1 and max(sizes) == 1 and sum(sizes) <= 1 + len(sizes) // 9, sizes
        # one pass per drafted token (some past an eos, never counted as proposed); the draft is
        # prefilled lazily, in its first pass
        assert o.stats.draft_calls >= o.stats.proposed
    if not drafts:
        assert all(o.stats.extra["sizing_predicted_speedup"] < 1.0 + 1e-9 for o in out)


# ---- 3. the runner ---------------------------------------------------------------------------------


def questions(path, *turns_per_prompt):
    path.write_text("".join(json.dumps({"question_id": f"q{i}", "category": "x", "turns": list(t)}) + "\n"
                            for i, t in enumerate(turns_per_prompt)))
    return path


def job(tmp_path, name, *extra, method="baseline"):
    cfg = compose_cfg(["model=tiny_random", "hardware.dtype=float64", "generation.max_new_tokens=10", f"method={method}",
                       "dataset.max_samples=7", *extra])
    run_job(cfg, JobInfo(output_dir=str(tmp_path / name)))
    return pd.read_parquet(tmp_path / name / RECORDS_PARQUET).set_index("prompt_id")


@pytest.mark.parametrize("method", ["baseline", "hf_generate", "speculative", "prompt_lookup"])
def test_batched_job_rows_equal_unbatched_and_carry_batch_columns(tmp_path, method, one_thread):
    dtype = [] if method == "baseline" else ["hardware.dtype=float32"]
    one = job(tmp_path, "b1", *dtype, method=method)
    three = job(tmp_path, "b3", "generation.batch_size=3", *dtype, method=method)
    assert len(three) == 7 and (three.status == "ok").all()
    assert three.generated_text.to_dict() == one.generated_text.to_dict()
    assert (one.batch_size == 1).all() and (one.batch_padding == 0).all() and sorted(one.batch_index) == list(range(7))
    assert (three.batch_size == 3).all() and sorted(three.batch_index.value_counts().tolist()) == [1, 3, 3]
    for _, b in three.groupby("batch_index"):
        lengths = b.prompt_tokens.tolist()
        assert (b.batch_padding == len(lengths) * max(lengths) - sum(lengths)).all()
        assert b.wall_time_s.nunique() == 1  # the batch's wall time; aggregate tokens/s = sum(new_tokens) / wall_time_s
    assert (three.peak_mem_bytes > 0).all()
    # a batched row is its own measurement: its resume key differs from the batch_size=1 row's
    assert not set(three.resume_key) & set(one.resume_key)


def test_batched_auto_k_job_rows_equal_baseline_and_record_the_batch_k(tmp_path, one_thread):
    common = ["++model.target.dtype=float64", "++model.draft.dtype=float64", "hardware.cpu_linear=aten", "generation.warmup=0"]
    auto = job(tmp_path, "auto", *common, "generation.batch_size=3", "method.k=auto", method="speculative")
    base = job(tmp_path, "base", *common, method="baseline")
    assert (auto.status == "ok").all() and auto.generated_text.to_dict() == base.generated_text.to_dict()
    together = auto.batch_index.map(auto.batch_index.value_counts()) > 1
    assert together.sum() == 6  # 7 prompts: two batches of 3, and one decoded alone
    for (_, r), batched in zip(auto.iterrows(), together):
        m = json.loads(r.metrics_json)
        # a batch sizes every step of a row (0: plain); a row alone sizes the steps with room to draft
        assert r.param_k == "auto" and len(m["sizing_sizes"]) == m["sizing_steps"] and (m["sizing_steps"] == r.steps if batched else m["sizing_steps"] <= r.steps)
        assert sum(m["sizing_size_hist"].values()) == m["sizing_steps"] and m["sizing_predicted_speedup"] > 0 and "sizing_alpha" in m


def test_failing_prompt_takes_only_its_own_row_and_resume_redoes_only_it(tmp_path, one_thread):
    df = job(tmp_path, "run", "generation.batch_size=4", "+fail_on_prompt=writing-2")
    assert df.loc["writing-2", "status"] == "error" and df.loc["writing-2", "error_type"] == "InjectedFailure"
    assert (df.drop(index="writing-2").status == "ok").all()
    ok_before = df[df.status == "ok"].run_id.to_dict()
    again = job(tmp_path, "run", "generation.batch_size=4")
    assert (again.status == "ok").all() and again.drop(index="writing-2").run_id.to_dict() == ok_before


def test_a_batch_that_raises_is_decoded_row_by_row(tmp_path, monkeypatch, caplog, one_thread):
    real = BaselineDecoder.generate_batch

    def broken_on_one(self, target, draft, prompts, gen, rngs):
        if len(prompts) > 1:
            raise RuntimeError("shape mismatch in a batched kernel")
        return real(self, target, draft, prompts, gen, rngs)

    monkeypatch.setattr(BaselineDecoder, "generate_batch", broken_on_one)
    with caplog.at_level(logging.WARNING):
        df = job(tmp_path, "run", "generation.batch_size=4")
    assert (df.status == "ok").all() and df.batch_index.nunique() == 7 and (df.batch_padding == 0).all()
    assert "decoding its rows one by one" in caplog.text


def test_out_of_memory_batch_is_split_not_lost(tmp_path, monkeypatch, caplog, one_thread):
    real = BaselineDecoder.generate_batch
    sizes = []

    def small_memory(self, target, draft, prompts, gen, rngs):
        sizes.append(len(prompts))
        if len(prompts) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, target, draft, prompts, gen, rngs)

    monkeypatch.setattr(BaselineDecoder, "generate_batch", small_memory)
    with caplog.at_level(logging.WARNING):
        df = job(tmp_path, "run", "generation.batch_size=4", "generation.warmup=0")
    assert (df.status == "ok").all() and len(df) == 7
    assert sizes == [4, 2, 2, 3, 1, 2]  # 4 -> 2 + 2; the last 3 -> 1 + 2
    assert "ran out of memory" in caplog.text and "splitting it into 2 + 2 rows" in caplog.text
    assert df.groupby("batch_index").size().max() == 2


def test_multi_turn_batches_go_turn_by_turn(tmp_path, one_thread):
    qfile = questions(tmp_path / "q.jsonl", ["Say hi.", "Again."], ["Count.", "More."], ["One turn."], ["A.", "B."])
    extra = ["dataset=mt_bench", f"dataset.path={qfile}", "dataset.turns=both"]
    cfg = compose_cfg(["model=tiny_random", "hardware.dtype=float64", "generation.max_new_tokens=6", *extra])
    run_job(cfg, JobInfo(output_dir=str(tmp_path / "b1")))
    run_job(compose_cfg(["model=tiny_random", "hardware.dtype=float64", "generation.max_new_tokens=6", "generation.batch_size=3", *extra]),
            JobInfo(output_dir=str(tmp_path / "b3")))
    one, three = (pd.read_parquet(tmp_path / d / RECORDS_PARQUET).set_index(["prompt_id", "turn"]) for d in ("b1", "b3"))
    assert len(three) == 7 and (three.status == "ok").all()
    assert three.generated_text.to_dict() == one.generated_text.to_dict()
    # first turns in batches of 3 + 1, then the second turns (which need the first answers) together
    assert three.xs(1, level="turn").batch_index.max() < three.xs(2, level="turn").batch_index.min()


def test_batches_are_per_turn_and_count_only_waiting_tasks():
    turns = [0, 1, 0, 1, 0, 0]
    assert batches(turns, [True] * 6, 1) == [[0], [1], [2], [3], [4], [5]]
    assert batches(turns, [True] * 6, 2) == [[0, 2], [4, 5], [1, 3]]
    # finished tasks ride along (their answers feed later turns) without taking a place
    assert batches(turns, [False, True, True, True, False, True], 2) == [[0, 2, 4, 5], [1, 3]]


def test_sweep_batch_size_experiment_runs_on_tiny_random(tmp_path):
    from conftest import run_py

    run_py(["-m", "experiment=sweep_batch_size", "model=tiny_random", "dataset=builtin", "dataset.max_samples=5",
            "generation.max_new_tokens=6", "generation.warmup=0", "generation.batch_size=1,4", f"paths.output_dir={tmp_path}"])
    sweep = tmp_path / "sweeps" / "sweep_batch_size"
    rows = pd.concat([pd.read_parquet(f) for f in sweep.glob("*/records.parquet")], ignore_index=True)
    from omegaconf import OmegaConf

    arms = set(OmegaConf.load(Path(__file__).resolve().parent.parent / "experiments" / "sweep_batch_size.yaml").compare.arms)
    assert {"baseline", "hf_generate", "sps_auto", "lookup_k10"} <= arms
    assert (rows.status == "ok").all() and len(rows) == 2 * len(arms) * 5  # batch sizes x arms x prompts
    assert set(rows.arm) == arms and set(rows.batch_size) == {1, 4}
    four = rows[rows.batch_size == 4]
    assert sorted(four.groupby(["arm", "batch_index"]).size()) == [1] * len(arms) + [4] * len(arms)
    # at T=0 the two arms and the two batch sizes write the same answers
    assert rows.groupby("prompt_id").generated_text.nunique().eq(1).all()


@pytest.mark.parametrize("temperature", [0.0, 0.8])
@pytest.mark.parametrize("decoder", [BaselineDecoder(), HFGenerateDecoder(), SpeculativeDecoder(k=3), PromptLookupDecoder(k=3, lookup_ngram=1)],
                         ids=lambda d: d.name)
def test_batched_decoding_never_mixes_devices(decoder, temperature, one_thread):
    from device_guard import FakeCuda
    from spsamp.config import TinyModelConfig
    from spsamp.models.adapter import CausalLM
    from spsamp.models.tiny import char_tokenizer, tiny_llama

    model, draft_model = tiny_llama(TinyModelConfig()), tiny_llama(TinyModelConfig(seed=1))
    gen = GenerationConfig(max_new_tokens=8, temperature=temperature)
    with FakeCuda() as guard:
        guard.tag_module(model, 0)
        guard.tag_module(draft_model, 0)
        target = CausalLM(model, char_tokenizer(), "target")
        draft = CausalLM(draft_model, char_tokenizer(), "draft") if decoder.needs_draft else None
        before = guard.ops
        outs = decoder.generate_batch(target, draft, [torch.tensor(p) for p in PROMPTS], gen,
                                      [guard.generator(1234 + i, gpu=0) for i in range(len(PROMPTS))])
        watched = guard.ops - before
    assert all(len(o.tokens) > 0 for o in outs) and watched > 50 * 8
