"""Records written before the dependency lock (transformers 5.23.0, the previous schema) still load and validate.

``tests/fixtures/records_pre_lock/`` holds real record files written by spsamp at commit 0457eea with
transformers 5.23.0 (``model=tiny_random``, baseline and speculative, 3 prompts, one injected error
row); see its README. New columns added since must come back as nulls, not break the load.
"""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT, run_py
from spsamp.analysis import load_records

OLD = ROOT / "tests" / "fixtures" / "records_pre_lock"


def test_old_records_load_with_their_own_library_versions():
    df = load_records(OLD)
    assert len(df) == 6 and set(df.method) == {"baseline", "speculative"}
    assert set(df.transformers_version) == {"5.23.0"}  # written by an older transformers than the lock's
    assert (df.status == "ok").sum() == 5 and (df.status == "error").sum() == 1
    ok = df[df.status == "ok"]
    assert ok.generated_ids.map(len).gt(0).all() and ok.tokens_per_sec.notna().all()


@pytest.mark.parametrize("method", ["baseline", "speculative"])
def test_old_records_validate(method):
    proc = subprocess.run([sys.executable, "-m", "spsamp.records", "validate", str(OLD / method)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_old_and_new_records_load_together(tmp_path, tiny_overrides):
    """Old rows beside rows written today (today's schema, today's transformers) load as one frame."""
    run_py([*tiny_overrides, "method=baseline", "dataset.max_samples=1", "generation.max_new_tokens=4",
            f"hydra.run.dir={tmp_path}/new"])
    df = load_records([OLD / "baseline", tmp_path / "new"])
    assert len(df) == 4 and (df.status == "ok").all()
    assert df.transformers_version.nunique() == 2 and "5.23.0" in set(df.transformers_version)
