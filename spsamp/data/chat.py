"""Prompts as model input: a conversation's messages and their token ids (chat template or plain)."""

from __future__ import annotations

from typing import Any, Optional

import torch


def messages_for(system_prompt: Optional[str], turns: tuple[str, ...], answers: list[str]) -> list[dict[str, str]]:
    """The conversation up to the last of ``turns``: system prompt, then user turns interleaved
    with the model's earlier ``answers``."""
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for i, user in enumerate(turns):
        msgs.append({"role": "user", "content": user})
        if i < len(answers):
            msgs.append({"role": "assistant", "content": answers[i]})
    return msgs


def encode(tokenizer: Any, messages: list[dict[str, str]], use_chat_template: bool) -> torch.Tensor:
    """Token ids of a conversation, ending where the assistant's answer starts."""
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        text = "\n\n".join(m["content"] for m in messages if m["role"] != "system") + "\n\n"
        ids = tokenizer(text)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)
