"""Sweeps through a real SLURM (the single-node cluster of scripts/slurm_local.sh).

`scripts/test.sh` (CI) starts it in the background when it runs as root with apt-get, and these tests
wait for that start; run without it, they start it themselves in that case too, and skip, saying why,
when no SLURM can be had.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, run_py

SCRIPT = ROOT / "scripts" / "slurm_local.sh"


@pytest.fixture(scope="module")
def slurm():
    """A SLURM whose node takes jobs (started here if need be, and then stopped), or a skip saying why."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the sweeps extra (hydra-submitit-launcher)")
    starting = os.environ.get("SPSAMP_SLURM_STARTING")
    if starting:  # scripts/test.sh started it in the background (and stops it afterwards)
        rc = _wait_for_background_start(Path(starting))
        if rc != 0:
            log = (Path(starting) / "log").read_text(errors="replace").strip().splitlines()
            pytest.skip(f"scripts/slurm_local.sh start (begun by scripts/test.sh) failed: {log[-1:] or rc}")
    if subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode == 0:
        yield
        return
    if shutil.which("sinfo") and shutil.which("sacct"):
        state = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True).stdout.split()
        if state and state[0].startswith(("idle", "mix", "alloc")):
            yield  # a SLURM not run by our script (e.g. a real cluster's login node)
            return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no SLURM here: run `sudo scripts/slurm_local.sh start` (Debian/Ubuntu, needs root and apt-get)")
    proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.skip(f"scripts/slurm_local.sh start failed: {proc.stderr.strip().splitlines()[-1:]}")
    yield
    subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120)


def _wait_for_background_start(report: Path, timeout: float = 900.0) -> int:
    """The exit status of the start scripts/test.sh runs in the background (it writes ``rc`` when done)."""
    deadline = time.monotonic() + timeout
    while not (report / "rc").exists():
        if time.monotonic() > deadline:
            pytest.fail(f"the background SLURM start did not end within {timeout:.0f} s (log: {report / 'log'})")
        time.sleep(0.5)
    return int((report / "rc").read_text().strip() or 1)


def rows(sweep) -> pd.DataFrame:
    files = sorted(sweep.glob("*/records.parquet"))
    return pd.concat([pd.read_parquet(f).assign(job_dir=f.parent.name) for f in files], ignore_index=True)


def sacct_states(array_id: str) -> dict[str, str]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", array_id, "-o", "JobID,State"], capture_output=True, text=True)
    return dict(line.split("|", 1) for line in out.stdout.split())


def test_local_slurm_script_is_idempotent(slurm):
    if subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode != 0:
        pytest.skip("this SLURM is not run by scripts/slurm_local.sh")
    if os.geteuid() != 0:
        pytest.skip("start needs root")
    again = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "already running" in again.stderr


@pytest.mark.slow
def test_smoke_sweep_through_slurm_records_job_ids(slurm, tmp_path):
    run_py(["-m", "experiment=smoke", "hydra/launcher=slurm", f"paths.output_dir={tmp_path}"], timeout=600)
    df = rows(tmp_path / "sweeps" / "smoke")
    assert len(df) == 6 and (df.status == "ok").all() and df.resume_key.is_unique
    assert df.slurm_job_id.notna().all() and df.slurm_array_job_id.nunique() == 1
    assert sorted(df.groupby("job_dir").slurm_array_task_id.first().astype(int)) == [0, 1]
    assert set(df.job_num) == {0, 1}
    array_id = df.slurm_array_job_id.iloc[0]
    want = {f"{array_id}_0": "COMPLETED", f"{array_id}_1": "COMPLETED"}
    for _ in range(120):  # the result file lands a moment before the task's end reaches accounting
        if sacct_states(array_id) == want:
            break
        time.sleep(0.25)
    assert sacct_states(array_id) == want


@pytest.mark.slow
def test_scancel_ends_the_sweep_with_a_clear_error_and_relaunch_finishes_it(slurm, tmp_path):
    # 4 jobs, 2 at a time: cancel task 0 while it runs and task 2 while it is still pending (an array
    # task cancelled while pending never reaches sacct: the stock launcher would wait forever)
    name = f"spsamp-test-{uuid.uuid4().hex[:8]}"
    args = ["-m", "experiment=smoke", "generation.seed=0,1", f"paths.output_dir={tmp_path}"]
    slurm_args = ["hydra/launcher=slurm", "hydra.launcher.array_parallelism=2", f"hydra.launcher.name={name}"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args, *slurm_args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, "the sweep ended before a job could be cancelled"
            assert time.monotonic() < deadline, "task 0 never ran while task 2 waited"
            queue = subprocess.run(["squeue", "-h", "-r", "-n", name, "-o", "%i %T"], capture_output=True, text=True).stdout
            state = dict(line.split() for line in queue.splitlines())
            array_id = next(iter(state), "_").split("_")[0]
            if state.get(f"{array_id}_0") == "RUNNING" and state.get(f"{array_id}_2") == "PENDING":
                break
            time.sleep(0.2)
        subprocess.run(["scancel", f"{array_id}_0", f"{array_id}_2"], check=True)
        out, _ = proc.communicate(timeout=240)  # the guard: a hang fails here
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["scancel", "-n", name])
    assert proc.returncode != 0
    assert "2 of 4 SLURM jobs ended without a result" in out
    assert f"job {array_id}_0 (state CANCELLED" in out and f"job {array_id}_2 (gone from squeue" in out

    sweep = tmp_path / "sweeps" / "smoke"
    done = rows(sweep)
    tasks = done.slurm_array_task_id.astype(int)
    assert (tasks.isin([1, 3]).sum() == 6) and set(tasks) <= {0, 1, 3} and (done.status == "ok").all()
    # launching the same sweep again (here with the basic launcher) redoes only what is missing
    run_py(args, timeout=600)
    final = rows(sweep)
    assert len(final) == 12 and final.resume_key.is_unique and (final.status == "ok").all()
    kept = final[final.resume_key.isin(done.resume_key)]
    assert len(kept) == len(done) and kept.slurm_job_id.notna().all()
    assert set(kept.run_id) == set(done.run_id)
    assert final[~final.resume_key.isin(done.resume_key)].slurm_job_id.isna().all()


@pytest.mark.slow
def test_a_comparison_job_through_slurm_gets_a_paired_speedup_for_every_arm(slurm, tmp_path):
    from spsamp.analysis.load import load_records
    from spsamp.analysis.paired import paired_speedups

    # two comparison jobs (seeds): each decodes both arms on whichever node SLURM gives it
    run_py(["-m", "experiment=smoke_compare", "generation.seed=0,1", "hydra/launcher=slurm", f"paths.output_dir={tmp_path}"], timeout=600)
    sweep = tmp_path / "sweeps" / "smoke_compare"
    df = rows(sweep)
    assert len(df) == 12 and (df.status == "ok").all() and df.slurm_job_id.notna().all()
    assert df.groupby("job_dir").arm.nunique().tolist() == [2, 2]
    sp = paired_speedups(load_records(sweep, metrics=False))
    fast = sp[sp.arm == "speculative"]
    assert len(fast) == 2 and fast.speedup.notna().all() and (fast.n_prompts == 3).all()
    assert fast.hardware.str.len().gt(0).all()


def test_a_sharded_comparison_through_slurm_is_one_comparison(slurm, tmp_path):
    """dataset.shard as a sweep axis: one array task per shard, each in its own dir, read as one job."""
    from spsamp.analysis.load import load_records
    from spsamp.analysis.paired import paired_speedups

    run_py(["-m", "experiment=smoke_compare", "dataset.shards=2", "dataset.shard=0,1", "hydra/launcher=slurm",
            f"paths.output_dir={tmp_path}"], timeout=600)
    job = tmp_path / "sweeps" / "smoke_compare" / "default"
    shards = {d.name: pd.read_parquet(d / "records.parquet") for d in (job / "shard-0", job / "shard-1")}
    assert {k: len(v) for k, v in shards.items()} == {"shard-0": 4, "shard-1": 2}  # prompts 0, 2 | 1; both arms
    assert shards["shard-0"].slurm_array_task_id.nunique() == 1 and shards["shard-0"].slurm_job_id.notna().all()
    assert set(shards["shard-0"].slurm_job_id).isdisjoint(shards["shard-1"].slurm_job_id)
    sp = paired_speedups(load_records(job.parent, metrics=False))
    fast = sp[sp.arm == "speculative"]
    assert len(fast) == 1 and fast.n_prompts.iloc[0] == 3 and fast.comparison.iloc[0] == "smoke_compare/default"
