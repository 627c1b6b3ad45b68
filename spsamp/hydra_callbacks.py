"""Hydra callbacks (``conf/hydra/default.yaml``) that turn whole-launch failures into one line and an exit code.

- :class:`OutputDirCheck`: the run or sweep dir must be creatable before Hydra makes it — else one
  line naming the setting and exit 2 (instead of Hydra's ``NotADirectoryError`` traceback).
- :class:`FailedSweepCheck`: when a multirun ends and *every* row its jobs wrote in this launch
  failed, say so and exit 1 (a sweep whose jobs all failed must not look like a success). Rows are
  read back from the records, so it works the same for jobs run here and on SLURM nodes.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

log = logging.getLogger("spsamp")


def _check_creatable(path: str, key: str) -> None:
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        sys.stderr.write(f"{key}: cannot create {path} ({exc.strerror or type(exc).__name__}) — "
                         f"choose a writable directory, e.g. {key}=outputs/my_run\n")
        raise SystemExit(2) from None


class OutputDirCheck(Callback):
    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        _check_creatable(str(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        _check_creatable(str(config.hydra.sweep.dir), "hydra.sweep.dir")


def launch_outcome(sweep_dir: Path, since: str) -> tuple[int, int, int, str]:
    """(jobs, ok rows, error rows, first error) over rows started at or after ``since`` under ``sweep_dir``."""
    from spsamp.records.store import RECORDS_JSONL, read_jsonl, rows_by_key

    jobs, ok, errors, first = 0, 0, 0, ""
    for path in sorted(sweep_dir.rglob(RECORDS_JSONL)):
        rows = [r for r in rows_by_key(read_jsonl(path).rows).values() if (r.get("started_at") or "") >= since]
        if not rows:
            continue
        jobs += 1
        ok += sum(r.get("status") == "ok" for r in rows)
        err = [r for r in rows if r.get("status") == "error"]
        errors += len(err)
        if err and not first:
            first = f"{err[0].get('error_type')}: {str(err[0].get('error_message') or '').splitlines()[0][:200]}"
    return jobs, ok, errors, first


class FailedSweepCheck(Callback):
    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self.since = datetime.now(timezone.utc).isoformat()

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs, ok, errors, first = launch_outcome(sweep_dir, getattr(self, "since", ""))
        if errors and not ok:
            log.error("all %d jobs of this sweep failed: every row they decoded is an error (%d rows; first: %s) — "
                      "see error_type / error_message under %s, fix the cause and launch the same command again",
                      jobs, errors, first, sweep_dir)
            raise SystemExit(1)
        if errors:
            log.warning("%d of %d rows failed in this sweep (first: %s) — see the error rows in %s",
                        errors, errors + ok, first, sweep_dir)
