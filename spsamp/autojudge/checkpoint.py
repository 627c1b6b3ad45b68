"""Judge checkpoints: tensors in safetensors, everything else in a JSON sidecar. Never pickled.

``<path>`` (safetensors: the scaler's mean and scale, the logistic regression's coefficients and
intercept, all float64) and ``<path>.json`` (model
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

import torch
from safetensors.torch import load_file, save_file

from spsamp.autojudge.judge import TENSORS, Judge
from spsamp.config import ConfigError
from spsamp.records.store import file_mode

FORMAT = "spsamp-autojudge/2"  # 2: scikit-learn judge (scaler.scale); /1 judges must be retrained


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
        "scaler": {"type": "sklearn StandardScaler", "mean": "scaler.mean", "scale": "scaler.scale", "dim": judge.dim},
        "classifier": {"type": "sklearn LogisticRegression(class_weight='balanced')", "coef": "linear.weight", "intercept": "linear.bias",
                       "C": judge.stats.get("C")},
        "thresholds": judge.thresholds,
        "threshold_quantiles": judge.stats.get("threshold_quantiles"),
        "val_auc": judge.stats.get("val_auc"),
        "cv_auc": judge.stats.get("cv_auc"),
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


def mined_path(path: str | Path) -> Path:
    path = Path(path).expanduser()
    return path.with_name(path.stem + ".mined.safetensors")


def save_mined(path: str | Path, x: torch.Tensor, y: torch.Tensor, prompt_ids: list[str], positions: list[int]) -> Path:
    """The mined samples (features, labels, prompt of each, answer position) beside the judge, so
    judges can be refitted — e.g. validation AUC against mining size — without mining again."""
    out = mined_path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    order = sorted(set(prompt_ids))
    index = torch.tensor([order.index(p) for p in prompt_ids], dtype=torch.long)
    tensors = {"features": x.detach().cpu().float().contiguous(), "labels": y.detach().cpu().double().contiguous(),
               "prompt_index": index, "position": torch.tensor(positions, dtype=torch.long)}
    save_file(tensors, str(out), metadata={"format": FORMAT, "prompt_ids": json.dumps(order)})
    return out


def load_mined(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(tensors, prompt ids indexed by ``prompt_index``) of :func:`save_mined`."""
    from safetensors import safe_open

    out = mined_path(path)
    with safe_open(str(out), framework="pt", device="cpu") as fh:
        ids = json.loads(fh.metadata()["prompt_ids"])
    return load_file(str(out), device="cpu"), ids


def load(path: str | Path) -> tuple[Judge, dict[str, Any]]:
    path = Path(path).expanduser()
    meta = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ConfigError(f"method.checkpoint: {path} is not an spsamp AutoJudge checkpoint of format {FORMAT!r} (it has {meta.get('format')!r}) — "
                          "delete it to mine and train again, or point method.checkpoint elsewhere")
    tensors = load_file(str(path), device="cpu")  # the judge moves them to the features' device when used
    missing = [k for k in TENSORS if k not in tensors]
    if missing:
        raise ConfigError(f"method.checkpoint: {path} lacks tensors {missing} — delete it to mine and train again")
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


__all__ = ["FORMAT", "check_compatible", "check_location", "exists", "load", "load_mined", "mined_path", "save", "save_mined", "sidecar_path", "tensor_digest"]
