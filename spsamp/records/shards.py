"""A job split into shards: each shard decodes every ``dataset.shards``-th prompt in its own dir.

Layout: a job dir (``outputs/sweeps/<experiment>/<job overrides>``) holds its own records and, when
the job runs sharded (``dataset.shard=<i>``), one ``shard-<i>/`` subdir per shard with that shard's
records — one writer per dir, so shards can run at once (SLURM array tasks, two processes on two
cores). The job dir and its shard dirs are one job: a launch skips every row finished in any of
them (a job started unsharded and continued in shards, or resharded, decodes nothing twice), and
the analysis pools their rows as one comparison (:func:`job_root` is what it calls ``run_dir``).

Reading another dir's rows is read-only: a dir being written by a running shard is only read,
never repaired (its own writer repairs it when it opens it).
"""

from __future__ import annotations

import re
from pathlib import Path

from spsamp.records.store import read_rows

_SHARD_DIR = re.compile(r"shard-(\d+)")


def shard_dir_name(shard: int) -> str:
    """The subdir of a job dir that shard ``shard`` writes into."""
    return f"shard-{int(shard)}"


def job_root(directory: str | Path) -> Path:
    """The job dir a run dir belongs to: the parent of a shard dir, else the dir itself."""
    d = Path(directory)
    return d.parent if _SHARD_DIR.fullmatch(d.name) else d


def job_dirs(directory: str | Path) -> list[Path]:
    """The job dir of ``directory`` and every shard dir in it, in that order."""
    root = job_root(directory)
    shards = sorted((d for d in root.glob("shard-*") if d.is_dir() and _SHARD_DIR.fullmatch(d.name)),
                    key=lambda d: int(_SHARD_DIR.fullmatch(d.name).group(1)))  # type: ignore[union-attr]
    return [root, *shards]


def read_finished(directory: str | Path) -> dict[str, dict]:
    """The ``ok`` rows of one run dir by resume key, read without writing anything; a file that
    cannot be read counts as empty (:func:`~spsamp.records.store.read_rows`)."""
    rows = read_rows(Path(directory), skip_unreadable=True)
    return {k: r for k, r in rows.items() if r.get("status") == "ok"}


def finished_elsewhere(directory: str | Path) -> dict[str, dict]:
    """The ``ok`` rows of the other dirs of ``directory``'s job (:func:`job_dirs`, itself left out)."""
    here = Path(directory).resolve()
    out: dict[str, dict] = {}
    for d in job_dirs(directory):
        if d.resolve() != here:
            for key, row in read_finished(d).items():
                out.setdefault(key, row)
    return out
