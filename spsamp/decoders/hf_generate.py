"""``method=hf_generate``: transformers' own ``generate`` as a reference row.

Not a method of ours: the library's decoding loop on the very same loaded model (same weights,
dtype and ``hardware.cpu_linear`` kernels), so that "ours vs transformers" is read from ordinary
records of one sweep. Sampling is transformers' (its logits processors and the global torch RNG,
seeded per row), so at T > 0 its tokens differ from ``method=baseline`` while following the same
distribution; at T = 0 they are equal (tests/test_hf_reference.py).

Fair comparison: ``generate`` gets an explicit ``transformers.GenerationConfig`` built from spsamp's
``generation`` settings only (:func:`reference_config`), and the models' own ``generation_config``
(a hub model's ``repetition_penalty``, ``no_repeat_ngram_size``, ``min_length``, ``top_k``, bad
words, ...) is swapped out for the call: transformers fills every unset field of a passed config
from the model's, so passing one is not enough (``GenerationMixin._prepare_generation_config``).

Counters come from forward hooks on the models (``target_calls``, ``draft_calls``) and from a
streamer (the first new token's time, ``ttft_s``); ``prefill_s`` is the target's first forward.
"""

from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
from transformers import GenerationConfig as HFGenerationConfig

from spsamp.batching import left_pad, pad_id
from spsamp.config import GenerationConfig
from spsamp.decoders.base import DecodeOutput, Decoder, DecodeStats, truncate_at_eos
from spsamp.models import CausalLM


class CallCounter:
    """Counts a module's forward calls and times the first one."""

    def __init__(self) -> None:
        self.calls = 0
        self.first_s = 0.0
        self._t0 = 0.0

    def before(self, module: Any, args: Any) -> None:
        if self.calls == 0:
            self._t0 = time.perf_counter()

    def after(self, module: Any, args: Any, output: Any) -> None:
        if self.calls == 0:
            self.first_s = time.perf_counter() - self._t0
        self.calls += 1


@contextmanager
def counting(model: Any) -> Iterator[CallCounter]:
    counter = CallCounter()
    handles = [model.register_forward_pre_hook(counter.before), model.register_forward_hook(counter.after)]
    try:
        yield counter
    finally:
        for h in handles:
            h.remove()


class FirstTokenClock:
    """A ``generate`` streamer that notes when the first new token arrives.

    transformers calls ``put`` once with the prompt, then with each new token (or accepted chunk).
    """

    def __init__(self, start: float):
        self.start, self.ttft_s, self._puts = start, 0.0, 0

    def put(self, value: Any) -> None:
        self._puts += 1
        if self._puts == 2:
            self.ttft_s = time.perf_counter() - self.start

    def end(self) -> None:
        pass


# every logits processor of transformers off, by its neutral value (None-valued ones stay None:
# with the models' configs swapped out nothing fills them in; min_length among them — an explicit 0
# makes the assistant's every draft call log that min_new_tokens overrides it)
NEUTRAL = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "length_penalty": 1.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "num_beams": 1,
    "num_return_sequences": 1,
    "renormalize_logits": False,
    "remove_invalid_values": False,
}


def reference_config(gen: GenerationConfig, eos_ids: set[int]) -> HFGenerationConfig:
    """transformers' settings equal to spsamp's ``generation``."""
    eos = sorted(eos_ids)
    cfg: dict[str, Any] = {
        **NEUTRAL,
        "max_new_tokens": gen.max_new_tokens,
        "do_sample": gen.temperature > 0,
        "eos_token_id": eos or None,
        "pad_token_id": eos[0] if eos else None,
    }
    if gen.temperature > 0:
        # the same truncation as spsamp.sampling.logits_to_probs: top_k 0 and top_p 1.0 mean "off"
        cfg.update(temperature=gen.temperature, top_k=gen.top_k, top_p=gen.top_p)
    return HFGenerationConfig(**cfg)


@contextmanager
def own_generation_config(model: Any, cfg: HFGenerationConfig) -> Iterator[None]:
    """``model.generation_config = cfg`` for the call; the model's own config comes back after."""
    saved = model.generation_config
    model.generation_config = cfg
    try:
        yield
    finally:
        model.generation_config = saved


def hf_generate_rows(target: CausalLM, prompts: list[torch.Tensor], gen: GenerationConfig, rngs: list[torch.Generator]) -> list[DecodeOutput]:
    """One batched ``target.model.generate`` call over left-padded ``prompts`` (attention mask,
    ``pad_token_id`` = the smallest eos id): transformers' own batched decoding, the reference.

    Sampling draws from the global RNG for the whole batch, seeded from the first row's generator
    (every row's generator advances as it would alone), so at T > 0 a row's tokens depend on its
    batch-mates; at T = 0 they do not. Per row: its tokens cut at its EOS, ``target_calls`` the
    passes it took part in until then (one per token); prefill and first-token times are the batch's.
    """
    if target.model.dtype == torch.float64 and target.model.config._attn_implementation == "eager":
        # transformers gives a padding query nothing to attend to; eager attention's float32 softmax
        # makes that row NaN in a float64 model, and the NaN reaches real rows (spsamp.batching)
        raise ValueError("transformers' batched generate is wrong for a float64 model with eager attention (left padding turns "
                         "into NaN) — use generation.batch_size=1 or another dtype for hf_generate, or method=baseline")
    seeds = [int(torch.randint(0, 2**31 - 1, (1,), generator=r, device=r.device)) for r in rngs]
    torch.manual_seed(seeds[0])
    cfg = reference_config(gen, target.eos_ids)
    ids, mask = left_pad(prompts, pad_id(target.eos_ids))
    ids, mask = ids.to(target.device), mask.to(target.device)
    clock = FirstTokenClock(time.perf_counter())
    with own_generation_config(target.model, cfg), counting(target.model) as tc, torch.inference_mode():
        out = target.model.generate(ids, attention_mask=mask, streamer=clock, generation_config=cfg)
    outputs = []
    for row in out[:, ids.shape[1]:].tolist():
        tokens, _ = truncate_at_eos(row, target.eos_ids, gen.max_new_tokens)
        stats = DecodeStats(target_calls=len(tokens), steps=max(len(tokens) - 1, 0), accepted_lengths=[1] * max(len(tokens) - 1, 0))
        outputs.append(DecodeOutput(tokens=tokens, prefill_s=tc.first_s, ttft_s=clock.ttft_s, stats=stats))
    return outputs


def hf_generate(
    target: CausalLM,
    prompt_ids: torch.Tensor,
    gen: GenerationConfig,
    rng: torch.Generator,
    assistant: Optional[CausalLM] = None,
    extra: Optional[dict[str, Any]] = None,
) -> DecodeOutput:
    """One ``target.model.generate`` call (with ``assistant_model`` when given, and any ``extra``
    generation settings, e.g. ``prompt_lookup_num_tokens`` or the assistant's schedule, on the
    config both models run with); tokens and counters."""
    # generate() samples from the global RNG: seed it from the row's generator (reproducible rows),
    # inside a fork so the caller's global RNG state is the same after the call as before
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=rng, device=rng.device))
    on_cuda = torch.device(target.device).type == "cuda" and torch.cuda.is_available()
    devices = [torch.device(target.device)] if on_cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return _generate(target, prompt_ids, gen, assistant, extra)


def _generate(target: CausalLM, prompt_ids: torch.Tensor, gen: GenerationConfig, assistant: Optional[CausalLM],
              extra: Optional[dict[str, Any]]) -> DecodeOutput:
    cfg = reference_config(gen, target.eos_ids)
    cfg.update(**(extra or {}))  # a None leaves a field unset: transformers fills it from its defaults
    kwargs: dict[str, Any] = {"generation_config": cfg}
    ids = prompt_ids.to(target.device)[None]
    start = time.perf_counter()
    clock = FirstTokenClock(start)
    draft_counting = counting(assistant.model) if assistant is not None else nullcontext(CallCounter())
    with ExitStack() as stack:
        # the models' own generation configs would fill every field cfg leaves unset: swap them out
        stack.enter_context(own_generation_config(target.model, cfg))
        if assistant is not None:
            stack.enter_context(own_generation_config(assistant.model, cfg))
            kwargs["assistant_model"] = assistant.model
        tc = stack.enter_context(counting(target.model))
        dc = stack.enter_context(draft_counting)
        stack.enter_context(torch.inference_mode())
        out = target.model.generate(ids, attention_mask=torch.ones_like(ids), streamer=clock, **kwargs)
    tokens = out[0, ids.shape[1]:].tolist()
    stats = DecodeStats(target_calls=tc.calls, draft_calls=dc.calls, steps=max(tc.calls - (assistant is None), 0))
    if (assistant is not None or extra) and tc.calls:
        # each target call of assisted (or prompt lookup) generation verifies one block and keeps (accepted + 1) tokens;
        # per-step counts are not exposed by transformers, so only the mean is recorded
        stats.extra = {"mean_tokens_per_target_call": len(tokens) / tc.calls}
    return DecodeOutput(tokens=tokens, prefill_s=tc.first_s, ttft_s=clock.ttft_s, stats=stats)


class HFGenerateDecoder(Decoder):
    batchable = True

    @dataclass
    class Params:
        name: str = "hf_generate"

    def generate(self, target: CausalLM, draft: Optional[CausalLM], prompt_ids: torch.Tensor, gen: GenerationConfig,
                 rng: torch.Generator) -> DecodeOutput:
        return hf_generate(target, prompt_ids, gen, rng)

    def generate_batch(self, target: CausalLM, draft: Optional[CausalLM], prompts: list[torch.Tensor], gen: GenerationConfig,
                       rngs: list[torch.Generator]) -> list[DecodeOutput]:
        if len(prompts) == 1:
            return [self.generate(target, draft, prompts[0], gen, rngs[0])]
        return hf_generate_rows(target, prompts, gen, rngs)
