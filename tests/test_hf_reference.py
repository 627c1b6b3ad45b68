"""The transformers reference rows: method=hf_generate, hf_assisted and hf_prompt_lookup."""

from __future__ import annotations

import torch

from conftest import compose_cfg
from spsamp.config import GenerationConfig, validate
from spsamp.decoders.baseline import BaselineDecoder
from spsamp.decoders.hf_assisted import HFAssistedDecoder
from spsamp.decoders.hf_generate import HFGenerateDecoder
from spsamp.decoders.hf_prompt_lookup import HFPromptLookupDecoder
from spsamp.decoders.prompt_lookup import PromptLookupDecoder
from spsamp.models import load_model


def tiny_pair():
    run, _ = validate(compose_cfg(["model=tiny_random", "method=speculative", "hardware.dtype=float64"]))
    return load_model(run.model.target, run.hardware), load_model(run.model.draft, run.hardware)


def test_hf_references_match_baseline_at_temperature_zero_and_count_calls(one_thread):
    target, draft = tiny_pair()
    gen = GenerationConfig(max_new_tokens=20)
    for prompt in ([5, 6, 7], [10, 20, 30, 40, 50]):
        ids = torch.tensor(prompt)
        ours = BaselineDecoder().generate(target, None, ids, gen, torch.Generator().manual_seed(0))
        plain = HFGenerateDecoder().generate(target, None, ids, gen, torch.Generator().manual_seed(0))
        assisted = HFAssistedDecoder(k=3).generate(target, draft, ids, gen, torch.Generator().manual_seed(0))
        assert plain.tokens == ours.tokens == assisted.tokens
        n = len(plain.tokens)
        assert plain.stats.target_calls == n  # one prefill + one pass per further token
        assert plain.prefill_s > 0 and plain.ttft_s >= plain.prefill_s
        # assisted: every target call verifies one block, the draft ran k passes per block (at most)
        assert 1 <= assisted.stats.target_calls <= n and assisted.stats.draft_calls >= assisted.stats.target_calls
        assert assisted.stats.extra["mean_tokens_per_target_call"] == n / assisted.stats.target_calls


def test_hf_generate_sampling_is_reproducible_per_row_seed(one_thread):
    target, _ = tiny_pair()
    gen = GenerationConfig(max_new_tokens=16, temperature=1.0)
    ids = torch.tensor([5, 6, 7])
    run = [HFGenerateDecoder().generate(target, None, ids, gen, torch.Generator().manual_seed(s)).tokens for s in (1, 1, 2)]
    assert run[0] == run[1] and run[0] != run[2]


def test_hf_prompt_lookup_matches_ours_at_temperature_zero(one_thread):
    target, _ = tiny_pair()
    gen = GenerationConfig(max_new_tokens=24)
    for prompt in ([5, 6, 7, 5, 6, 8, 5, 6], [10, 20, 30, 40, 50]):
        ids = torch.tensor(prompt)
        base = BaselineDecoder().generate(target, None, ids, gen, torch.Generator()).tokens
        ours = PromptLookupDecoder(k=4, lookup_ngram=2).generate(target, None, ids, gen, torch.Generator())
        ref = HFPromptLookupDecoder(k=4, lookup_ngram=2).generate(target, None, ids, gen, torch.Generator())
        assert ours.tokens == ref.tokens == base
        assert ours.stats.target_calls <= len(base) and ref.stats.target_calls <= len(base)
        assert ref.stats.extra["mean_tokens_per_target_call"] == len(base) / ref.stats.target_calls


def own_pair(**target_generation):
    """A fresh float64 tiny pair (not the memoised one: these tests edit generation configs)."""
    from spsamp.models import CausalLM
    from spsamp.models.tiny import char_tokenizer, tiny_llama

    run, _ = validate(compose_cfg(["model=tiny_random", "method=speculative"]))
    tm, dm = tiny_llama(run.model.target.tiny, torch.float64), tiny_llama(run.model.draft.tiny, torch.float64)
    for key, value in target_generation.items():
        setattr(tm.generation_config, key, value)
    return CausalLM(tm, char_tokenizer(), "target"), CausalLM(dm, char_tokenizer(), "draft")


def test_model_generation_config_does_not_leak_into_the_references(one_thread):
    """A hub model's generation_config (repetition penalty, n-gram ban, min length, top_k) must not
    change what the references decode: they decode spsamp's settings, as baseline does."""
    target, draft = own_pair(repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=30, top_k=3)
    draft.model.generation_config.repetition_penalty = 1.5
    draft.model.generation_config.num_assistant_tokens = 17
    before = (target.model.generation_config.to_dict(), draft.model.generation_config.to_dict())
    gen = GenerationConfig(max_new_tokens=40)
    ids = torch.tensor([5, 6, 7, 8])
    ours = BaselineDecoder().generate(target, None, ids, gen, torch.Generator().manual_seed(0))
    plain = HFGenerateDecoder().generate(target, None, ids, gen, torch.Generator().manual_seed(0))
    assisted = HFAssistedDecoder(k=3).generate(target, draft, ids, gen, torch.Generator().manual_seed(0))
    assert plain.tokens == ours.tokens
    assert assisted.tokens == ours.tokens
    # the models' own configs are left as they were (the references do not edit shared models)
    assert (target.model.generation_config.to_dict(), draft.model.generation_config.to_dict()) == before


def test_references_sample_with_spsamp_truncation_only(one_thread):
    """At T > 0 a model's top_k=3 must not truncate: with top_k=0 (off) tokens outside any top-3 appear."""
    target, _ = own_pair(top_k=1)  # a leak would make sampling greedy
    gen = GenerationConfig(max_new_tokens=24, temperature=5.0)
    ids = torch.tensor([5, 6, 7])
    greedy = BaselineDecoder().generate(target, None, ids, GenerationConfig(max_new_tokens=24), torch.Generator().manual_seed(0))
    runs = [HFGenerateDecoder().generate(target, None, ids, gen, torch.Generator().manual_seed(s)).tokens for s in range(3)]
    assert any(r != greedy.tokens for r in runs)


def spy_on_assistant_settings(monkeypatch) -> list[tuple]:
    """What transformers' candidate generator starts each call from (read off the generator it built)."""
    from transformers.generation import candidate_generator as cg

    seen: list[tuple] = []
    init = cg.AssistedCandidateGenerator.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        seen.append((self.num_assistant_tokens, self.assistant_generation_config.num_assistant_tokens_schedule,
                     self.assistant_confidence_threshold))

    monkeypatch.setattr(cg.AssistedCandidateGenerator, "__init__", spy)
    return seen


def test_hf_assisted_runs_transformers_default_schedule_and_records_it(one_thread, monkeypatch):
    """method=hf_assisted_default: transformers' own assistant settings reach its candidate generator
    (not SpS's constant k without a confidence stop), the row records them, and at T=0 in float32
    the tokens still equal baseline's."""
    from transformers import GenerationConfig as HFGenerationConfig

    run, params = validate(compose_cfg(["model=tiny_random", "method=hf_assisted_default", "hardware.dtype=float32"]))
    assert (params.k, params.schedule) == (None, "transformers_default")
    target, draft = load_model(run.model.target, run.hardware), load_model(run.model.draft, run.hardware)
    shipped = HFGenerationConfig._get_default_generation_params()
    want = tuple(shipped[key] for key in ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold"))
    seen = spy_on_assistant_settings(monkeypatch)
    gen = GenerationConfig(max_new_tokens=24)
    for prompt in ([5, 6, 7], [10, 20, 30, 40, 50]):
        ids = torch.tensor(prompt)
        base = BaselineDecoder().generate(target, None, ids, gen, torch.Generator().manual_seed(0))
        out = HFAssistedDecoder(**vars(params)).generate(target, draft, ids, gen, torch.Generator().manual_seed(0))
        assert out.tokens == base.tokens
        extra = out.stats.extra
        assert (extra["hf_num_assistant_tokens"], extra["hf_num_assistant_tokens_schedule"], extra["hf_assistant_confidence_threshold"]) == want
    assert seen == [want, want]
    # a fixed k with transformers' schedule and threshold; and the constant schedule: k, no stop
    seen.clear()
    HFAssistedDecoder(k=3, schedule="transformers_default").generate(target, draft, ids, gen, torch.Generator())
    HFAssistedDecoder(k=3).generate(target, draft, ids, gen, torch.Generator())
    assert seen == [(3, want[1], want[2]), (3, "constant", 0.0)]


def test_hf_assisted_schedule_options_are_checked():
    from spsamp.config import ConfigError

    for overrides, field in ((["method.schedule=heuristic"], "method.schedule"), (["method.k=null"], "method.k"),
                             (["method.k=0"], "method.k")):
        try:
            validate(compose_cfg(["model=tiny_random", "method=hf_assisted", *overrides]))
        except ConfigError as exc:
            assert str(exc).startswith(f"{field}:"), exc
        else:
            raise AssertionError(f"{overrides} accepted")
