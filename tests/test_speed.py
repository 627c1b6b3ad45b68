"""Speed settings chosen by measurement: CPU linear kernels (``hardware.cpu_linear=auto``), the
default thread count, and the cost model's k / budget choices. Timings here are fake (a patched
clock) wherever a choice is checked; speed itself is never asserted."""

from __future__ import annotations

import logging

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
    assert choice == "aten" and scores == pytest.approx({"aten": 2.2, "onednn": 2.6})


def test_choice_ignores_a_pass_another_process_interrupted():
    # one 100x outlier (a descheduled pass) would flip a mean; the median keeps the truth
    timings = {"aten": {1: [1.0, 1.0, 1.0, 1.0, 1.0]}, "onednn": {1: [0.5, 0.5, 50.0, 0.5, 0.5]}}
    assert choose_cpu_linear(timings)[0] == "onednn"


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


def test_auto_times_both_kernels_on_a_real_tiny_model_and_records_the_choice(monkeypatch, one_thread):
    from spsamp.models import clear_model_cache, load_model

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


def test_auto_on_a_quantized_model_is_aten_without_timing(monkeypatch):
    from spsamp.models import clear_model_cache, load_model

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
