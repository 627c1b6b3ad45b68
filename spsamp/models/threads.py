"""How many intra-op threads a run uses when ``hardware.num_threads`` is null.

torch's default is one thread per core. That is fastest on an idle machine and collapses on a
shared one: an OpenMP pool waits at every barrier for its slowest thread, so when another
process takes one of the cores each matmul waits for a descheduled thread. Measured on the
2-core machines this project runs on, beside one busy process: 2 threads took 15-50 s per
32-token SmolLM2 row, 1 thread 2.2 s.

The stated default (:func:`default_threads`):

- machines with 2 or fewer usable cores: **1 thread** (a second busy process is the normal case
  there, and one thread loses at most the second core; the pool can lose 10x);
- larger machines: the physical cores this process may run on, minus the cores the 1-minute load
  average says other work keeps busy (at least 1).

It is decided once per process (a sweep's later jobs would otherwise count the first job's own
load as contention). Set ``hardware.num_threads`` to override; every record's ``num_threads``
column says how many threads ran.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)


def usable_cpus() -> list[int]:
    """CPU ids this process may run on (its affinity mask; cgroup-pinned jobs see their share)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int]) -> int:
    """Distinct physical cores among ``cpus`` (SMT siblings count once); ``len(cpus)`` if unknown."""
    cores = set()
    for cpu in cpus:
        try:
            cores.add(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip())
        except OSError:
            return len(cpus)
    return len(cores) or len(cpus)


def choose_threads(cpus: int, physical: int, load: Optional[float]) -> tuple[int, str]:
    """The rule, from the machine's figures: (threads, why). ``load``: 1-minute load average of
    other work, None when unknown."""
    if cpus <= 2:
        return 1, f"{cpus} usable core(s): 1 thread (a pool over every core stalls when another process shares them)"
    busy = 0 if load is None else int(round(load))
    n = max(1, min(physical, cpus - busy))
    return n, f"{physical} physical of {cpus} usable cores, load average {load if load is not None else 'unknown'}: {n} threads"


@functools.lru_cache(maxsize=1)
def default_threads() -> tuple[int, str]:
    """:func:`choose_threads` on this machine, once per process."""
    cpus = usable_cpus()
    try:
        load: Optional[float] = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    return choose_threads(len(cpus), physical_cores(cpus), load)


def set_threads(num_threads: Optional[int]) -> int:
    """Set torch's intra-op threads: ``num_threads``, or :func:`default_threads` when None."""
    import torch

    if num_threads:
        n, why = num_threads, "hardware.num_threads"
    else:
        n, why = default_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    log.info("threads: %d (%s)", n, why)
    return n
