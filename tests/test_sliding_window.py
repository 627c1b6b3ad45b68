"""Sliding-window attention (Mistral, Qwen2 with use_sliding_window, gpt-oss): tree masks and KV caches
per layer type. Tiny random models built from transformers' config classes; greedy equality with
baseline in float64 on prompts + answers several windows long."""

from __future__ import annotations

import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from spsamp.config import GenerationConfig
from spsamp.decoders.baseline import BaselineDecoder
from spsamp.decoders.specexec import SpecExecDecoder
from spsamp.decoders.speculative import SpeculativeDecoder
from spsamp.models import CausalLM
from spsamp.models.tiny import char_tokenizer

WINDOW = 6
NOISE = 0.5


def _tiny(family: str, hidden: int, layers: int, seed: int):
    common = dict(vocab_size=128, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, sliding_window=WINDOW,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    if family == "mistral":  # every layer slides
        config = MistralConfig(**common)
        cls = MistralForCausalLM
    else:  # qwen2: layers >= max_window_layers slide, the others attend to everything (a hybrid model)
        config = Qwen2Config(**common, use_sliding_window=True, max_window_layers=1)
        cls = Qwen2ForCausalLM
    config._attn_implementation = "eager"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = cls(config)
        with torch.no_grad():
            model.lm_head.weight.mul_(20.0)  # decisive argmax, as spsamp.models.tiny
    return CausalLM(model.to(torch.float64).eval(), char_tokenizer(), f"{family}-{seed}")


@pytest.fixture(params=["mistral", "qwen2"])
def pair(request):
    target = _tiny(request.param, 64, 3, 0)
    draft = _tiny(request.param, 64, 3, 0)  # the target with a noisy LM head: agrees often, not always
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        head = draft.model.lm_head.weight
        head.add_(torch.randn_like(head) * head.std() * NOISE)
    if request.param == "qwen2":
        assert target.model.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    return target, draft


@pytest.mark.parametrize("decoder", [SpeculativeDecoder(k=3), SpecExecDecoder(budget=8, parallel_branches=3, max_depth=4)],
                         ids=["speculative", "specexec"])
def test_sliding_window_models_match_baseline_at_temperature_zero(pair, decoder, one_thread):
    target, draft = pair
    gen = GenerationConfig(max_new_tokens=5 * WINDOW)
    for prompt in ([5, 6, 7], list(range(10, 10 + 3 * WINDOW))):  # shorter and longer than the window
        ids = torch.tensor(prompt)
        want = BaselineDecoder().generate(target, None, ids, gen, torch.Generator().manual_seed(0)).tokens
        got = decoder.generate(target, draft, ids, gen, torch.Generator().manual_seed(0))
        assert got.tokens == want
        # drafts were kept and rejected: masks and cache rollbacks after partial accepts were exercised
        assert got.stats.accepted > 0 and got.stats.rejections > 0, got.stats


def test_sliding_window_masks_are_device_correct(pair, one_thread):
    """Per-layer-type masks travel to the model's device too (tests/device_guard.py)."""
    from device_guard import FakeCuda

    target, draft = pair
    ids = torch.tensor(list(range(10, 10 + 2 * WINDOW)))
    with FakeCuda() as guard:
        for lm in (target, draft):
            guard.tag_module(lm.model)
            lm.device = torch.device("cuda")  # what CausalLM reports for a model on a GPU
        out = SpecExecDecoder(budget=6, parallel_branches=2, max_depth=3).generate(
            target, draft, ids, GenerationConfig(max_new_tokens=2 * WINDOW, temperature=0.8), guard.generator(0))
    assert 0 < len(out.tokens) <= 2 * WINDOW
