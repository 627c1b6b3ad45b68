"""Judge checkpoints: tensors in safetensors, everything else in a JSON sidecar. Never pickled.

``<path>`` (safetensors: scaler mean/std and the classifier weights) and ``<path>.json`` (model
names, hidden sizes, feature spec, judge kind, candidate thresholds, training statistics, mining
settings and the prompt split). A checkpoint is reused only when it was made for the same target
and draft (names and hidden sizes) and the same feature mode; anything else is refused with one
line that says how to fix it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from spsamp.autojudge.judge import Judge
from spsamp.config import ConfigError
from spsamp.records.store import file_mode

FORMAT = "spsamp-autojudge/1"


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def exists(path: str | Path) -> bool:
    return Path(path).exists() and sidecar_path(path).exists()


def save(path: str | Path, judge: Judge, meta: dict[str, Any]) -> dict[str, Any]:
    """Write both files atomically (temp file + rename), the sidecar last: a half-written pair is
    never mistaken for a checkpoint. Returns the sidecar document."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    side = sidecar_path(path)
    doc = {
        "format": FORMAT,
        **meta,
        "judge": {"kind": judge.kind, "tensors": sorted(judge.tensors), "dim": judge.dim},
        "scaler": {"type": "standard", "mean": "scaler.mean", "std": "scaler.std", "dim": judge.dim},
        "thresholds": judge.thresholds,
        "training": judge.stats,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp_side = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in judge.tensors.items()}, str(tmp), metadata={"format": FORMAT})
    os.chmod(tmp, file_mode())  # safetensors creates 0600: respect the umask like the sidecar does
    tmp_side.write_text(json.dumps(doc, indent=1, sort_keys=True, default=str), encoding="utf-8")
    if side.exists():
        side.unlink()
    os.replace(tmp, path)
    os.replace(tmp_side, side)
    return json.loads(side.read_text(encoding="utf-8"))


def load(path: str | Path) -> tuple[Judge, dict[str, Any]]:
    path = Path(path).expanduser()
    meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ConfigError(f"method.checkpoint: {path} is not an spsamp AutoJudge checkpoint (format {meta.get('format')!r}) — point method.checkpoint elsewhere")
    tensors = load_file(str(path), device="cpu")  # the judge runs on the CPU; features are moved to it
    judge = Judge(kind=meta["judge"]["kind"], tensors=tensors, stats=meta.get("training", {}), thresholds=list(meta.get("thresholds", [])))
    return judge, meta


def check_location(path: str | Path) -> None:
    """Refuse, in one line and before any model loads or mining starts, a ``method.checkpoint`` that
    could never be used: half a pair (a checkpoint without its sidecar or the reverse), an
    unreadable pair (truncated tensors, broken JSON), or — when there is nothing to reuse yet — a
    place the trained judge could not be written to."""
    path = Path(path).expanduser()
    side = sidecar_path(path)
    fix = f"delete {path} and {side} to mine and train a new judge, or set method.checkpoint to a new path"
    if path.is_dir():
        raise ConfigError(f"method.checkpoint: {path} is a directory — name a file in it, e.g. method.checkpoint={path}/judge.safetensors")
    if path.exists() != side.exists():
        have, lost = (path, side) if path.exists() else (side, path)
        raise ConfigError(f"method.checkpoint: {have} exists but {lost.name} is missing (half a checkpoint) — {fix}")
    if path.exists():
        try:
            load(path)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - a truncated file or a broken sidecar: any failure to read
            why = str(exc).splitlines()[0][:160] if str(exc) else ""
            raise ConfigError(f"method.checkpoint: {path} is unreadable ({type(exc).__name__}: {why}) — {fix}") from None
        return
    # nothing to reuse: the judge will be trained and saved here, so the place must take a file now
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    try:
        if not parent.is_dir():
            raise NotADirectoryError(f"{parent} is a file")
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise ConfigError(f"method.checkpoint: cannot write {path} ({exc.strerror or exc}) — point method.checkpoint "
                          "to a writable place, e.g. method.checkpoint=outputs/judges/judge.safetensors") from None


def check_compatible(meta: dict[str, Any], expected: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint made for other models, hidden sizes or feature mode (one clear line)."""
    for key in ("target_model", "draft_model", "target_hidden", "draft_hidden", "feature_mode", "feature_dim"):
        if key == "draft_model" and expected.get("feature_mode") == "target" and meta.get("feature_mode") == "target":
            continue  # target-only features do not depend on the draft
        if meta.get(key) != expected.get(key):
            raise ConfigError(
                f"method.checkpoint: {path} was trained for {key}={meta.get(key)!r}, this run has {expected.get(key)!r} — "
                "delete it, or set method.checkpoint to a new path to mine and train a judge for these models"
            )


def tensor_digest(judge: Judge) -> str:
    """Short content hash of the judge's tensors (records which judge decided)."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(judge.tensors):
        h.update(k.encode())
        h.update(judge.tensors[k].detach().cpu().double().numpy().tobytes())
    return h.hexdigest()[:12]


__all__ = ["FORMAT", "check_compatible", "check_location", "exists", "load", "save", "sidecar_path", "tensor_digest"]
