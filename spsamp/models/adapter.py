"""A thin adapter over any Hugging Face causal LM: forwards with a KV cache, rollback, hidden states.

Decoders only talk to :class:`CausalLM`; every version difference of the transformers cache API is
absorbed here: ``DynamicCache.crop`` takes a max length in 4.x and a negative count of tokens to
remove in 5.x (see :func:`crop_cache`), and the forward's cache argument is ``past_key_values``
up to 5.23 and ``cache`` from 5.24 on (see :func:`cache_argument`).

Sliding-window layers (Mistral, Qwen2 with ``use_sliding_window``, gpt-oss) keep every position
too (:func:`new_cache`): transformers' ``DynamicSlidingWindowLayer`` drops what falls out of the
window, so it cannot be rolled back past a rejected draft nor indexed by tree position; the window
is applied by the attention mask instead (transformers builds it for plain forwards,
:func:`spsamp.verification.attention_masks` for tree forwards). Outputs are the same; the cost is
a full-length cache on those layers.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Optional

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer


@dataclass
class Forward:
    """Output of one forward: logits ``[n, V]`` (float) and, on request, last hidden states ``[n, H]``."""

    logits: torch.Tensor
    hidden: Optional[torch.Tensor] = None


def cache_argument(model: Any) -> str:
    """The keyword ``model.forward`` takes its KV cache by: ``cache`` (transformers >= 5.24, where
    ``past_key_values`` is deprecated) or ``past_key_values`` (earlier versions, and models not yet
    ported). Read from the signature, so each model gets the name its own forward declares."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_cache(config: Any) -> DynamicCache:
    """A ``DynamicCache`` for ``config`` whose sliding-window layers are full layers (see the module doc)."""
    cache = DynamicCache(config=config)
    cache.layers = [DynamicLayer() if isinstance(layer, DynamicSlidingWindowLayer) else layer for layer in cache.layers]
    return cache


def cache_length(cache: DynamicCache) -> int:
    return int(cache.get_seq_length())


def crop_cache(cache: DynamicCache, length: int) -> None:
    """Truncate ``cache`` to its first ``length`` positions (no-op when already that short)."""
    drop = cache_length(cache) - length
    if drop <= 0:
        return
    # a negative argument means "remove that many" in both 4.x (crop(max_length)) and 5.x
    # (crop(tokens_to_remove), which rejects positive values)
    cache.crop(-drop)


def select_cache_positions(cache: DynamicCache, keep: torch.Tensor) -> None:
    """Keep only the sequence positions ``keep`` (1-D long, increasing) of every layer, in order.

    Used after a tree verification pass: the prefix plus the accepted path survive, the rejected
    branches are dropped, and the kept entries become contiguous.
    """
    for layer in cache.layers:
        layer.keys = layer.keys.index_select(-2, keep.to(layer.keys.device))
        layer.values = layer.values.index_select(-2, keep.to(layer.values.device))


class CausalLM:
    """One model, its tokenizer and its KV cache.

    ``forward`` appends to the cache; ``crop`` rolls it back; ``reset`` empties it. The cache length
    is the number of tokens the model has seen, so ``position_ids`` default to continuing from it.
    """

    def __init__(self, model: Any, tokenizer: Any, name: str, info: dict[str, Any] | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.info = dict(info or {})  # dtype, quantization, device map: copied into records
        self.device = input_device(model)
        self.cache = new_cache(model.config)
        self.cache_kwarg = cache_argument(model)
        self.eos_ids = eos_token_ids(model, tokenizer)

    @property
    def cache_len(self) -> int:
        return cache_length(self.cache)

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    def reset(self) -> None:
        self.cache = new_cache(self.model.config)

    def crop(self, length: int) -> None:
        crop_cache(self.cache, length)

    def keep_positions(self, keep: torch.Tensor) -> None:
        select_cache_positions(self.cache, keep)

    @torch.inference_mode()
    def forward(
        self,
        ids: torch.Tensor,
        *,
        last_only: bool = False,
        hidden: bool = False,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | dict[str, torch.Tensor] | None = None,
    ) -> Forward:
        """Run ``ids`` (``[n]`` or ``[1, n]``) after the cached tokens.

        last_only: compute logits of the last position only (prefill: the LM head over the whole
        prompt is a large, wasted matmul). position_ids / attention_mask: for tree verification,
        a ``[1, n]`` position tensor and a 4-D ``[1, 1, n, cache_len + n]`` additive mask (or one per
        layer type, from :func:`spsamp.verification.attention_masks`).
        """
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        out = self._run(ids, last_only, hidden, position_ids, attention_mask)
        h = None
        if hidden:
            h = out.hidden_states[-1][0]
            if last_only:
                h = h[-1:]
        return Forward(logits=out.logits[0], hidden=h)

    @torch.inference_mode()
    def forward_rows(self, ids: torch.Tensor, attention_mask: torch.Tensor | dict[str, torch.Tensor], position_ids: torch.Tensor,
                     last_only: bool = False) -> torch.Tensor:
        """Run a batch ``ids [B, n]`` after the cached tokens; logits ``[B, n, V]`` (``[B, 1, V]`` with
        ``last_only``). ``attention_mask`` (4-D ``[B, 1, n, cache_len + n]``, or one per layer type:
        :func:`spsamp.batching.row_masks`) and ``position_ids [B, n]`` (each row's own positions) are
        required: rows of different lengths share one cache, so neither follows from its length."""
        return self._run(ids, last_only, False, position_ids, attention_mask).logits

    def prefill_rows(self, ids: torch.Tensor, attention_mask: torch.Tensor | dict[str, torch.Tensor], position_ids: torch.Tensor) -> torch.Tensor:
        """Empty the cache and run a left-padded batch of prompts; logits ``[B, V]`` of each row's last position."""
        self.reset()
        return self.forward_rows(ids, attention_mask, position_ids, last_only=True)[:, -1]

    def _run(self, ids: torch.Tensor, last_only: bool, hidden: bool, position_ids: torch.Tensor | None,
             attention_mask: torch.Tensor | dict[str, torch.Tensor] | None) -> Any:
        ids = ids.to(self.device)
        kwargs: dict[str, Any] = {}
        if position_ids is not None:
            kwargs["position_ids"] = position_ids.to(self.device)
        if isinstance(attention_mask, dict):  # per layer type (spsamp.verification.attention_masks)
            kwargs["attention_mask"] = {kind: m.to(self.device) for kind, m in attention_mask.items()}
        elif attention_mask is not None:
            kwargs["attention_mask"] = attention_mask.to(self.device)
        kwargs[self.cache_kwarg] = self.cache  # the cache is updated in place: nothing to read back
        return self.model(
            input_ids=ids,
            use_cache=True,
            logits_to_keep=1 if last_only else 0,
            output_hidden_states=hidden,
            **kwargs,
        )

    def prefill(self, ids: torch.Tensor, hidden: bool = False) -> Forward:
        """Empty the cache and run the prompt; logits of the last prompt position only."""
        self.reset()
        return self.forward(ids, last_only=True, hidden=hidden)


def input_device(model: Any) -> torch.device:
    """Where input ids must go: the input embeddings' execution device.

    Under accelerate offload (``hardware.offload``) the embedding weight may sit on ``meta`` (on
    disk) or on the CPU while its hook runs it on the GPU, so the weight's device is not enough.
    """
    emb = model.get_input_embeddings()
    hook = getattr(emb, "_hf_hook", None)
    where = getattr(hook, "execution_device", None)
    if where is not None:
        return torch.device(f"cuda:{where}" if isinstance(where, int) else where)
    weight = getattr(emb, "weight", None)
    if weight is not None and weight.device.type != "meta":
        return weight.device
    return next((p.device for p in model.parameters() if p.device.type != "meta"), torch.device("cpu"))


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every id that ends generation: the generation config's eos ids plus the tokenizer's."""
    ids: set[int] = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for source in (gen_eos, getattr(tokenizer, "eos_token_id", None)):
        if source is None:
            continue
        ids.update(source if isinstance(source, (list, tuple)) else [source])
    return {int(i) for i in ids}
