"""spsamp's one entrypoint: compose ``conf/`` with Hydra and run one decoding job per composition.

    python run.py                                  # default: baseline, SmolLM2, built-in prompts
    python run.py method=baseline model=tiny_random generation.max_new_tokens=64
    python run.py --cfg job                        # show the composed config
    python run.py -m generation.temperature=0,0.7  # a sweep

Exit status: 0 when the job finished and at least one of the rows it decoded is ``ok`` (failed
rows are recorded and logged); 1 when it could not run (e.g. a model that will not load) or every
row it decoded failed — for a sweep, when every row of every job failed; 2 for bad input (config,
dataset, output dir), reported as one line before any model loads.
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from spsamp.config import ConfigError
from spsamp.records import RecordsError
from spsamp.runner import JobInfo, run_job

log = logging.getLogger("spsamp")


def job_info() -> JobInfo:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return JobInfo(
        output_dir=hc.runtime.output_dir,
        overrides=list(hc.overrides.task),
        job_num=hc.job.num if multirun else None,
        sweep_dir=hc.sweep.dir if multirun else None,
    )


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    info = job_info()
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        store = run_job(cfg, info)
    except ConfigError as exc:
        log.error("config error: %s", exc)
        sys.exit(2)
    except RecordsError as exc:
        log.error("records: %s", exc)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - the job could not run
        recorded = getattr(exc, "error_rows", None)
        if recorded is None:
            log.exception("job %s failed", "-" if info.job_num is None else info.job_num)  # unexpected: the traceback helps
        else:  # expected kind (a model that will not load...): one line, the traceback is in the rows
            log.error("job %s failed: %s: %s (%d error rows in %s/records.jsonl; the traceback is in their `traceback` column)",
                      "-" if info.job_num is None else info.job_num, type(exc).__name__,
                      str(exc).splitlines()[0] if str(exc) else "", recorded, info.output_dir)
        if multirun:
            return  # the other jobs of the sweep go on; FailedSweepCheck exits 1 if all of them fail
        sys.exit(1)
    ok, errors = store.added.get("ok", 0), store.added.get("error", 0)
    if store.rows:
        log.info("%d/%d rows ok -> %s/records.parquet", sum(r["status"] == "ok" for r in store.rows), len(store.rows), info.output_dir)
    else:  # e.g. a shard of a dataset with fewer prompts than shards
        log.warning("no rows written to %s: no prompt is this job's (dataset.max_samples / dataset.shard), or each was "
                    "finished in another dir of its job", info.output_dir)
    if errors and not ok:
        log.error("all %d rows this job decoded failed — see error_type / error_message in %s/records.jsonl", errors, info.output_dir)
        if not multirun:
            sys.exit(1)
    elif errors:
        log.warning("%d of %d rows this job decoded failed — see error_type / error_message in %s/records.jsonl",
                    errors, errors + ok, info.output_dir)


if __name__ == "__main__":
    main()
