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
    assert target.info["cpu_linear"] in kernels.CHOICES  # aten, onednn, or split where each width's faster kernel saves enough
    # the next load on this machine (another job of the sweep, a resumed run) keeps that choice untimed
    monkeypatch.setattr(kernels, "_clock", lambda: pytest.fail("a remembered choice is not timed again"))
    again = load_model(run.model.target, run.hardware)
    clear_model_cache()
    assert again is not target and again.info["cpu_linear"] == target.info["cpu_linear"]
    kinds = {type(m).__name__ for m in again.model.modules()}
    assert ("OneDNNLinear" in kinds) == (target.info["cpu_linear"] in kernels.REORDERED)
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


# ---- the cost model's sizing maths (k=auto, grow=cost) ------------------------------------------

from spsamp import cost_model as cm  # noqa: E402

FLAT = cm.VerifyCost({})  # verification as free as a 1-token pass (Leviathan et al.'s assumption)
INTEL = cm.VerifyCost({4: 1.03, 8: 1.05, 16: 1.16, 32: 1.26, 64: 1.88})  # Qwen 1.5B bf16, issue #17


def test_verify_cost_interpolates_and_extends_the_measured_widths():
    assert INTEL(1) == 1.0 and INTEL(8) == pytest.approx(1.05) and INTEL(12) == pytest.approx(1.105)
    assert INTEL(2) == pytest.approx(1.01)  # between v(1) = 1 and v(4)
    assert INTEL(128) == pytest.approx(1.88 + (1.88 - 1.26) * 2)  # the last slope, continued
    assert FLAT(50) == 1.0


def best_k(alpha, c, v, k_max=16):
    """One row's k=auto choice: (k, predicted speedup)."""
    k, tokens, cost = cm.best_chain_k([alpha], [k_max], c, v, FLAT, k_max=k_max, k_min=1)
    return k, tokens / cost


def test_one_chain_step_is_theorem_3_8_when_verification_is_free():
    for alpha, k, c in [(0.8, 4, 0.1), (0.5, 2, 0.3), (0.95, 8, 0.05)]:
        tokens, cost = cm.chain_step([alpha], [k], k, c, FLAT, FLAT)
        assert tokens / cost == pytest.approx(cm.predicted_speedup(alpha, k, c))


def test_best_k_is_the_argmax_over_every_k():
    for alpha, c, v in [(0.9, 0.05, FLAT), (0.8, 0.39, INTEL), (0.6, 0.39, INTEL), (0.97, 0.02, INTEL)]:
        k, pred = best_k(alpha, c, v, k_max=24)
        brute = [(lambda t: t[0] / t[1])(cm.chain_step([alpha], [24], j, c, v, FLAT)) for j in range(1, 25)]
        assert pred == pytest.approx(max(brute)) and brute[k - 1] == pytest.approx(max(brute))


def test_best_k_follows_acceptance_and_cost():
    ks = [best_k(a, 0.1, FLAT)[0] for a in (0.5, 0.7, 0.9, 0.97)]
    assert ks == sorted(ks) and ks[0] < ks[-1]  # more acceptance -> longer drafts
    assert best_k(0.9, 0.02, FLAT)[0] > best_k(0.9, 0.3, FLAT)[0]  # cheaper draft -> longer drafts
    # expensive verification of many tokens caps k
    steep = cm.VerifyCost({2: 1.5, 4: 2.5, 8: 4.5})
    assert best_k(0.9, 0.05, steep)[0] < best_k(0.9, 0.05, FLAT)[0]
    assert best_k(0.0, 0.5, FLAT) == (1, pytest.approx(1 / 1.5))  # nothing accepted: the shortest draft
    # a calibration that says the target keeps fewer tokens than the formula expects shortens the chain
    assert cm.best_chain_k([0.9], [16], 0.1, FLAT, FLAT, scale=0.5, k_min=1)[0] < best_k(0.9, 0.1, FLAT)[0]


def _timed_pair(monkeypatch, target_s, draft_s: float):
    """The tiny pair with a fake clock: a target pass over n tokens takes ``target_s(n)`` seconds,
    a draft pass ``draft_s``."""
    from spsamp.models import load_model

    run, _ = validate(compose_cfg(["model=tiny_random", "method=speculative", "hardware.cpu_linear=aten"]))
    target, draft = load_model(run.model.target, run.hardware), load_model(run.model.draft, run.hardware)
    target_forward = type(target).forward
    now = {"t": 0.0}

    def fake_forward(lm, ids, **kw):
        out = target_forward(lm, ids, **kw)
        now["t"] += target_s(ids.shape[-1]) if lm is target else draft_s
        return out

    monkeypatch.setattr(type(target), "forward", fake_forward)
    monkeypatch.setattr(cm, "_clock", lambda: now["t"])
    return target, draft


def test_measured_costs_come_from_the_clock(monkeypatch):
    """c and v from fake pass times: target 10 ms + 1 ms per extra token, draft 2 ms flat."""
    target, draft = _timed_pair(monkeypatch, lambda n: 0.010 + 0.001 * (n - 1), 0.002)
    costs = cm.measure_costs(target, draft, torch.tensor([1, 2, 3, 4]), widths=(1, 4, 8), draft_widths=(1, 4), repeats=2)
    assert costs.c == pytest.approx(0.2)
    assert costs.v(4) == pytest.approx(1.3) and costs.v(8) == pytest.approx(1.7) and costs.vd(4) == pytest.approx(1.0)
    assert target.cache_len == 0 and draft.cache_len == 0


def test_the_probe_sees_a_kernels_step_in_cost_and_k_auto_stays_below_it(monkeypatch):
    """Target passes priced by blocks of 16 rows (as AMX tiles): 2..16 tokens cost as one, 17 a block more.
    The probe times the widths a chain verifies, so v(17) carries the step that powers of two
    alone would interpolate away, and a confident chain stops at k = 15 (a 16-token verify pass)."""
    target, draft = _timed_pair(monkeypatch, lambda n: 0.010 * (1 + 0.25 * (-(-n // 16) - 1)), 0.0005)
    costs = cm.measure_costs(target, draft, torch.tensor([1, 2, 3, 4]), repeats=1)
    assert costs.v(16) == pytest.approx(1.0) and costs.v(17) == pytest.approx(1.25)
    sparse = cm.measure_costs(target, draft, torch.tensor([1, 2, 3, 4]), widths=(1, 2, 4, 8, 16, 32, 64), repeats=1)
    assert sparse.v(17) < 1.05  # what interpolating between powers of two would have priced
    k = cm.best_chain_k([0.99], [64], costs.c, costs.v, costs.vd, k_max=16, k_min=1)[0]
    k_sparse = cm.best_chain_k([0.99], [64], sparse.c, sparse.v, sparse.vd, k_max=16, k_min=1)[0]
    assert k == 15 and k_sparse == 16


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
    assert cm.VerifyCost({2: 1.5}).describe("vd") == "vd(1)=1.00, vd(2)=1.50"


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


def test_a_rows_predicted_speedup_weighs_each_step_by_its_cost():
    # a cheap step at 3x (1 token-pass for 3 tokens) and a dear one at 1x (5 passes for 5 tokens):
    # together 8 tokens in 6 passes, 1.33x — not the 2x a plain mean of the two would say
    from spsamp.drafting.sizing import Choice, choice_metrics

    cost = cm.StepCost(cm.Costs(c=0.1, v=FLAT, vd=FLAT))
    m = choice_metrics([Choice(2, None, 3.0, 1.0), Choice(4, None, 5.0, 5.0)], cost)
    assert m["sizing_predicted_speedup"] == pytest.approx(8 / 6) and m["sizing_sizes"] == [2, 4]
