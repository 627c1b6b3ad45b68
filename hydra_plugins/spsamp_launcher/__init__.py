"""spsamp's Hydra launcher plugin: ``submitit_slurm`` that waits for every job and fails loudly.

Used by ``conf/hydra/launcher/slurm.yaml`` (``python run.py -m experiment=<name> hydra/launcher=slurm``).
Hydra only instantiates launchers from the ``hydra_plugins`` namespace package, hence this location
(packaged by pyproject.toml next to ``spsamp``). Needs the ``sweeps`` extra (``hydra-submitit-launcher``)
and SLURM accounting (``sacct``).
"""

from __future__ import annotations

import getpass
import logging
import subprocess
import time
from typing import Any, Optional, Sequence

from omegaconf import OmegaConf

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _Base
except ImportError:  # no `sweeps` extra: Hydra imports every plugin module at start, so stay importable
    _Base = object

import spsamp.sweeps  # noqa: F401 - registers the sweep-dir resolvers in SLURM workers too

log = logging.getLogger(__name__)


class SweepJobsFailed(RuntimeError):
    """Some jobs of a cluster sweep ended without a result (cancelled, timed out, node failure)."""


def squeue_ids() -> Optional[set[str]]:
    """This user's queued/running job ids, array tasks one by one (``123_4``); None if squeue fails."""
    try:
        cmd = ["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(out.stdout.split()) if out.returncode == 0 else None


class SlurmLauncher(_Base):  # type: ignore[misc,valid-type]
    """``submitit_slurm`` that waits for every job, then names each one that died outside Python.

    The stock launcher stops at the first job without a result, and waits forever for a job that
    ``sacct`` does not know: an array task cancelled while still pending never gets an accounting
    record, so submitit sees it as ``UNKNOWN`` (not finished) indefinitely. This one polls all jobs;
    a job that is neither done (result file or a final ``sacct`` state) nor in ``squeue`` on two
    checks ``vanish_after_s`` apart is dead. When all are settled it raises one
    :class:`SweepJobsFailed` naming the id, state and overrides of each dead job; the others have
    finished and kept their rows. Jobs that raise inside Python never get here: ``run.py``
    records them as error rows.
    """

    poll_s = 1.0            # result-file checks (cheap: a stat per job)
    squeue_every_s = 5.0    # one squeue call for all jobs
    vanish_after_s = 10.0   # gone from squeue this long, unknown to sacct -> dead
    results_timeout_s = 2   # for a job SLURM ended otherwise (submitit waits 15 s per dead job by default)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        import submitit
        from hydra.core.singleton import Singleton
        from hydra.core.utils import filter_overrides
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        assert self.config is not None
        # the executor exactly as the stock launcher builds it
        init_keys = {"max_num_timeout", "submitit_folder"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR, folder=self.params["submitit_folder"], slurm_max_num_timeout=self.params["max_num_timeout"]
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in self.params.items() if k not in init_keys}
        )
        sweep_dir = str(self.config.hydra.sweep.dir)
        log.info("SLURM sweep of %d jobs -> %s", len(job_overrides), sweep_dir)
        params = []
        for i, overrides in enumerate(job_overrides):
            num = initial_job_idx + i
            log.info("\t#%d : %s", num, " ".join(filter_overrides(overrides)))
            params.append((list(overrides), "hydra.sweep.dir", num, f"job_id_for_{num}", Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*params))
        log.info("submitted SLURM job(s) %s", ", ".join(j.job_id for j in jobs))

        outcome = self._wait(jobs)
        dead = [
            f"job {job.job_id} ({outcome[i]}): {' '.join(filter_overrides(job_overrides[i])) or 'no overrides'}"
            for i, job in enumerate(jobs)
            if not isinstance(outcome[i], tuple)
        ]
        if dead:
            raise SweepJobsFailed(
                f"{len(dead)} of {len(jobs)} SLURM jobs ended without a result — "
                + "; ".join(dead)
                + f". Finished jobs kept their rows under {sweep_dir}; launch the same command again to redo only what is"
                + f" missing (SLURM logs: {self.params['submitit_folder'].replace('%j', '<job id>')})"
            )
        return [outcome[i][0] for i in range(len(jobs))]

    def _wait(self, jobs: list[Any]) -> dict[int, Any]:
        """Job index -> ``(result,)`` or the reason it has none, once every job has settled."""
        from submitit.core.utils import UncompletedJobError

        outcome: dict[int, Any] = {}
        missing_since: dict[int, float] = {}
        next_squeue = time.monotonic() + self.squeue_every_s
        while len(outcome) < len(jobs):
            for i, job in enumerate(jobs):
                if i in outcome or not job.done():
                    continue
                # a COMPLETED job's result file may lag on a network filesystem; a dead job's never comes
                job._results_timeout_s = 30 if job.state.startswith("COMPLETED") else self.results_timeout_s
                try:
                    outcome[i] = (job.results()[0],)
                except UncompletedJobError:
                    outcome[i] = f"state {job.state}"
                    log.error("SLURM job %s ended without a result (state %s)", job.job_id, job.state)
            now = time.monotonic()
            if len(outcome) < len(jobs) and now >= next_squeue:
                next_squeue = now + self.squeue_every_s
                queued = squeue_ids()
                for i, job in enumerate(jobs):
                    if i in outcome or queued is None or job.job_id in queued:
                        missing_since.pop(i, None)
                        continue
                    first = missing_since.setdefault(i, now)
                    if now - first >= self.vanish_after_s and not job.done(force_check=True):
                        outcome[i] = "gone from squeue and unknown to sacct: cancelled while pending?"
                        log.error("SLURM job %s is %s", job.job_id, outcome[i])
            if len(outcome) < len(jobs):
                time.sleep(self.poll_s)
        return outcome
