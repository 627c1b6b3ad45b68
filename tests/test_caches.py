"""Per-process caches are keyed by everything that changes what they hold (issue #34): the thread
count for loaded models and the cost probe, live objects (not ``id()``) for the tokenizer check,
and the HF reference rows seed a fork of the global RNG, not the RNG itself."""

from __future__ import annotations

import gc

import torch

from conftest import compose_cfg
from spsamp.config import GenerationConfig, validate
from spsamp.models import CausalLM, load_model


def _tiny():
    run, _ = validate(compose_cfg(["model=tiny_random", "hardware.cpu_linear=aten"]))
    return run


def test_a_loaded_model_is_reused_only_on_the_thread_count_it_was_loaded_on():
    run = _tiny()
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = load_model(run.model.target, run.hardware, run.paths.cache_dir)
        assert load_model(run.model.target, run.hardware, run.paths.cache_dir) is one  # still memoised
        torch.set_num_threads(2)
        two = load_model(run.model.target, run.hardware, run.paths.cache_dir)
    finally:
        torch.set_num_threads(n)
    assert two is not one, "a model loaded (and its kernels chosen) on 1 thread was reused on 2"


def test_the_cost_probe_measures_again_on_another_thread_count(monkeypatch):
    import weakref

    from spsamp import cost_model

    run = _tiny()
    target = load_model(run.model.target, run.hardware, run.paths.cache_dir)
    draft = load_model(run.model.draft, run.hardware, run.paths.cache_dir)
    monkeypatch.setattr(cost_model, "_PROBED", weakref.WeakKeyDictionary())
    calls = []
    real = cost_model.measure_costs
    monkeypatch.setattr(cost_model, "measure_costs",
                        lambda *a, **kw: calls.append(torch.get_num_threads()) or real(*a, widths=(1, 2), draft_widths=(1, 2), repeats=1))
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        first = cost_model.probe_costs(target, draft)
        assert cost_model.probe_costs(target, draft) is first  # once per pair and thread count
        torch.set_num_threads(2)
        cost_model.probe_costs(target, draft)
    finally:
        torch.set_num_threads(n)
    assert calls == [1, 2], f"probe measured on threads {calls}"


def test_the_tokenizer_check_forgets_freed_models():
    from spsamp.models import loading

    run = _tiny()
    base = load_model(run.model.target, run.hardware, run.paths.cache_dir)
    before = len(loading._CHECKED_PAIRS)
    a, b = CausalLM(base.model, base.tokenizer, "a"), CausalLM(base.model, base.tokenizer, "b")
    loading.check_same_tokenizer(a, b)
    assert len(loading._CHECKED_PAIRS) == before + 1
    del a, b
    gc.collect()
    # an id()-keyed memo would keep vouching for whatever objects reuse those ids next
    assert len(loading._CHECKED_PAIRS) == before


def test_hf_reference_rows_leave_the_global_rng_as_they_found_it(one_thread):
    from spsamp.decoders.hf_generate import hf_generate

    run = _tiny()
    target = load_model(run.model.target, run.hardware, run.paths.cache_dir)
    ids = torch.tensor(target.tokenizer("hello")["input_ids"])
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    gen = GenerationConfig(max_new_tokens=4, temperature=1.0)
    a = hf_generate(target, ids, gen, torch.Generator().manual_seed(5)).tokens
    assert torch.equal(torch.random.get_rng_state(), state), "hf_generate moved the global RNG"
    b = hf_generate(target, ids, gen, torch.Generator().manual_seed(5)).tokens
    assert a == b  # still seeded from the row's generator: the same row samples the same tokens
