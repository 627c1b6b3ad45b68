"""Machine and software facts stamped on every record (so results are never compared across hosts blindly)."""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any, Optional

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


# the widest matrix instructions a CPU offers, best first: one virtual CPU name ("Intel(R) Xeon(R)
# Processor") covers hosts with and without AMX, whose kernels, verify costs and best k differ
ISA_FLAGS = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 bf16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


def cpu_model(cpuinfo: Optional[str] = None) -> str:
    """The CPU's model name and its widest matrix instructions, e.g. ``Intel(R) Xeon(R) Processor (AMX)``
    (``cpuinfo``: the text of ``/proc/cpuinfo``, read when not given)."""
    name, flags = None, set()
    try:
        for line in (Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo).splitlines():
            if line.startswith("model name") and name is None:
                name = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")) and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    isa = next((label for flag, label in ISA_FLAGS if flag in flags), None)
    return f"{name} ({isa})" if isa else name


def _visible_gpu_uuids() -> set[str] | None:
    """UUIDs (lower case, no ``GPU-`` prefix) of the GPUs this process sees, or None if unknown."""
    uuids = set()
    for i in range(torch.cuda.device_count()):
        uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)
        if uuid is None:
            return None
        uuids.add(str(uuid).lower().removeprefix("gpu-"))
    return uuids


def display_active() -> bool | None:
    """Whether a display is active on a GPU this process uses (``nvidia-smi`` ``display_active``).

    False when no CUDA GPU is visible (nothing to disturb GPU timings); None when a GPU is visible
    but ``nvidia-smi`` cannot tell. X11/Wayland variables are ignored: an ssh session with X
    forwarding does not put a display on the GPU, and a headless server's GPU can drive one.
    """
    if not torch.cuda.is_available():
        return False
    out = _run(["nvidia-smi", "--query-gpu=uuid,display_active", "--format=csv,noheader"])
    if not out:
        return None
    rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
    visible = _visible_gpu_uuids()
    mine = [r for r in rows if visible and r[0].lower().removeprefix("gpu-") in visible] or rows
    return any(len(r) > 1 and r[1].lower() == "enabled" for r in mine)


def check_machine(run: Any) -> None:
    """Fail fast, before any model loads, when the machine cannot give the runs asked for.

    CPU kernels this torch build lacks; a CUDA device that is not there; ``hardware.require_headless`` with a display active on the
    GPU (the display server shares the GPU's compute and memory clocks, so timings get noisy) or
    with a GPU whose display state cannot be read. One :class:`ConfigError` line each.
    """
    from spsamp.config import ConfigError
    from spsamp.models.kernels import check_cpu_linear

    hw = run.hardware
    check_cpu_linear(hw.cpu_linear)  # this torch build has the kernels asked for
    devices = {hw.device} | {s.device for s in (run.model.target, run.model.draft) if s is not None and s.device}
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        raise ConfigError(
            f"hardware.device: cuda asked for but torch {torch.__version__} sees no CUDA device "
            "— use hardware=cpu, or a CUDA build of torch on a GPU machine (Dockerfile.gpu)"
        )
    if not hw.require_headless:
        return
    state = display_active()
    if state is None:
        raise ConfigError(
            "hardware.require_headless: a GPU is visible but nvidia-smi cannot report display_active "
            "— install the NVIDIA utilities or set hardware.require_headless=false"
        )
    if state:
        raise ConfigError(
            "hardware.require_headless: a display is active on the GPU (nvidia-smi display_active=Enabled) "
            "— run on a headless GPU, or set hardware.require_headless=false to time anyway"
        )


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
