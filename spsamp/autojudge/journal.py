"""Resumable mining: every mined prompt is written to disk as soon as it is labelled.

Mining a real pair costs minutes per prompt on a CPU, so a judge over a hundred prompts spans
sessions. The journal keeps one safetensors file per prompt (the samples' hidden states, labels,
positions and draft tokens, plus the prompt's answer length, continuation tokens and seconds in its
metadata) under ``<root>/<recipe key>/``. The recipe key hashes everything that changes a label or a
feature — both models' specs, the importance check and its settings, the answer length, the
schedule, the feature mode, the chat settings — so a changed recipe never reads another's samples.
The number of prompts is *not* in the key: mining 82 prompts after 40 re-reads the first 40 (the
prompt order is a seeded shuffle, the same prefix every time), and a killed job resumes where it
stopped. A prompt file also carries its text hash: an edited prompt is mined again.

Files are written to a temp name and renamed, so a kill mid-write leaves no half file; a file that
cannot be read (truncated by a crash of the disk, say) is logged, moved aside as ``.damaged`` and
mined again. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from spsamp.records.store import atomic_write

log = logging.getLogger(__name__)

FORMAT = "spsamp-mining-journal/1"

# (position, draft_token, label, h_p, h_q): one labelled mismatch, as the miners return it
Sample = tuple[int, int, int, Optional[torch.Tensor], torch.Tensor]


@dataclass
class PromptEntry:
    """One prompt's mined samples and the cost of mining them."""

    samples: list[Sample]
    answer_tokens: int
    decoded_tokens: int
    seconds: float


def prompt_sha(text: str) -> str:
    """Short hash of a prompt's text (journal file names; the checkpoint's proof of disjointness)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def recipe_key(recipe: dict[str, Any]) -> str:
    """A stable short hash of a JSON-able recipe (key order does not matter)."""
    blob = json.dumps(recipe, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


class MiningJournal:
    """Per-prompt mined samples under ``root/<recipe key>/`` (module doc)."""

    def __init__(self, root: str | Path, recipe: dict[str, Any]):
        self.recipe = recipe
        self.dir = Path(root).expanduser() / recipe_key(recipe)

    def _path(self, prompt_id: str, sha: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", prompt_id)[:80]
        return self.dir / f"{safe}-{sha}.safetensors"

    def get(self, prompt_id: str, sha: str) -> Optional[PromptEntry]:
        path = self._path(prompt_id, sha)
        if not path.exists():
            return None
        try:
            got_id, entry = read_entry(path)
            if got_id != prompt_id:
                raise ValueError(f"prompt {got_id!r}")
            return entry
        except Exception as exc:  # noqa: BLE001 — any unreadable file is mined again, never trusted
            damaged = path.with_name(path.name + ".damaged")
            log.warning("mining journal: %s is unreadable (%s); kept as %s, mining that prompt again", path, exc, damaged.name)
            os.replace(path, damaged)
            return None

    def entries(self) -> Iterator[tuple[str, PromptEntry]]:
        """Every readable prompt in this journal as ``(prompt id, entry)``, in file-name order."""
        yield from read_dir(self.dir)

    def put(self, prompt_id: str, sha: str, entry: PromptEntry) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        recipe_file = self.dir / "recipe.json"
        if not recipe_file.exists():
            recipe_file.write_text(json.dumps(self.recipe, indent=1, sort_keys=True, default=str), encoding="utf-8")
        s = entry.samples
        tensors: dict[str, torch.Tensor] = {
            "position": torch.tensor([x[0] for x in s], dtype=torch.long),
            "draft_token": torch.tensor([x[1] for x in s], dtype=torch.long),
            "label": torch.tensor([x[2] for x in s], dtype=torch.long),
        }
        if s:
            tensors["h_q"] = torch.stack([x[4].detach().cpu() for x in s]).contiguous()
            if s[0][3] is not None:
                tensors["h_p"] = torch.stack([x[3].detach().cpu() for x in s]).contiguous()  # type: ignore[union-attr]
        meta = {"format": FORMAT, "prompt_id": prompt_id, "prompt_sha": sha, "samples": str(len(s)),
                "answer_tokens": str(entry.answer_tokens), "decoded_tokens": str(entry.decoded_tokens), "seconds": repr(entry.seconds)}
        path = self._path(prompt_id, sha)
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
        return path


def read_entry(path: Path) -> tuple[str, PromptEntry]:
    """``(prompt id, entry)`` of one journal file; raises on any file it cannot trust."""
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        meta = fh.metadata() or {}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    if meta.get("format") != FORMAT:
        raise ValueError(f"format {meta.get('format')!r}")
    n = int(meta["samples"])
    h_p = tensors.get("h_p")
    samples: list[Sample] = [
        (int(tensors["position"][i]), int(tensors["draft_token"][i]), int(tensors["label"][i]),
         None if h_p is None else h_p[i], tensors["h_q"][i])
        for i in range(n)
    ]
    return meta["prompt_id"], PromptEntry(samples, int(meta["answer_tokens"]), int(meta["decoded_tokens"]), float(meta["seconds"]))


def read_dir(directory: str | Path) -> Iterator[tuple[str, PromptEntry]]:
    """Every readable prompt file of one recipe directory (unreadable ones are logged and skipped)."""
    for path in sorted(Path(directory).expanduser().glob("*.safetensors")):
        try:
            yield read_entry(path)
        except Exception as exc:  # noqa: BLE001 — a reader only reports; the miner moves damaged files aside
            log.warning("mining journal: skipping unreadable %s (%s)", path, exc)
