"""spsamp's one entrypoint: compose ``conf/`` with Hydra and run one decoding job per composition.

    python run.py                                  # default: baseline, SmolLM2, built-in prompts
    python run.py method=baseline model=tiny_random generation.max_new_tokens=64
    python run.py --cfg job                        # show the composed config
    python run.py -m generation.temperature=0,0.7  # a sweep
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from spsamp.config import ConfigError
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
    try:
        store = run_job(cfg, info)
    except ConfigError as exc:
        log.error("config error: %s", exc)
        sys.exit(2)
    except Exception:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # the failure is recorded as error rows; the other jobs of the sweep go on
            log.exception("job %s failed (recorded in %s)", info.job_num, info.output_dir)
            return
        raise
    ok = sum(r["status"] == "ok" for r in store.rows)
    log.info("%d/%d rows ok -> %s/records.parquet", ok, len(store.rows), info.output_dir)


if __name__ == "__main__":
    main()
