"""Sweep plumbing: stable, resumable sweep dirs (the SLURM launcher is in ``hydra_plugins/spsamp_launcher``).

A sweep launched as ``python run.py -m experiment=<name>`` writes into
``outputs/sweeps/<name>/<job overrides>``: the sweep dir is named after the experiment and each
job's subdir after its own overrides (``method=speculative,method.k=4``), so launching the same
sweep again lands every job in the dir that already holds its rows, and the runner skips the rows
that are ``ok`` (see :mod:`spsamp.runner`). A sweep without an experiment keeps a timestamped dir.

The resolvers are registered on import (``run.py`` and :mod:`spsamp.runner` import this module,
so SLURM/joblib workers that unpickle the task function register them too).
"""

from __future__ import annotations

import hashlib
import re
from typing import Optional

from omegaconf import OmegaConf

from spsamp.records.shards import shard_dir_name

# a job dir name stays well under the 255-byte file-name limit of common filesystems
_MAX_DIRNAME = 120
SHARD_KEYS = ("dataset.shard", "dataset.shards")  # where a job's rows go within it, not which job


def sweep_name(experiment: Optional[str], fallback: str) -> str:
    """The sweep dir's name: the experiment's, else ``fallback`` (a timestamp)."""
    return str(experiment) if experiment else fallback


def _items(override_dirname: str) -> list[str]:
    """``a=1,b={c:2,d:3}`` -> ``["a=1", "b={c:2,d:3}"]``: split at commas outside brackets and quotes."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(override_dirname):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(override_dirname[start:i])
            start = i + 1
    items.append(override_dirname[start:])
    return [x for x in items if x]


def job_dirname(override_dirname: Optional[str]) -> str:
    """A file-name-safe job dir from Hydra's ``override_dirname`` (``a=1,b=2``, sorted by Hydra).

    ``compare.*`` overrides are left out: adding or narrowing a comparison's arms from the command
    line lands in the same job dir, whose rows are kept apart by their arm (spsamp/comparison.py).
    ``dataset.shard=<i>`` / ``dataset.shards`` are left out of the name too: shard ``i`` writes into
    the job dir's ``shard-<i>/`` subdir (one writer per dir; the job dir and its shard dirs are one
    job, spsamp/records/shards.py).
    No overrides -> ``default``; ``/`` and other unsafe characters -> ``_``; names longer than
    120 characters keep a prefix plus a hash of the whole string so they stay unique.
    """
    items = [x for x in _items(override_dirname or "") if not x.lstrip("+~").startswith("compare.")]
    shard = [x.split("=", 1)[1] for x in items if x.lstrip("+~").split("=", 1)[0] == "dataset.shard"]
    kept = [x for x in items if x.lstrip("+~").split("=", 1)[0] not in SHARD_KEYS]
    override_dirname = ",".join(kept)
    name = override_dirname or "default"
    safe = re.sub(r"[^A-Za-z0-9=,._+\-\[\]]", "_", name)
    if len(safe) > _MAX_DIRNAME or safe != name:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        safe = f"{safe[: _MAX_DIRNAME - 11]}_{digest}" if len(safe) > _MAX_DIRNAME else f"{safe}_{digest}"
    if shard and shard[0].isdigit():  # anything else fails validation before a row is written
        return f"{safe}/{shard_dir_name(int(shard[0]))}"
    return safe


def run_label(method: str, arms: object) -> str:
    """A single run's dir suffix: its method, or ``compare`` for a job of several arms."""
    return "compare" if arms else str(method)


OmegaConf.register_new_resolver("spsamp_sweep_name", sweep_name, replace=True)
OmegaConf.register_new_resolver("spsamp_run_label", run_label, replace=True)
OmegaConf.register_new_resolver("spsamp_job_dirname", job_dirname, replace=True)
