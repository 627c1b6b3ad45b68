"""Sizing (``method.k=auto``, ``method.grow=cost``): behaviour, not constants."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch

from spsamp.config import GenerationConfig
from spsamp.decoders.specexec import SpecExecDecoder
from spsamp.decoders.speculative import SpeculativeDecoder
from toy_models import ToyLM


def toy_pair():
    return ToyLM(6, seed=11, scale=1.5, eos_ids=[]), ToyLM(6, seed=22, scale=0.8, eos_ids=[])


@pytest.fixture
def steady_clock(monkeypatch):
    """Every loop clock reading 1 ms after the last: step timings (and so sizing choices) repeat exactly."""
    from spsamp import loop

    ticks = itertools.count()
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: next(ticks) * 1e-3))


def _probed(dec):
    from spsamp.cost_model import Costs, VerifyCost

    dec.prepare(None, None, None)  # nothing to probe without models: the costs are given
    costs = Costs(c=0.2, v=VerifyCost({16: 1.5}), vd=VerifyCost({8: 1.2}), target_pass_s=1e-3)
    if hasattr(dec.drafter, "set_costs"):
        dec.drafter.set_costs(costs)
    else:
        dec.drafter.costs = costs
    return dec


SIZED = {
    "k=auto": lambda: SpeculativeDecoder(k="auto"),
    "k=auto lookup": lambda: SpeculativeDecoder(k="auto", lookup=4),
    "grow=cost": lambda: SpecExecDecoder(budget=8, parallel_branches=2, max_depth=4, grow="cost"),
}


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("method", SIZED)
def test_a_row_decodes_the_same_alone_and_after_other_rows(method, temperature, steady_clock, one_thread):
    """Sizing state belongs to a row: with step timings that repeat, a row's tokens (and the sizes
    it chose) are the same decoded first or after other rows, at T=0 and when sampling."""
    q, p = toy_pair()
    gen = GenerationConfig(max_new_tokens=40, temperature=temperature)
    row = torch.tensor([1, 2, 3])

    def decode(dec, prompt, seed):
        return dec.generate(q, p, prompt, gen, torch.Generator().manual_seed(seed))

    alone = decode(_probed(SIZED[method]()), row, 7)
    dec = _probed(SIZED[method]())
    for i, other in enumerate(([4, 5], [2, 2, 2, 1], [5])):
        decode(dec, torch.tensor(other), 100 + i)
    after = decode(dec, row, 7)
    assert after.tokens == alone.tokens
    assert after.stats.accepted_lengths == alone.stats.accepted_lengths, "the row's steps were sized differently"


# ---- the choice moves the right way -------------------------------------------------------------


def _chain(k: int):
    from spsamp.proposals import Proposal

    return Proposal.chain(torch.arange(1, k + 1), draft_calls=k)


def _run(sizer, steps: int, keep, draft_s_per_pass: float, target_s: float = 0.01) -> int:
    """``steps`` steps of a ChainSizer: it sizes, the target keeps ``keep(k)`` tokens; returns the last k."""
    k = 0
    for _ in range(steps):
        k = sizer.choose(None, 64)
        sizer.observe(_chain(k), keep(k), draft_s_per_pass * k, target_s, 0.0)
    return k


def _sizer():
    from spsamp.cost_model import Costs, VerifyCost
    from spsamp.drafting.sizing import ChainSizer

    return ChainSizer(Costs(c=0.1, v=VerifyCost({16: 1.3}), vd=VerifyCost({})), lookup=False)


def test_k_grows_with_acceptance_and_shrinks_with_draft_cost():
    always = _run(_sizer(), 60, lambda k: k, 0.001)
    sometimes = _run(_sizer(), 60, lambda k: min(k, 1), 0.001)
    never = _run(_sizer(), 60, lambda k: 0, 0.001)
    assert always > sometimes > never == 1
    cheap = _run(_sizer(), 60, lambda k: min(k, 3), 0.0005)
    dear = _run(_sizer(), 60, lambda k: min(k, 3), 0.005)
    assert cheap > dear, (cheap, dear)
    # the run's own timings move c away from the probe's 0.1: a 5 ms pass over a verify unit of 10 / v(k + 1) ms
    sizer = _sizer()
    k = _run(sizer, 60, lambda k: min(k, 3), 0.005)
    assert sizer.cost.c == pytest.approx(0.5 * sizer.cost.v(k + 1), rel=0.05)


def _pooled_error(priors, keep, steps: int = 200) -> float:
    """A ChainSizer's predicted tokens over the tokens its steps kept, pooled over ``steps`` steps, - 1."""
    from spsamp.cost_model import Costs, VerifyCost
    from spsamp.drafting.sizing import ChainSizer

    sizer = ChainSizer(Costs(c=0.1, v=VerifyCost({16: 1.3}), vd=VerifyCost({})), lookup=False, priors=priors)
    predicted = kept_total = 0.0
    for i in range(steps):
        k = sizer.choose(None, 64)
        kept = keep(i, k)
        predicted += sizer.choices[-1].tokens
        kept_total += kept + 1
        sizer.observe(_chain(k), kept, 0.001 * k, 0.01, 0.0)
    assert 0.25 <= sizer.metrics()["sizing_calibration"] <= 4.0
    return predicted / kept_total - 1


@pytest.mark.parametrize("pattern", ["runs", "capped"])
def test_calibration_corrects_acceptance_that_is_not_one_rate(pattern):
    """Acceptance in runs (a stretch the target keeps whole, then rejections) or capped (never more
    than 3 tokens) is not Leviathan's one independent rate: the formula alone mispredicts the
    tokens a step keeps, and the calibration (kept per expected) brings the pooled prediction close."""
    import dataclasses

    from spsamp.cost_model import PRIORS

    keep = {"runs": lambda i, k: k if i % 9 < 6 else 0, "capped": lambda i, k: min(k, 3)}[pattern]
    uncalibrated = _pooled_error(dataclasses.replace(PRIORS, calibration_range=(1.0, 1.0)), keep)
    calibrated = _pooled_error(PRIORS, keep)
    assert abs(uncalibrated) > 0.1 and abs(calibrated) < 0.05, (uncalibrated, calibrated)


def test_a_lookup_state_the_row_has_not_seen_is_priced_as_the_row_so_far():
    """With lookup, acceptance and draft units are learnt per state; a state with no steps yet starts
    from the row's pooled figures (not the fixed prior), and its own steps take over."""
    from spsamp.cost_model import PRIORS
    from spsamp.drafting.sizing import ChainEstimate

    est = ChainEstimate(PRIORS, lookup=True)
    assert est.alpha_of(1) == pytest.approx(PRIORS.alpha)
    for _ in range(30):  # steps without a guess in hand: 9 of 10 tokens kept, 1 draft unit a token
        est.observe(0, 10, 9, 10.0)
    assert est.alpha_of(1) == pytest.approx(est.alpha_of(0), abs=0.02) and est.alpha_of(0) > 0.85
    for _ in range(30):  # then steps with a guess: everything kept, a third of the draft units
        est.observe(1, 10, 10, 3.0)
    assert est.alpha_of(1) > 0.98 and est.units_of(1) == pytest.approx(0.3, abs=0.02)
    assert est.units_of(0) == pytest.approx(1.0, abs=0.05)  # the other state keeps its own steps' figure


def test_grow_cost_builds_smaller_trees_for_a_dearer_draft(one_thread):
    """The same toy rows under a cheap and a dear draft: grow=cost spends fewer draft passes per
    tree when each costs more (c from the probe, kept fixed)."""
    from toy_models import priced

    q, p = toy_pair()
    gen = GenerationConfig(max_new_tokens=30, temperature=1.0)
    passes = {}
    for c in (0.02, 0.5):
        dec = SpecExecDecoder(budget=16, parallel_branches=2, max_depth=6, grow="cost")
        priced(dec.drafter, c, {}, {})
        out = dec.generate(q, p, torch.tensor([1, 2, 3]), gen, torch.Generator().manual_seed(0))
        passes[c] = out.stats.extra["draft_passes_mean"]
    assert passes[0.02] > passes[0.5] >= 1, passes


# ---- the prediction on a recorded trace ----------------------------------------------------------


class _Timed(ToyLM):
    """A toy model whose passes take known seconds on a shared fake clock: ``base`` for one token,
    ``per_token`` more for each further token of the pass."""

    def __init__(self, *a, clock, base, per_token, **kw):
        super().__init__(*a, **kw)
        self.clock, self.base, self.per_token = clock, base, per_token

    def forward(self, ids, **kw):
        self.clock[0] += self.base + self.per_token * (ids.shape[-1] - 1)
        return super().forward(ids, **kw)


@pytest.mark.parametrize("method", ["k=auto", "grow=cost"])
def test_predicted_speedup_is_within_10_percent_of_the_trace_it_ran(method, monkeypatch, one_thread):
    """A decode whose passes cost known seconds (target 10 ms + 0.5 ms a further token, draft 2 ms):
    the row's predicted speedup over plain decoding (``sizing_predicted_speedup``) against the
    speedup its own trace measures — new tokens over the decode's seconds in plain passes."""
    from spsamp import loop
    from spsamp.cost_model import Costs, VerifyCost

    clock = [0.0]
    monkeypatch.setattr(loop, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    q = _Timed(6, seed=11, scale=1.5, clock=clock, base=0.010, per_token=0.0005)
    p = _Timed(6, seed=11, scale=1.2, clock=clock, base=0.002, per_token=0.0)
    dec = SIZED[method]()
    dec.drafter.costs = Costs(c=0.2, v=VerifyCost({n: 1 + 0.05 * (n - 1) for n in (2, 4, 8, 16, 32, 64)}), vd=VerifyCost({}))
    prompt = torch.tensor([1, 2, 3])
    gen = GenerationConfig(max_new_tokens=400, temperature=1.0)
    errors = []
    for seed in range(3):
        start = clock[0]
        out = dec.generate(q, p, prompt, gen, torch.Generator().manual_seed(seed))
        prefill = 0.010 + 0.0005 * 2 + 0.002  # both models over the 3-token prompt
        measured = (len(out.tokens) - 1) / ((clock[0] - start - prefill) / 0.010)
        errors.append(out.stats.extra["sizing_predicted_speedup"] / measured - 1)
    assert max(abs(e) for e in errors) < 0.10, errors


# ---- wiring ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad,match", [(["method=speculative", "method.k=fast"], r"^method.k: must be an integer >= 1 or auto"),
                                       (["method=speculative", "method.k=0"], r"^method.k: must be an integer >= 1 or auto"),
                                       (["method=specexec", "method.budget=many"], r"^method.budget: must be an integer >= 1"),
                                       (["method=specexec", "method.budget=auto"], r"^method.budget: auto is gone — use method.grow=cost")])
def test_sizes_refuse_other_words(bad, match):
    from conftest import compose_cfg
    from spsamp.config import ConfigError, validate

    with pytest.raises(ConfigError, match=match):
        validate(compose_cfg(["model=tiny_random", *bad]))


@pytest.mark.parametrize("method", [["method.k=auto"], ["method.k=auto", "method.lookup=4"]])
def test_auto_k_rows_record_their_choices_and_stay_lossless(tmp_path, method, one_thread):
    import json

    from conftest import compose_cfg
    from spsamp.runner import JobInfo, run_job

    common = ["model=tiny_random", "++model.target.dtype=float64", "++model.draft.dtype=float64", "generation.max_new_tokens=12",
              "dataset.max_samples=2", "generation.warmup=0", "hardware.cpu_linear=aten"]
    rows = run_job(compose_cfg(common + ["method=speculative", *method]), JobInfo(output_dir=str(tmp_path / "auto"))).rows
    base = run_job(compose_cfg(common + ["method=baseline"]), JobInfo(output_dir=str(tmp_path / "base"))).rows
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    for r, b in zip(rows, base):
        assert r["generated_ids"] == b["generated_ids"]  # greedy, fp64: the size changes speed, never tokens
        m = json.loads(r["metrics_json"])
        assert sum(m["sizing_size_hist"].values()) == m["sizing_steps"] <= r["steps"] and m["sizing_size_mean"] >= 1
        assert m["sizing_predicted_speedup"] > 0 and m["sizing_c"] > 0 and r["param_k"] == "auto" and r["proposed"] > 0
        if "method.lookup=4" in method:
            assert 0 <= m["sizing_lookup_share"] <= 1 and "sizing_units_per_token_hit" in m
        else:
            assert "sizing_lookup_share" not in m


def test_lookup_knobs_have_one_spelling_and_old_rows_keep_their_keys():
    """prompt_lookup's longest n-gram is ``lookup_ngram``, as in SpS's and SpecExec's cascades; its
    old name is one line naming the new one, and rows written under it keep their identity."""
    from conftest import compose_cfg
    from spsamp.config import ConfigError, identity_params, validate
    from spsamp.decoders.prompt_lookup import PromptLookupDecoder

    for method in ("speculative", "specexec", "prompt_lookup"):
        _, params = validate(compose_cfg(["model=tiny_random", f"method={method}", "method.lookup_ngram=3"]))
        assert params.lookup_ngram == 3
    with pytest.raises(ConfigError, match=r"^method.max_ngram: renamed — write method.lookup_ngram=3$"):
        validate(compose_cfg(["model=tiny_random", "method=prompt_lookup", "++method.max_ngram=3"]))
    # the identity rows were written under (name, k, max_ngram) is unchanged
    assert identity_params(PromptLookupDecoder.Params()) == {"name": "prompt_lookup", "k": 10, "max_ngram": 2}
