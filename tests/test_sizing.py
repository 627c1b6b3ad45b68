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
    "k=auto stop": lambda: SpeculativeDecoder(k="auto", stop_below=0.3),
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
