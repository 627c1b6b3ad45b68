"""Speed settings chosen by measurement: CPU linear kernels (``hardware.cpu_linear=auto``), the
default thread count, and the cost model's k / budget choices. Timings here are fake (a patched
clock) wherever a choice is checked; speed itself is never asserted."""

from __future__ import annotations

import logging
import math
import statistics

import numpy as np
import pytest
import torch

from conftest import compose_cfg
from spsamp.config import validate
from spsamp.models import kernels
from spsamp.models.kernels import OneDNNLinear, autotune_cpu_linear, choose_cpu_linear
from spsamp.models.threads import choose_threads


def _tiny_llama(tied: bool = True):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=tied)
    return LlamaForCausalLM(cfg).eval()


# ---- hardware.cpu_linear=auto -------------------------------------------------------------------


def test_choice_is_the_kernel_with_the_smaller_summed_medians():
    fast_onednn = {"aten": {1: [3.0, 3.1, 2.9], 5: [5.0, 5.2, 4.8]}, "onednn": {1: [2.0, 2.1, 1.9], 5: [2.5, 2.4, 2.6]}}
    assert choose_cpu_linear(fast_onednn)[0] == "onednn"
    fast_aten = {"aten": {1: [1.0, 1.0, 1.0], 5: [1.2, 1.2, 1.2]}, "onednn": {1: [1.3, 1.3, 1.3], 5: [1.3, 1.3, 1.3]}}
    choice, scores = choose_cpu_linear(fast_aten)
    assert choice == "aten" and scores == pytest.approx({"aten": 2.2, "onednn": 2.6, "split": 2.3})


def test_choice_ignores_a_pass_another_process_interrupted():
    # one 100x outlier (a descheduled pass) would flip a mean; the median keeps the truth
    timings = {"aten": {1: [1.0, 1.0, 1.0, 1.0, 1.0]}, "onednn": {1: [0.5, 0.5, 50.0, 0.5, 0.5]}}
    assert choose_cpu_linear(timings)[0] == "onednn"


# medians (ms) from the Intel Xeon with AMX of 2026-12-02, SmolLM2-135M fp32, 1 thread: MKL's one-row
# GEMV beats oneDNN, oneDNN's small GEMM beats MKL, and summed the two kernels nearly tie
INTEL_1_THREAD_MS = {"aten": {1: 60.4, 5: 102.4}, "onednn": {1: 75.1, 5: 84.5}}
INTEL_1_THREAD = {k: {w: [ms] * 3 for w, ms in by_width.items()} for k, by_width in INTEL_1_THREAD_MS.items()}


def test_split_wins_where_each_kernel_wins_one_width():
    choice, scores = choose_cpu_linear(INTEL_1_THREAD)
    assert choice == "split" and scores["split"] == pytest.approx(60.4 + 84.5)
    assert choose_cpu_linear(INTEL_1_THREAD, allow_split=False)[0] == "onednn"  # the copy does not fit
    # a gain inside pass-to-pass noise does not buy a second weight copy
    close = {"aten": {1: [60.0], 5: [100.0]}, "onednn": {1: [61.0], 5: [98.0]}}
    assert choose_cpu_linear(close)[0] == "onednn"
    # one kernel faster at every width: split can only tie it
    assert choose_cpu_linear({"aten": {1: [3.0], 5: [5.0]}, "onednn": {1: [2.0], 5: [2.5]}})[0] == "onednn"
    assert "split" not in choose_cpu_linear({"aten": {1: [1.0]}, "onednn": {1: [2.0]}})[1]  # needs a wider pass timed


def _fake_pass_times(monkeypatch, model, ms):
    """Every timed pass lasts ``ms[kernel installed][width]`` milliseconds."""
    def time_pass(lm, ids, width, prefix):
        kind = "onednn" if any(isinstance(m, OneDNNLinear) for m in model.modules()) else "aten"
        return ms[kind][width] / 1e3

    monkeypatch.setattr(kernels, "_time_pass", time_pass)


def test_autotune_can_choose_split_and_then_holds_both_layouts(monkeypatch, caplog, one_thread):
    model = _tiny_llama(tied=True)
    ids = torch.tensor([[3, 14, 15, 92, 65, 35]])
    with torch.inference_mode():
        ref = model(ids).logits
    _fake_pass_times(monkeypatch, model, INTEL_1_THREAD_MS)
    with caplog.at_level(logging.INFO, logger="spsamp.models.kernels"):
        assert autotune_cpu_linear(model, widths=(1, 5), repeats=3) == "split"
    fast = [m for m in model.modules() if isinstance(m, OneDNNLinear)]
    assert fast and not any(type(m) is torch.nn.Linear for m in model.modules())
    assert all(m.split and hasattr(m, "weight") for m in fast)
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, ref, rtol=1e-4, atol=1e-4)
    assert "-> split" in caplog.text and "both weight layouts held" in caplog.text
    # too little memory for the second copy: the better single kernel instead
    monkeypatch.setattr(kernels, "_available_bytes", lambda: 1024)
    small = _tiny_llama(tied=True)
    _fake_pass_times(monkeypatch, small, INTEL_1_THREAD_MS)
    assert autotune_cpu_linear(small, widths=(1, 5), repeats=3) == "onednn"


def test_a_remembered_split_is_applied_untimed(monkeypatch, tmp_path):
    ident = {"model": "m"}
    first = _tiny_llama()
    _fake_pass_times(monkeypatch, first, INTEL_1_THREAD_MS)
    assert kernels.remembered_cpu_linear(first, tmp_path, ident) == "split"
    monkeypatch.setattr(kernels, "_time_pass", lambda *a: pytest.fail("not timed"))
    fresh = _tiny_llama()
    assert kernels.remembered_cpu_linear(fresh, tmp_path, ident) == "split"
    fast = [m for m in fresh.modules() if isinstance(m, OneDNNLinear)]
    assert fast and all(m.split for m in fast)


def test_a_tie_keeps_the_stock_kernels():
    assert choose_cpu_linear({"onednn": {1: [1.0]}, "aten": {1: [1.0]}})[0] == "aten"


def _fake_clock(model, cost):
    """A clock that advances by ``cost[kernel now installed]`` at every read, so a timed pass
    (two reads) lasts exactly that long."""
    state = {"t": 0.0, "reads": 0}

    def clock():
        kind = "onednn" if any(isinstance(m, OneDNNLinear) for m in model.modules()) else "aten"
        state["t"] += cost[kind]
        state["reads"] += 1
        return state["t"]

    return clock, state


@pytest.mark.parametrize("winner", ["aten", "onednn"])
def test_autotune_keeps_the_faster_kernel_and_only_it(monkeypatch, caplog, winner, one_thread):
    model = _tiny_llama(tied=True)
    ids = torch.tensor([[3, 14, 15, 92, 65, 35]])
    with torch.inference_mode():
        ref = model(ids).logits
    n_linear = sum(type(m) is torch.nn.Linear for m in model.modules())
    clock, state = _fake_clock(model, {"aten": 2.0 if winner == "onednn" else 1.0, "onednn": 1.0 if winner == "onednn" else 2.0})
    monkeypatch.setattr(kernels, "_clock", clock)
    with caplog.at_level(logging.INFO, logger="spsamp.models.kernels"):
        assert autotune_cpu_linear(model, widths=(1, 3), repeats=3) == winner
    # warm-up round + 3 rounds, 2 kernels, 2 widths, 2 clock reads per pass
    assert state["reads"] == 4 * 2 * 2 * 2
    fast = [m for m in model.modules() if isinstance(m, OneDNNLinear)]
    plain = [m for m in model.modules() if type(m) is torch.nn.Linear]
    if winner == "onednn":
        assert len(fast) == n_linear and not plain
        head = model.get_output_embeddings()
        assert head.weight is model.get_input_embeddings().weight  # the tied head keeps its weight
        assert sum(hasattr(m, "weight") for m in fast) == 1  # every other original weight is dropped
    else:
        assert len(plain) == n_linear and not fast
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, ref, rtol=1e-4, atol=1e-4)
    msg = caplog.text
    assert "cpu_linear=auto" in msg and "aten 1 tok" in msg and "onednn 1 tok" in msg and f"-> {winner}" in msg


def test_auto_times_both_kernels_on_a_real_tiny_model_and_records_the_choice(monkeypatch, tmp_path, one_thread):
    from spsamp.models import clear_model_cache, load_model

    monkeypatch.setenv("SPSAMP_CACHE", str(tmp_path))  # nothing remembered yet

    calls = {"aten": 0, "onednn": 0}
    onednn_forward, linear_forward = OneDNNLinear.forward, torch.nn.Linear.forward

    def count_onednn(self, x):
        calls["onednn"] += 1
        return onednn_forward(self, x)

    def count_linear(self, x):
        calls["aten"] += 1
        return linear_forward(self, x)

    monkeypatch.setattr(OneDNNLinear, "forward", count_onednn)
    monkeypatch.setattr(torch.nn.Linear, "forward", count_linear)
    clear_model_cache()
    run, _ = validate(compose_cfg(["model=tiny_random"]))
    assert run.hardware.cpu_linear == "auto"  # the default of every preset
    target = load_model(run.model.target, run.hardware)
    clear_model_cache()
    assert calls["aten"] > 0 and calls["onednn"] > 0  # both really ran
    assert target.info["cpu_linear"] in ("aten", "onednn")
    # the next load on this machine (another job of the sweep, a resumed run) keeps that choice untimed
    monkeypatch.setattr(kernels, "_clock", lambda: pytest.fail("a remembered choice is not timed again"))
    again = load_model(run.model.target, run.hardware)
    clear_model_cache()
    assert again is not target and again.info["cpu_linear"] == target.info["cpu_linear"]
    kinds = {type(m).__name__ for m in again.model.modules()}
    assert ("OneDNNLinear" in kinds) == (target.info["cpu_linear"] == "onednn")
    assert len(list((tmp_path / "kernels").glob("*.json"))) == 1


@pytest.mark.parametrize("remembered", ["aten", "onednn"])
def test_a_remembered_choice_is_applied(monkeypatch, tmp_path, remembered):
    monkeypatch.setattr(kernels, "_clock", lambda: pytest.fail("not timed"))
    ident = {"model": "m"}
    key_model = _tiny_llama()
    # remember by measuring once with a fake clock that makes `remembered` win
    clock, _ = _fake_clock(key_model, {"aten": 1.0 if remembered == "aten" else 2.0, "onednn": 2.0 if remembered == "aten" else 1.0})
    monkeypatch.setattr(kernels, "_clock", clock)
    assert kernels.remembered_cpu_linear(key_model, tmp_path, ident) == remembered
    monkeypatch.setattr(kernels, "_clock", lambda: pytest.fail("not timed"))
    fresh = _tiny_llama()
    assert kernels.remembered_cpu_linear(fresh, tmp_path, ident) == remembered
    assert any(isinstance(m, OneDNNLinear) for m in fresh.modules()) == (remembered == "onednn")
    # another thread count is another measurement
    before = torch.get_num_threads()
    torch.set_num_threads(before + 1)
    try:
        with pytest.raises(pytest.fail.Exception):
            kernels.remembered_cpu_linear(_tiny_llama(), tmp_path, ident)
    finally:
        torch.set_num_threads(before)


def test_auto_on_a_quantized_model_is_aten_without_timing(monkeypatch, tmp_path):
    from spsamp.models import clear_model_cache, load_model

    monkeypatch.setenv("SPSAMP_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "_clock", lambda: pytest.fail("nothing to time"))
    clear_model_cache()
    run, _ = validate(compose_cfg(["model=tiny_random", "++model.target.quantization=int8_dynamic"]))
    assert load_model(run.model.target, run.hardware).info["cpu_linear"] == "aten"
    clear_model_cache()


def test_resume_key_uses_the_configured_kernels_not_the_chosen_ones():
    from spsamp.data import Prompt
    from spsamp.runner import resume_key

    prompt = Prompt(id="p", turns=("hi",), category="x")
    keys = {}
    for kind in ("auto", "aten", "onednn"):
        run, params = validate(compose_cfg(["model=tiny_random", f"hardware.cpu_linear={kind}"]))
        keys[kind] = resume_key(run, params, prompt, 0, 0)
    assert len(set(keys.values())) == 3  # auto is its own identity, stable whatever it picks at load


# ---- default threads ---------------------------------------------------------------------------


@pytest.mark.parametrize("cpus,physical,load,expected", [
    (1, 1, None, 1),
    (2, 2, 0.0, 1),      # 2 cores: one thread, even on an idle machine
    (2, 1, 1.7, 1),
    (8, 4, 0.2, 4),      # SMT siblings count once
    (8, 8, 3.4, 5),      # 3 cores busy with other work
    (16, 16, 40.0, 1),   # never below one
    (16, 8, None, 8),    # unknown load: physical cores
])
def test_default_threads_rule(cpus, physical, load, expected):
    n, why = choose_threads(cpus, physical, load)
    assert n == expected and why


def test_record_says_how_many_threads_ran(tmp_path, monkeypatch):
    from spsamp.models import threads
    from spsamp.runner import JobInfo, run_job

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(threads, "default_threads", lambda: (1, "test"))
        cfg = compose_cfg(["model=tiny_random", "generation.max_new_tokens=4", "dataset.max_samples=1", "generation.warmup=0"])
        rows = run_job(cfg, JobInfo(output_dir=str(tmp_path / "a"))).rows
        assert rows and all(r["num_threads"] == 1 for r in rows)
        cfg = compose_cfg(["model=tiny_random", "generation.max_new_tokens=4", "dataset.max_samples=1", "generation.warmup=0",
                           "hardware.num_threads=2"])
        rows = run_job(cfg, JobInfo(output_dir=str(tmp_path / "b"))).rows
        assert rows and all(r["num_threads"] == 2 for r in rows)
    finally:
        torch.set_num_threads(before)


# ---- method.k=auto / method.budget=auto: the cost model's choices --------------------------------

from spsamp import cost_model as cm  # noqa: E402

FLAT = cm.VerifyCost({})  # verification as free as a 1-token pass (Leviathan et al.'s assumption)
INTEL = cm.VerifyCost({4: 1.03, 8: 1.05, 16: 1.16, 32: 1.26, 64: 1.88})  # Qwen 1.5B bf16, issue #17


def test_verify_cost_interpolates_and_extends_the_measured_widths():
    assert INTEL(1) == 1.0 and INTEL(8) == pytest.approx(1.05) and INTEL(12) == pytest.approx(1.105)
    assert INTEL(2) == pytest.approx(1.01)  # between v(1) = 1 and v(4)
    assert INTEL(128) == pytest.approx(1.88 + (1.88 - 1.26) * 2)  # the last slope, continued
    assert FLAT(50) == 1.0


def test_chain_speedup_is_theorem_3_8_when_verification_is_free():
    for alpha, k, c in [(0.8, 4, 0.1), (0.5, 2, 0.3), (0.95, 8, 0.05)]:
        assert cm.chain_speedup(alpha, k, c, FLAT) == pytest.approx(cm.predicted_speedup(alpha, k, c))


def test_best_k_is_the_argmax_over_every_k():
    for alpha, c, v in [(0.9, 0.05, FLAT), (0.8, 0.39, INTEL), (0.6, 0.39, INTEL), (0.97, 0.02, INTEL)]:
        k, pred = cm.best_k(alpha, c, v, k_max=24)
        brute = max(cm.chain_speedup(alpha, j, c, v) for j in range(1, 25))
        assert pred == pytest.approx(brute) and cm.chain_speedup(alpha, k, c, v) == pytest.approx(brute)


def test_best_k_follows_acceptance_and_cost():
    ks = [cm.best_k(a, 0.1, FLAT)[0] for a in (0.5, 0.7, 0.9, 0.97)]
    assert ks == sorted(ks) and ks[0] < ks[-1]  # more acceptance -> longer drafts
    assert cm.best_k(0.9, 0.02, FLAT)[0] > cm.best_k(0.9, 0.3, FLAT)[0]  # cheaper draft -> longer drafts
    # expensive verification of many tokens caps k
    steep = cm.VerifyCost({2: 1.5, 4: 2.5, 8: 4.5})
    assert cm.best_k(0.9, 0.05, steep)[0] < cm.best_k(0.9, 0.05, FLAT)[0]
    assert cm.best_k(0.0, 0.5, FLAT) == (1, pytest.approx(1 / 1.5))  # nothing accepted: the shortest draft


def test_tree_of_one_rank_is_the_chain():
    for alpha, b in [(0.8, 5), (0.5, 3), (0.99, 12)]:
        assert cm.expected_tree_accepted([alpha], b, max_depth=b) == pytest.approx(cm.expected_tokens_per_step(alpha, b) - 1)
        # width 1: one draft pass per node, as the chain's k passes
        assert cm.tree_speedup([alpha], b, 0.2, INTEL, width=1, max_depth=b) == pytest.approx(cm.chain_speedup(alpha, b, 0.2, INTEL))


def test_tree_expected_length_is_the_best_subtree_by_brute_force():
    import itertools

    probs, budget, depth = [0.6, 0.25, 0.1], 5, 3
    # every node (rank path) up to `depth`, its value the product of its ranks' probabilities
    nodes = [p for d in range(1, depth + 1) for p in itertools.product(range(3), repeat=d)]
    value = {n: float(__import__("math").prod(probs[r] for r in n)) for n in nodes}
    best = 0.0
    for subset in itertools.combinations(nodes, budget):
        s = set(subset)
        if all(len(n) == 1 or n[:-1] in s for n in s):  # a tree: every node's parent is in it
            best = max(best, sum(value[n] for n in s))
    assert cm.expected_tree_accepted(probs, budget, depth) == pytest.approx(best)


def test_tree_draft_passes_count_levels_in_batches():
    # spsamp.drafting.tree: the root pass, then each level but the deepest in passes of `width` nodes
    assert cm.tree_draft_passes([1], 4) == 1  # one child of the root: nothing to expand
    assert cm.tree_draft_passes([1] * 8, 4) == 8  # a chain of 8: as SpS with k = 8
    assert cm.tree_draft_passes([4, 9, 3], 4) == 1 + 1 + 3
    assert cm.tree_draft_passes([4, 9, 3], 16) == 3
    assert cm.tree_draft_cost([4, 9, 3], 4, vd=cm.VerifyCost({4: 2.0})) == pytest.approx(1 + 2.0 + 2 * 2.0 + 1.0)


def test_best_trees_are_the_prefixes_of_one_growth():
    probs = [0.7, 0.15, 0.05]
    trees = cm.best_trees(probs, 20, max_depth=5)
    for b in (1, 3, 7, 20):
        assert trees[b - 1] == (pytest.approx(cm.expected_tree_accepted(probs, b, 5)), cm.best_tree(probs, b, 5)[1])
        assert sum(trees[b - 1][1]) == b and len(trees[b - 1][1]) <= 5


def test_best_budget_grows_with_cheap_wide_verification_and_wide_drafting():
    probs = [0.4, 0.3, 0.2]  # acceptance spread over ranks: wide levels pay
    narrow, _ = cm.best_budget(probs, 0.39, INTEL, width=1)
    wide, _ = cm.best_budget(probs, 0.39, INTEL, width=8)
    assert wide > narrow  # a batched draft pass expands 8 nodes of a level for the price of ~one
    cheap, _ = cm.best_budget(probs, 0.39, FLAT, width=8)
    steep, _ = cm.best_budget(probs, 0.39, cm.VerifyCost({2: 1.5, 8: 4.0, 32: 12.0}), width=8)
    assert cheap > steep
    b, pred = cm.best_budget(probs, 0.39, INTEL, width=8, budget_max=40)
    assert pred == pytest.approx(max(cm.tree_speedup(probs, x, 0.39, INTEL, 8) for x in range(1, 41)))


def test_acceptance_estimate_follows_observed_steps():
    acc = cm.RankAcceptance(max_rank=1, prior_alpha=0.6, prior_weight=2.0, decay=1.0)
    assert acc.alpha == pytest.approx(0.6)
    for _ in range(50):
        acc.observe_chain(proposed=4, accepted=4)  # everything accepted
    assert acc.alpha > 0.98
    acc = cm.RankAcceptance(max_rank=1, decay=1.0)
    for _ in range(50):
        acc.observe_chain(proposed=4, accepted=1)  # 1 accepted, then a rejection: alpha = 1/2
    assert acc.alpha == pytest.approx(0.5, abs=0.01)


def test_rank_estimate_counts_only_ranks_that_were_offered():
    acc = cm.RankAcceptance(max_rank=3, prior_weight=0.0, decay=1.0)
    # node with 3 children, target took the 2nd; node with 1 child, target took it; node with 2, miss
    acc.observe([(3, 2), (1, 1), (2, None)])
    assert acc.probs() == pytest.approx([1 / 3, 1 / 2, 0.0])


def test_auto_size_adapts_to_the_acceptance_it_observes():
    auto = cm.AutoSize(c=0.1, v=FLAT, size_max=16)
    first = auto.choose()
    for _ in range(200):
        k = auto.choose()
        auto.acceptance.observe_chain(k, k)  # the draft is always right
    high = auto.choose()
    for _ in range(200):
        k = auto.choose()
        auto.acceptance.observe_chain(k, 0)  # the draft is always wrong
    low = auto.choose()
    assert high > first > low == 1
    m = auto.metrics()
    assert m["auto_k_last"] == 1 and sum(m["auto_k_hist"].values()) == len(auto.chosen) and 0 <= m["auto_alpha"] < 0.1
    tree = cm.AutoSize(c=0.39, v=INTEL, size_max=32, tree=True, width=8)
    assert 1 <= tree.choose() <= 32 and "auto_budget_mean" in tree.metrics()


def test_measured_costs_come_from_the_clock(monkeypatch):
    """c and v from fake pass times: target 10 ms + 1 ms per extra token, draft 2 ms flat."""
    from spsamp.models import load_model

    run, _ = validate(compose_cfg(["model=tiny_random", "method=speculative", "hardware.cpu_linear=aten"]))
    target, draft = load_model(run.model.target, run.hardware), load_model(run.model.draft, run.hardware)
    target_forward = type(target).forward
    now = {"t": 0.0}

    def fake_forward(lm, ids, **kw):
        out = target_forward(lm, ids, **kw)
        n = ids.shape[-1]
        now["t"] += (0.010 + 0.001 * (n - 1)) if lm is target else 0.002
        return out

    monkeypatch.setattr(type(target), "forward", fake_forward)
    monkeypatch.setattr(cm, "_clock", lambda: now["t"])
    costs = cm.measure_costs(target, draft, torch.tensor([1, 2, 3, 4]), widths=(1, 4, 8), draft_widths=(1, 4), repeats=2)
    assert costs.c == pytest.approx(0.2)
    assert costs.v(4) == pytest.approx(1.3) and costs.v(8) == pytest.approx(1.7) and costs.vd(4) == pytest.approx(1.0)
    assert target.cache_len == 0 and draft.cache_len == 0


def test_tree_visits_reads_the_accepted_path_and_the_miss():
    from spsamp.drafting.autosize import tree_visits

    # root -> a(0), b(1); a -> c(2), d(3); c -> e(4)    (siblings in draft-probability order)
    tokens, parents = [10, 11, 12, 13, 14], [-1, -1, 0, 0, 2]
    assert tree_visits(tokens, parents, [10, 13, 99]) == [(2, 1), (2, 2)]  # a, then d; d is a leaf
    assert tree_visits(tokens, parents, [11, 7]) == [(2, 2)]  # b is a leaf: nothing offered after it
    assert tree_visits(tokens, parents, [10, 12, 14, 5]) == [(2, 1), (2, 1), (1, 1)]  # down to the leaf e
    assert tree_visits(tokens, parents, [42]) == [(2, None)]  # the target's token is no child of the root
    assert tree_visits([5, 6, 7], [-1, 0, 1], [5, 6, 9]) == [(1, 1), (1, 1), (1, None)]  # a chain: 2 accepted, 1 rejected


def test_tree_path_follows_the_output_through_the_proposal():
    from spsamp.drafting.autosize import tree_path

    tokens, parents = [10, 11, 12, 13, 14], [-1, -1, 0, 0, 2]
    assert tree_path(tokens, parents, [10, 13, 99]) == [0, 3]
    assert tree_path(tokens, parents, [10, 12, 14, 5]) == [0, 2, 4]
    assert tree_path(tokens, parents, [42, 10]) == [] and tree_path(tokens, parents, []) == []
    assert tree_path(tokens, parents, [12]) == []  # 12 is a grandchild, not a child of the root


def test_accepted_by_budget_counts_what_each_smaller_tree_would_have_kept():
    built = cm.AcceptedByBudget(size_max=8, decay=1.0, min_weight=2.0)
    built.observe([0, 3, 6], depths=[1, 1, 1, 2, 2, 2, 3, 3])  # budget b keeps the path nodes with index < b
    built.observe([1], depths=[1, 1, 1, 2, 2, 2, 3, 3])
    prior = lambda b: 0.5 * b  # noqa: E731
    curve = built.curve(prior)
    # b=1: (1 + 0) / 2; b=2: (1 + 1) / 2; b=4: (2 + 1) / 2; b=7, 8: (3 + 1) / 2
    assert curve[1:] == pytest.approx([0.5, 1.0, 1.0, 1.5, 1.5, 1.5, 2.0, 2.0])
    assert built.known() == 8
    # draft cost (1 per pass, width 1) of the first b nodes: the root pass + every level but the deepest
    assert built.cost_curve(prior)[1:] == pytest.approx([1, 1, 1, 4, 4, 4, 7, 7])


def test_accepted_by_budget_extrapolates_the_prior_past_what_was_built():
    built = cm.AcceptedByBudget(size_max=16, decay=1.0, min_weight=2.0)
    prior = lambda b: 0.25 * b  # noqa: E731
    assert built.curve(prior) == pytest.approx([0.0] + [0.25 * b for b in range(1, 17)])  # nothing seen: the prior
    for _ in range(3):
        built.observe([0, 1], depths=[1, 2, 3, 4])  # 4-node trees, 2 accepted: the prior said 1.0 at 4
    built.observe([0, 1, 2, 3, 4, 5], depths=list(range(1, 17)))  # one larger tree: below min_weight past 4
    curve = built.curve(prior)
    assert built.known() == 4 and curve[4] == pytest.approx((3 * 2 + 4) / 4)  # the big tree counts at b <= 4 too
    assert curve[8] == pytest.approx(prior(8) * curve[4] / prior(4))  # the prior, scaled to agree at 4
    assert curve == sorted(curve)


def test_tree_draft_cost_is_scaled_by_what_the_built_trees_really_spent():
    built = cm.AcceptedByBudget(size_max=6, decay=1.0, min_weight=1.0)
    built.observe([0], depths=[1, 2, 3], spent=6.0)  # levels say 1 + 2 passes; the drafter spent 6
    assert built.cost_scale == pytest.approx(2.0)
    assert built.cost_curve(lambda b: 1.0)[1:4] == pytest.approx([2.0, 4.0, 6.0])


def test_budget_auto_prices_a_trees_passes_at_the_tokens_each_fed():
    """A tree's passes are priced at vd(tokens fed) pass by pass (Proposal.pass_widths: a root pass that
    also fed 4 lookup guesses costs vd(5)), not at the batches' mean width."""
    from spsamp.drafting.autosize import AutoSized
    from spsamp.drafting.tree import TreeStats
    from spsamp.proposals import Proposal

    sized = AutoSized(_FakeChain(), tree=True, width=4)
    vd = cm.VerifyCost({2: 1.1, 4: 1.3, 8: 1.6})
    sized.set_costs(cm.Costs(c=0.1, v=FLAT, vd=vd))
    prop = Proposal.chain(torch.arange(1, 6), draft_calls=3, pass_widths=[5, 4, 1], stats=TreeStats(expanded=5))
    assert sized._spent(prop) == pytest.approx(vd(5) + vd(4) + vd(1))
    prop.pass_widths = None  # a drafter that kept no widths: the root pass, then passes of the mean width
    assert sized._spent(prop) == pytest.approx(1.0 + 2 * vd(2))


def test_budget_auto_explores_at_most_twice_the_largest_budget_on_record():
    auto = cm.AutoSize(c=0.05, v=cm.VerifyCost({}), size_max=64, tree=True, width=8)
    for _ in range(5):
        auto.acceptance.observe([(4, 1)] * 6)  # a high acceptance: the prior wants a big tree
    for _ in range(4):
        auto.built.observe([0, 1, 2], depths=[1, 2, 3, 4])  # only 4-node trees on record, all good
    assert auto.built.known() == 4 and auto.choose() == 8


def test_budget_auto_moves_with_the_trees_it_builds():
    """The positional model promises a deep tree; the built trees keep one node whatever the
    budget: budget=auto must shrink, and its prediction must come down to what was kept."""
    auto = cm.AutoSize(c=0.3, v=INTEL, size_max=32, tree=True, width=4)
    for _ in range(5):  # teach the rank estimate a high acceptance: the positional model likes big trees
        auto.acceptance.observe([(4, 1)] * 6)
    first = auto.choose()
    for _ in range(60):
        b = auto.choose()
        auto.built.observe([0], depths=list(range(1, b + 1)))  # a chain of b nodes; only the first is ever kept
    last = auto.choose()
    assert first > 4 and last < first
    assert auto.built.known() >= last
    gain, dcost = auto.built.curve(lambda b: 0.0), auto.built.cost_curve(lambda b: 1.0)
    kept_one = cm.tree_speedup([], last, 0.3, INTEL, width=4, accepted=lambda _: 1.0, draft_cost=dcost.__getitem__)
    assert gain[last] == pytest.approx(1.0) and auto.predicted[-1] == pytest.approx(kept_one)


def test_auto_k_sizes_and_prices_a_rows_last_step_within_its_room():
    """Near the row's token cap a chain is sized (and its prediction priced) for the draft tokens
    it can still use, not for a step the loop would cut short; with no room the step is plain."""
    auto = cm.AutoSize(c=0.1, v=FLAT, size_max=16, t1_every=0)
    for _ in range(50):
        k = auto.choose()
        auto.acceptance.observe_chain(k, k)  # always right: k=auto wants long chains
    free = auto.choose()
    assert free > 5
    assert auto.choose(room=3) == 3
    alpha = auto.acceptance.alpha
    assert auto.predicted[-1] == pytest.approx(cm.chain_speedup(alpha, 3, 0.1, FLAT))
    assert auto.step_costs[-1] == pytest.approx(3 * 0.1 + FLAT(4))
    assert auto.choose(room=100) == free  # room beyond the cap changes nothing
    sized = len(auto.chosen)
    assert auto.choose(room=0) == 0 and auto.t1_at[-1] == sized and len(auto.chosen) == sized  # a plain step, counted as one
    tree = cm.AutoSize(c=0.3, v=INTEL, size_max=32, tree=True, width=4, t1_every=0)
    assert tree.choose(room=0) == 0 and tree.choose(room=2) >= 1  # a tree's budget is not a depth: only no room is plain


class _FakeState:
    def __init__(self):
        self.seq = [0]
        self.draft_s = self.target_s = self.rest_s = 0.0  # seconds in each model's passes, and after them (spsamp.loop.Decoding)


class _FakeChain:
    """Proposes tokens 1..size; the test appends what a target that accepts `take` of them keeps."""

    needs_model = True

    def start(self, st):
        pass

    def propose(self, st, size, max_depth, hidden):
        from spsamp.proposals import Proposal

        return Proposal(tokens=torch.arange(1, size + 1), parents=torch.arange(-1, size - 1), draft_calls=size)


def _drive(drafter, st, steps: int, keep, draft_s_per_token: float = 0.0, target_s: float = 0.0) -> list[int]:
    """``steps`` fake decode steps: the drafter sizes and proposes, the target keeps ``keep(tokens)``
    and adds its own token (a correction after a rejection, else a bonus); the loop's clocks advance
    by the given seconds. Returns the sizes chosen."""
    sizes = []
    drafter.start(st)
    for _ in range(steps):
        k = drafter.size(st)
        tokens = drafter.propose(st, k, k, False).tokens.tolist()
        kept = keep(tokens)
        st.seq += kept + [-1 if len(kept) < len(tokens) else 99]
        st.draft_s += draft_s_per_token * len(tokens)  # what the loop adds after the step
        st.target_s += target_s
        sizes.append(k)
    return sizes


def test_auto_sized_drafter_learns_from_the_output_and_reports_per_row():
    from spsamp.drafting.autosize import T1_EVERY, AutoSized

    drafter = AutoSized(_FakeChain())
    drafter.set_costs(cm.Costs(c=0.1, v=FLAT, vd=FLAT))
    sizes = []
    for row, (take, steps) in enumerate(((1.0, 60), (0.0, 200))):  # row 0: every draft token accepted; row 1: none
        sizes += _drive(drafter, _FakeState(), steps, lambda tokens: tokens[: int(len(tokens) * take)])
        m = drafter.metrics()
        # this row's steps only: sized ones, and the plain steps that re-time T1 (the first, then every T1_EVERY-th)
        assert sum(m["auto_k_hist"].values()) + m["auto_t1_steps"] == steps
        if row == 0:
            assert m["auto_k_last"] >= 10 and m["auto_alpha"] > 0.9
        else:
            assert m["auto_k_last"] == 1 and m["auto_alpha"] < 0.1
    assert max(sizes[:60]) > sizes[1] and sizes[-1] == 1
    # the plain steps: each row's first step and every T1_EVERY-th after it (sizing state is the row's)
    assert [i for i, k in enumerate(sizes) if k == 0] == list(range(0, 60, T1_EVERY)) + list(range(60, len(sizes), T1_EVERY))


def test_observed_cost_prices_in_the_runs_own_t1_once_timed():
    seen = cm.ObservedCost(decay=0.5, min_weight=1.5)
    assert seen.t1() is None and seen.verify_scale() == 1.0
    for _ in range(3):  # 75 ms a draft unit, 300 ms a verify unit (v-units: the probe's)
        seen.observe(draft_s=0.3, draft_units=4.0, target_s=0.3, verify_units=1.0)
    assert seen.c(0.2) == pytest.approx(0.25) and seen.verify_scale() == 1.0  # no T1 yet: the verify unit
    seen.observe_t1(0.0)  # a clock that did not move teaches nothing
    assert seen.t1() is None
    seen.observe_t1(0.25)  # a plain pass now takes 250 ms: a verify pass costs 1.2 of them, not 1
    assert seen.t1() == pytest.approx(0.25)
    assert seen.c(0.2) == pytest.approx(0.3) and seen.verify_scale() == pytest.approx(1.2)
    seen.observe_t1(0.05)  # a plain pass 5x quicker beside the same verify unit: two passes, their mean ratio
    assert seen.t1() == pytest.approx(0.15)
    assert seen.verify_scale() == pytest.approx(2.0) and seen.c(0.2) == pytest.approx(0.4)  # both within [1/2, 2]


def test_observed_t1_is_the_verify_unit_now_times_the_median_plain_to_verify_ratio():
    """The machine's drift, seen every step in the verify passes, moves T1 without a new plain
    pass; verify passes dearer per v-unit than the probe's v(n) said keep their ratio to T1 (a T1
    pooled from both would read high, and every prediction over it with it); and one outlying
    plain pass (a job's first, measured at 1.5x) cannot move it once the probe's pass is known."""
    seen = cm.ObservedCost(decay=0.5, min_weight=1.5, window=4)
    seen.observe_probe(float("nan"))  # no probe timing: nothing
    assert seen.probe_s is None
    seen.observe_probe(0.30)  # the probe's 1-token pass (a median of five): counts twice
    assert seen.t1() is None  # no plain pass timed in the run yet
    seen.observe_t1(0.45)  # the job's first plain pass, 1.5x slow; the verify unit is not trusted yet
    assert seen.t1() == pytest.approx(0.30)  # median of 0.30, 0.30, 0.45
    seen.observe(draft_s=0.5, draft_units=8.0, target_s=0.363, verify_units=1.1)
    seen.observe(draft_s=0.5, draft_units=8.0, target_s=0.363, verify_units=1.1)  # 330 ms a v-unit: both paired with it
    assert seen.verify_unit() == pytest.approx(0.33) and seen.t1() == pytest.approx(0.30)
    assert seen.verify_scale() == pytest.approx(1.1)
    for _ in range(12):  # the machine slows to half its speed: 660 ms a v-unit, no plain pass since
        seen.observe(draft_s=1.0, draft_units=8.0, target_s=0.726, verify_units=1.1)
    assert seen.t1() == pytest.approx(0.60, rel=1e-3) and seen.verify_scale() == pytest.approx(1.1, rel=1e-3)
    assert seen.c(0.2) == pytest.approx(0.125 / 0.60, rel=1e-3)
    for seconds in (0.594, 0.594, 0.594):  # plain passes at 0.9 of the unit now
        seen.observe_t1(seconds)
    # the window (4) holds the outlier and the three; the probe's ratio counts twice
    assert seen.t1() == pytest.approx(0.66 * statistics.median([0.45 / 0.33, 0.9, 0.9, 0.9, 0.30 / 0.33, 0.30 / 0.33]), rel=1e-3)
    for seconds in (0.594, 0.594):  # the window keeps the last 4 plain passes: the outlier has left it
        seen.observe_t1(seconds)
    assert seen.ratios == pytest.approx([0.9] * 4, rel=1e-3)


def test_observed_rest_is_priced_on_every_verify_pass_once_trusted():
    """A speculative step's loop work outside both passes (its wall time less them) is priced in
    T1 and rides on its verify pass; a plain step (n = 1) is charged none."""
    seen = cm.ObservedCost(decay=0.5, min_weight=1.5)
    seen.observe_rest(0.03)
    seen.observe_rest(-0.01)  # a fake clock: nothing to learn
    assert seen.rest() == 0.0  # no trusted unit, one step: nothing yet
    for _ in range(3):
        seen.observe(draft_s=0.3, draft_units=4.0, target_s=0.3, verify_units=1.0)
        seen.observe_rest(0.03)
    seen.observe_t1(0.3)
    assert seen.rest() == pytest.approx(0.1)  # 30 ms a step over a 300 ms T1
    v = cm.scaled_verify(FLAT, 1.0, seen.rest())
    assert v(1) == FLAT(1) and v(5) == pytest.approx(FLAT(5) + 0.1)


def test_auto_size_prices_verify_passes_at_the_runs_scale_and_takes_plain_steps():
    auto = cm.AutoSize(0.2, cm.VerifyCost({2: 1.02, 8: 1.1, 16: 1.3}), 16, t1_every=8)
    for _ in range(10):
        auto.acceptance.observe_chain(8, 7)
    first = [auto.choose() for _ in range(4)]
    assert first[0] == 0 and min(first[1:]) > 0 and auto.t1_at == [0]  # the first step is plain, the next 7 sized
    for _ in range(4):  # trusted from a weight of 3 on (decay 0.9)
        auto.observed.observe(draft_s=0.08, draft_units=1.0, target_s=0.65, verify_units=1.3)  # 0.5 s a v-unit
    auto.observed.observe_t1(0.4)
    k = auto.choose()  # verify passes cost 1.25x what the probe said, drafting 0.2 of the run's T1
    scaled = lambda n: 1.25 * auto.v(n) if n > 1 else 1.0  # noqa: E731
    assert auto.v_scale == pytest.approx(1.25) and auto.c == pytest.approx(0.2)
    assert (k, auto.predicted[-1]) == cm.best_k(auto.acceptance.alpha, 0.2, scaled, 16)
    assert auto.step_costs[-1] == pytest.approx(k * 0.2 + scaled(k + 1))
    m = auto.metrics()
    assert m["auto_t1_steps"] == 1 and m["auto_t1_s"] == pytest.approx(0.4) and m["auto_verify_scale"] == pytest.approx(1.25)
    assert m["auto_t1_mean_s"] == pytest.approx(0.4)  # the one choice priced after T1 was timed
    assert sum(m["auto_k_hist"].values()) == 4  # the plain step is no size the model chose ...
    # ... but it is part of the row's time: one token for one T1 in the pooled prediction
    assert m["auto_predicted_speedup"] == pytest.approx(cm.pooled_speedup(auto.predicted + [1.0], auto.step_costs + [1.0]))


def test_auto_k_prices_the_loops_own_work_after_each_steps_passes():
    """Each sized step's seconds after both models' passes (the loop's ``rest_s``) are the loop's
    own work; k=auto prices them in T1 on every verify pass, row after row."""
    from spsamp.drafting.autosize import AutoSized

    drafter = AutoSized(_FakeChain())
    drafter.set_costs(cm.Costs(c=0.1, v=FLAT, vd=FLAT))
    for row in range(2):
        st = _FakeState()
        for _ in range(12):
            k = drafter.size(st)
            tokens = drafter.propose(st, k, k, False).tokens.tolist()
            st.seq += tokens + [99]  # all accepted
            st.draft_s += 0.025 * k  # 25 ms a draft pass, 250 ms a target pass (plain or verify: v = 1)
            st.target_s += 0.25
            st.rest_s += 0.05  # and 50 ms after both a step
        m = drafter.metrics()
        assert m["auto_rest"] == pytest.approx(0.2), row  # 50 ms over a 250 ms T1
    auto = drafter.auto
    assert auto.step_costs[-1] == pytest.approx(auto.chosen[-1] * 0.1 + 1.0 + 0.2)
    # (the estimate has since taken the last step in: alpha moved a little)
    assert auto.predicted[-1] == pytest.approx(cm.chain_speedup(auto.acceptance.alpha, auto.chosen[-1], 0.1, lambda n: 1.2), rel=1e-3)


def test_observed_cost_is_the_runs_own_ratio_once_trusted_and_within_bounds():
    seen = cm.ObservedCost(decay=0.5, min_weight=1.5)
    assert seen.c(0.2) == 0.2  # nothing seen: the probe's
    seen.observe(draft_s=0.3, draft_units=4.0, target_s=0.25, verify_units=1.0)  # 75 ms a draft unit, 250 a verify unit
    assert seen.c(0.2) == 0.2  # one step (weight 1 < 1.5): not trusted yet
    seen.observe(0.3, 4.0, 0.25, 1.0)
    assert seen.c(0.2) == pytest.approx(0.3)
    seen.observe(0.0, 0.0, 0.25, 1.0)  # an empty proposal teaches nothing
    assert seen.c(0.2) == pytest.approx(0.3)
    assert seen.c(0.1) == pytest.approx(0.2) and seen.c(1.0) == pytest.approx(0.5)  # within [1/2, 2] of the probe
    for _ in range(6):
        seen.observe(0.5, 4.0, 0.25, 1.0)  # the draft turns dearer (0.5): recent steps outweigh the first
    assert 0.45 < seen.c(0.4) < 0.5


def test_auto_k_corrects_the_probes_c_by_the_runs_own_pass_times():
    from spsamp.drafting.autosize import AutoSized

    def run(draft_s_per_token: float) -> tuple[dict, int]:
        drafter = AutoSized(_FakeChain())
        drafter.set_costs(cm.Costs(c=0.1, v=FLAT, vd=FLAT))
        # all but the last accepted (alpha ~ (k-1)/k); one verify pass (v = 1) a step
        k = _drive(drafter, _FakeState(), 40, lambda tokens: tokens[:-1], draft_s_per_token, 0.25)[-1]
        return drafter.metrics(), k, drafter.auto

    probe_like, k_probe, _ = run(0.025)  # the run's draft costs what the probe said: c = 0.025 / 0.25
    dear, k_dear, auto = run(0.045)  # drafting costs 1.8x the probe's c in the run
    assert probe_like["auto_c"] == pytest.approx(0.1) and probe_like["auto_c_probe"] == pytest.approx(0.1)
    assert dear["auto_c"] == pytest.approx(0.18) and dear["auto_c_probe"] == pytest.approx(0.1)
    assert k_dear < k_probe  # a dearer draft buys shorter chains
    # each choice is priced at the c it used (k draft passes, one flat verify pass), and the row's
    # prediction pools its steps by those costs
    assert auto.step_costs[-1] == pytest.approx(auto.chosen[-1] * 0.18 + 1.0)
    plain = [1.0] * dear["auto_t1_steps"]  # the plain steps that re-timed T1: one token for one T1 each
    assert dear["auto_t1_steps"] == 2 and dear["auto_verify_scale"] == pytest.approx(1.0)  # a T1 as dear as a verify pass
    assert dear["auto_predicted_speedup"] == pytest.approx(cm.pooled_speedup(auto.predicted + plain, auto.step_costs + plain))


class _FakeCascade(_FakeChain):
    """A lookup chain (ChainDrafter with method.lookup) on a text that switches between restating its
    context (``st.restating``: the step begins with a guess in hand, the draft keeps every guess, so
    the chain takes one pass) and new text (no guess: one pass per token)."""

    lookup = 10

    def lookup_state(self, st):
        return int(st.restating)

    def propose(self, st, size, max_depth, hidden):
        prop = super().propose(st, size, max_depth, hidden)
        prop.pass_widths = [size] if st.restating else [1] * size
        prop.draft_calls = len(prop.pass_widths)
        return prop


def _drive_two_regimes(drafter, blocks, pass_s=0.05, target_s=0.25):
    """Steps in blocks of (restating, steps): restating text is all accepted, new text half. Clocks
    advance 50 ms per draft pass and 250 ms per target pass (T1). Returns the sizes by state and
    the measured speedup over plain decoding (tokens per T1)."""
    st = _FakeState()
    sizes, tokens, seconds = {0: [], 1: []}, 0, 0.0
    for restating, steps in blocks:
        st.restating = restating
        for _ in range(steps):
            k = drafter.size(st)
            prop = drafter.propose(st, k, k, False)
            drafted = prop.tokens.tolist()
            kept = drafted if restating else drafted[: len(drafted) // 2]
            st.seq += kept + [-1 if len(kept) < len(drafted) else 99]
            draft = pass_s * prop.draft_calls if k else 0.0
            st.draft_s, st.target_s = st.draft_s + draft, st.target_s + target_s
            tokens, seconds = tokens + len(kept) + 1, seconds + draft + target_s
            if k:
                sizes[restating].append(k)
    return sizes, tokens / (seconds / target_s)


def test_lookup_states_trust_a_state_after_min_steps_and_fall_back_to_all_steps():
    states = cm.LookupStates(decay=1.0, min_steps=2)
    assert states.units_per_token(1) == 1.0 and states.alpha(1, 0.6) == 0.6  # nothing seen: a plain chain, the pooled alpha
    states.observe(1, units=1.2, tokens=8, visits=[(1, 1)] * 8)
    states.observe(0, units=4.0, tokens=4, visits=[(1, 1), (1, None)])
    # one step each: neither trusted; with a guess in hand priced from all steps, without as a plain chain
    assert states.units_per_token(1) == pytest.approx(5.2 / 12) and states.units_per_token(0) == 1.0
    assert states.alpha(0, 0.6) == 0.6 and states.metrics([1, 0])["auto_alpha_hit"] is None
    states.observe(1, units=1.2, tokens=8, visits=[(1, 1)] * 7 + [(1, None)])
    states.observe(1, units=0.0, tokens=8, visits=[])  # a clock-free step teaches nothing
    assert states.units_per_token(1) == pytest.approx(0.15) and states.units_per_token(0) == 1.0
    assert states.alpha(1, 0.6) == pytest.approx(states.acceptance[1].alpha) and states.alpha(1, 0.6) > 0.8
    assert states.units_per_token(None) == pytest.approx(6.4 / 20) and states.alpha(None, 0.6) == 0.6
    m = states.metrics([1, 1, 0, None])
    assert m["auto_lookup_share"] == 0.5 and m["auto_units_per_token_hit"] == pytest.approx(0.15)
    assert m["auto_units_per_token_miss"] is None


def test_auto_k_prices_a_lookup_chain_by_the_state_its_step_begins_in():
    """With method.lookup, a step that begins with a guess in hand drafts its chain in few passes and
    (restated text) is accepted whole; one without pays a pass per token. k=auto keeps c the
    machine's (seconds per single-token draft pass over T1) and learns each state's draft units per
    token and acceptance: long chains while restating, short ones after, and a prediction of the
    run's speed that pooled estimates (lagging each switch) do not reach."""
    from spsamp.drafting.autosize import AutoSized

    blocks = [(1, 12), (0, 12)] * 5
    drafter = AutoSized(_FakeCascade())
    drafter.set_costs(cm.Costs(c=0.1, v=FLAT, vd=FLAT))
    sizes, measured = _drive_two_regimes(drafter, blocks)
    m = drafter.metrics()
    assert m["auto_c"] == pytest.approx(0.2) and m["auto_c_probe"] == pytest.approx(0.1)  # 0.05 / 0.25
    assert m["auto_units_per_token_miss"] == pytest.approx(1.0) and m["auto_units_per_token_hit"] < 0.15
    assert m["auto_alpha_hit"] > 0.9 > 0.7 > m["auto_alpha_miss"]
    assert 0.4 < m["auto_lookup_share"] < 0.6
    assert min(sizes[1][-5:]) > 2 * max(sizes[0][-5:])
    # the prediction's terms multiply back to it
    assert m["auto_predicted_step_tokens"] / m["auto_predicted_step_cost"] == pytest.approx(m["auto_predicted_speedup"])
    by_state = m["auto_predicted_speedup"] / measured - 1

    class _OneState(_FakeCascade):  # the same chains, priced without the state
        def lookup_state(self, st):
            return None

    pooled = AutoSized(_OneState())
    pooled.set_costs(cm.Costs(c=0.1, v=FLAT, vd=FLAT))
    _, measured_pooled = _drive_two_regimes(pooled, blocks)
    error_pooled = pooled.metrics()["auto_predicted_speedup"] / measured_pooled - 1
    assert abs(by_state) < 0.1 and abs(by_state) < abs(error_pooled) / 2, (by_state, error_pooled)


def test_costs_measured_in_place_leave_a_decode_in_progress_as_it_was(one_thread):
    from spsamp.models import load_model

    run, _ = validate(compose_cfg(["model=tiny_random", "method=speculative", "hardware.cpu_linear=aten"]))
    target, draft = load_model(run.model.target, run.hardware), load_model(run.model.draft, run.hardware)
    target.prefill(torch.tensor([1, 2, 3, 4, 5]))
    draft.prefill(torch.tensor([1, 2, 3]))
    before = target.forward(torch.tensor([6])).logits.clone()
    target.crop(5)
    costs = cm.measure_costs(target, draft, widths=(1, 4), draft_widths=(1, 2), repeats=1)
    assert target.cache_len == 5 and draft.cache_len == 3 and costs.c > 0
    torch.testing.assert_close(target.forward(torch.tensor([6])).logits, before)


def test_verify_cost_pools_timings_that_say_more_tokens_cost_less():
    v = cm.VerifyCost({2: 1.4, 4: 0.8, 8: 1.0, 16: 1.5})  # v(2) and v(4) out of order: one interrupted pass
    got = [v(n) for n in (1, 2, 4, 8, 16)]
    assert got == sorted(got) and got[0] == 1.0
    assert v(2) == pytest.approx(v(4)) and v(2) == pytest.approx((1.4 + 0.8 + 1.0) / 3)
    assert cm.VerifyCost({2: 1.5}).describe() == "v(1)=1.00, v(2)=1.50"
    assert cm.VerifyCost({2: 1.5}).describe("vd", " = ") == "vd(1) = 1.00, vd(2) = 1.50"
# ---- method.k=auto with method.stop_below: the cap of a confidence-stopped chain -------------------


def test_stopped_chain_without_stops_is_the_chain():
    for alpha, k, c, v in [(0.8, 4, 0.1, FLAT), (0.5, 2, 0.3, INTEL), (0.95, 12, 0.2, INTEL)]:
        speed, cost = cm.stopped_chain(k, c, v, alpha, 0.1, sure=1.0)
        assert speed == pytest.approx(cm.chain_speedup(alpha, k, c, v)) and cost == pytest.approx(k * c + v(k + 1))


@pytest.mark.parametrize("k,c,a_sure,a_unsure,sure", [(8, 0.2, 0.9, 0.2, 0.6), (3, 0.4, 0.7, 0.4, 0.3), (12, 0.05, 0.97, 0.05, 0.85)])
def test_stopped_chain_is_what_such_chains_yield(k, c, a_sure, a_unsure, sure):
    """Simulate the model the formula claims to price: per position, sure with probability
    ``sure``, then accepted with a_sure (else a_unsure); the chain ends after an unsure token or at k;
    kept = the accepted prefix. Tokens over cost of 100,000 steps must match."""
    rng = np.random.default_rng(0)
    n = 100_000
    is_sure = rng.random((n, k)) < sure
    accepted = rng.random((n, k)) < np.where(is_sure, a_sure, a_unsure)
    # drafted: position i exists iff positions < i were all sure
    drafted = np.concatenate([np.ones((n, 1), bool), np.cumprod(is_sure[:, :-1], axis=1).astype(bool)], axis=1)
    length = drafted.sum(1)
    kept = (np.cumprod(accepted & drafted, axis=1)).sum(1)
    cost = c * length + np.array([INTEL(int(x) + 1) for x in length])
    speed, step_cost = cm.stopped_chain(k, c, INTEL, a_sure, a_unsure, sure)
    assert (1 + kept).sum() / cost.sum() == pytest.approx(speed, rel=0.01)
    assert cost.mean() == pytest.approx(step_cost, rel=0.01)


def test_best_stopped_k_is_the_argmax_and_a_stop_that_cuts_bad_tokens_buys_longer_caps():
    c, a_sure, a_unsure, sure = 0.2, 0.95, 0.1, 0.5
    k, speed, _ = cm.best_stopped_k(c, INTEL, a_sure, a_unsure, sure, k_max=16)
    assert speed == pytest.approx(max(cm.stopped_chain(j, c, INTEL, a_sure, a_unsure, sure)[0] for j in range(1, 17)))
    # the same tokens without the stop: acceptance a = the pooled rate, every chain runs to k
    plain_k, plain = cm.best_k(sure * a_sure + (1 - sure) * a_unsure, c, INTEL, 16)
    assert k > plain_k and speed > plain
    # a stop that fires on tokens no worse than the rest buys nothing: the cap drops to the plain k's size or below
    assert cm.best_stopped_k(c, INTEL, 0.6, 0.6, 0.5)[0] <= cm.best_k(0.6, c, INTEL)[0] + 1


def test_confidence_acceptance_learns_the_sure_share_and_both_acceptances():
    conf = cm.ConfidenceAcceptance(decay=1.0)
    for _ in range(200):
        conf.observe([True, True, False], kept=2)  # two sure tokens kept, the unsure third rejected
        conf.observe([True, False], kept=2)  # both kept
    a_sure, a_unsure = conf.alphas
    assert a_sure > 0.98 and 0.45 < a_unsure < 0.55 and conf.sure == pytest.approx(0.6, abs=0.01)
    conf.observe([True, True, True, True], kept=0)  # tokens after the first rejection were never tested
    assert conf.tests[0] == pytest.approx(2 + 600 + 1)


class _FakeStoppedChain(_FakeChain):
    """Proposes up to `size` tokens; the draft is sure of all but every third token, where it stops."""

    stop_below = 0.5

    def propose(self, st, size, max_depth, hidden):
        from spsamp.proposals import Proposal

        sure = [(i + 1) % 3 != 0 for i in range(size)]
        n = next((i + 1 for i, s in enumerate(sure) if not s), size)
        return Proposal.chain(torch.arange(1, n + 1), draft_calls=n, stats=sure[:n])


def test_auto_k_with_a_stop_learns_from_its_flags_and_reports_them():
    from spsamp.drafting.autosize import AutoSized

    drafter = AutoSized(_FakeStoppedChain())
    drafter.set_costs(cm.Costs(c=0.2, v=FLAT, vd=FLAT))
    _drive(drafter, _FakeState(), 80, lambda tokens: tokens[:2])  # sure tokens are kept, the unsure third is rejected
    m = drafter.metrics()
    assert m["auto_alpha_sure"] > 0.9 and m["auto_alpha_unsure"] < 0.2 and 0.5 < m["auto_sure"] < 0.8
    assert m["auto_k_last"] >= 3  # chains that reach the unsure token: the stop ends them, not the cap


# ---- wiring: method.k=auto / method.budget=auto end to end ------------------------------------


@pytest.mark.parametrize("bad,field", [(["method=speculative", "method.k=fast"], "method.k"), (["method=speculative", "method.k=0"], "method.k"),
                                       (["method=specexec", "method.budget=many"], "method.budget")])
def test_auto_sizes_refuse_other_words(bad, field):
    from spsamp.config import ConfigError

    with pytest.raises(ConfigError, match=rf"^{field}: must be an integer >= 1 or auto"):
        validate(compose_cfg(["model=tiny_random", *bad]))


@pytest.mark.parametrize("method", [["method=speculative", "method.k=auto"], ["method=speculative", "method.k=auto", "method.stop_below=0.2"],
                                    ["method=specexec", "method.budget=auto", "method.parallel_branches=4"]])
def test_auto_size_runs_records_its_choices_and_stays_lossless(tmp_path, method, one_thread):
    import json

    from spsamp.runner import JobInfo, run_job

    common = ["model=tiny_random", "++model.target.dtype=float64", "++model.draft.dtype=float64", "generation.max_new_tokens=12",
              "dataset.max_samples=2", "generation.warmup=0", "hardware.cpu_linear=aten"]
    rows = run_job(compose_cfg(common + method), JobInfo(output_dir=str(tmp_path / "auto"))).rows
    base = run_job(compose_cfg(common + ["method=baseline"]), JobInfo(output_dir=str(tmp_path / "base"))).rows
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    name = "k" if "method.k=auto" in method else "budget"
    for r, b in zip(rows, base):
        assert r["generated_ids"] == b["generated_ids"]  # greedy, fp64: the auto size changes speed, never tokens
        m = json.loads(r["metrics_json"])
        steps = sum(m[f"auto_{name}_hist"].values()) + m.get("auto_t1_steps", 0)
        assert steps == r["steps"] and 1 <= m[f"auto_{name}_mean"] and m["auto_c"] > 0  # one choice per target step
        assert r[f"param_{name}"] == "auto"
        assert r["proposed"] > 0 and r["draft_calls"] > 1  # it really drafted
        if "method.stop_below=0.2" in method:
            assert 0 <= m["auto_sure"] <= 1 and {"auto_alpha_sure", "auto_alpha_unsure"} <= m.keys()


# ---- method.grow=cost: each tree sized from the measured costs ----------------------------------


def test_tree_speed_verifies_the_prefix_worth_its_verify_cost():
    values = [0.9, 0.8, 0.2, 0.1, 0.05, 0.01]
    # free verification: every node with any value is worth verifying
    assert cm.tree_speed(values, spent=3, c=0.2, v=FLAT)[0] == 6
    # each node costs 0.1 of a pass to verify: nodes worth less than what that time buys are cut
    steep = cm.VerifyCost({64: 7.3})  # v(n) = 1 + 0.1 (n - 1)
    m, s = cm.tree_speed(values, spent=3, c=0.2, v=steep)
    assert m == 3 and s == pytest.approx((1 + 0.9 + 0.8 + 0.2) / (0.6 + steep(4)))
    # a calibration that says the target accepts half of what the draft expects shrinks the tree
    assert cm.tree_speed(values, 3, 0.2, steep, scale=0.5)[0] == 2
    assert cm.tree_speed([], 1, 0.2, FLAT) == (0, pytest.approx(1 / 1.2))


def test_expansion_width_stops_when_no_pass_pays_for_itself():
    tree, frontier = [0.9, 0.05, 0.03], [0.9, 0.05]  # a confident top node and two unlikely ones
    wide = cm.VerifyCost({8: 1.0})  # a draft pass over 8 nodes costs one over 1
    # a cheap draft expands the likely node; the unlikely one adds too little to be worth a token slot
    assert cm.expansion_width(tree, frontier, 0.9, spent=1, c=0.05, v=FLAT, vd=wide, budget=3) == 1
    # with room in the tree and free width, the unlikely one comes along
    assert cm.expansion_width(tree, frontier, 0.9, spent=1, c=0.05, v=FLAT, vd=wide, budget=8) == 2
    # a draft pass as dear as a target pass buys less than it costs: stop
    assert cm.expansion_width(tree, frontier, 0.9, spent=1, c=1.0, v=FLAT, vd=wide, budget=8) == 0
    # an unsure draft (children a third as likely) stops sooner than a sure one at the same cost
    sure = cm.expansion_width([0.6, 0.3], [0.6], 0.9, spent=4, c=0.3, v=FLAT, vd=wide, budget=8)
    unsure = cm.expansion_width([0.6, 0.3], [0.6], 0.3, spent=4, c=0.3, v=FLAT, vd=wide, budget=8)
    assert (sure, unsure) == (1, 0)


def test_calibration_follows_what_the_target_accepted_within_bounds():
    cal = cm.Calibration()
    assert cal.scale == 1.0
    for _ in range(40):
        cal.observe(expected=2.0, accepted=3)
    assert cal.scale == pytest.approx(1.5, rel=0.01)
    for _ in range(40):
        cal.observe(expected=2.0, accepted=0)
    assert cal.scale == 0.25  # floor: one bad stretch must not stop every tree for good


def test_pooled_speedup_weighs_each_step_by_its_cost():
    # a cheap step at 3x (1 token-pass for 3 tokens) and a dear one at 1x (5 passes for 5 tokens):
    # together 8 tokens in 6 passes, 1.33x — not the 2x a plain mean of the two would say
    assert cm.pooled_speedup([3.0, 1.0], [1.0, 5.0]) == pytest.approx(8 / 6)
    assert cm.pooled_speedup([2.0, 2.0], [1.0, 7.0]) == pytest.approx(2.0)
    assert math.isnan(cm.pooled_speedup([], []))
