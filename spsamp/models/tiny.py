"""Tiny random-weight Llamas and a character tokenizer for them — tests without any file.

The tokenizer is character level over printable ASCII (plus newline and three specials), built with
the ``tokenizers`` library, so every piece of text code (chat-free prompts, decoding, records) is
exercised for real. Target and draft built from the same ``vocab_size`` share it exactly.
"""

from __future__ import annotations

import string

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from spsamp.config import TinyModelConfig

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHARS = list(string.printable[:95]) + ["\n"]  # digits, letters, punctuation, space, newline


def char_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def tiny_llama(cfg: TinyModelConfig, dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    """A Llama with random weights drawn under ``cfg.seed`` (same seed -> same weights)."""
    n_vocab = len(SPECIALS) + len(CHARS)
    if cfg.vocab_size < n_vocab:
        raise ValueError(f"tiny.vocab_size must be >= {n_vocab} (the character tokenizer's size)")
    config = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    config._attn_implementation = "eager"  # exact and dtype-agnostic (float64 tests)
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(cfg.seed)
        model = LlamaForCausalLM(config)
        # default init (std 0.02) gives near-uniform logits; scale up so argmax is decisive
        with torch.no_grad():
            model.lm_head.weight.mul_(20.0)
    return model.to(dtype).eval()
