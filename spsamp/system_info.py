"""Machine and software facts stamped on every record (so results are never compared across hosts blindly)."""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch
import transformers

import spsamp

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def display_active() -> bool:
    """True when a display server is attached: X11/Wayland in the environment, or a GPU driving a display."""
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return True
    if torch.cuda.is_available():
        out = _run(["nvidia-smi", "--query-gpu=display_active", "--format=csv,noheader"])
        return bool(out and "enabled" in out.lower())
    return False


@functools.lru_cache(maxsize=1)
def system_info() -> dict[str, Any]:
    gpu = torch.cuda.is_available()
    return {
        "git_sha": _run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT),
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "gpu_name": torch.cuda.get_device_name(0) if gpu else None,
        "gpu_driver": _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]) if gpu else None,
        "cuda_runtime": torch.version.cuda if gpu else None,
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "spsamp_version": spsamp.__version__,
        "display_active": display_active(),
    }
