"""Run untrusted (model-written) Python in a contained child process — never in the spsamp process.

Containment, outermost first (each layer holds even where an inner one is bypassed; which kernel
layers a machine allows is in :func:`containment`, the table in docs/quality.md says which layer
stops what, as root and as a normal user):

- **Separate process**: ``python -I`` (isolated mode) in its own session and process group, with a
  *minimal environment* (PATH, LANG, HOME=TMPDIR=the sandbox dir: no inherited secrets, tokens or
  proxy settings) and a fresh temp dir as working dir, removed afterwards.
- **Namespaces** (:mod:`spsamp.sandbox.isolation`): a new network namespace (no reachable
  address, 127.0.0.1 included), mount and IPC namespace — as root directly, as a normal user inside
  an unprivileged user namespace where the kernel allows one. In the mount namespace every mount
  is read-only but a size- and inode-limited tmpfs on the sandbox dir.
- **Unprivileged user when root**: the child drops to ``nobody`` (``SANDBOX_UID``) right after
  exec, which leaves it non-dumpable (other ``nobody`` processes cannot read its memory).
- **rlimits**: CPU seconds, address space, file size, process count, open files, no core dumps.
- **Parent-side budgets**: the wall-clock timeout, the output budget (the parent reads the child's
  output as it comes, keeps only the tail it records and kills at ``output_mb``) and, where there
  is no tmpfs, a watcher that kills at ``disk_mb`` / ``files`` in the sandbox dir. A kill reaps the
  process group and every process carrying this run's marker in its environment (``_reap``).
- **Audit hook** (PEP 578, :mod:`spsamp.sandbox.child`): refuses process creation, signals, every
  socket event, ``ctypes`` and writes outside the sandbox dir — defence in depth, the only network
  guard where no namespace is available — and guards the verdict (below).

The verdict (:class:`RunResult.status`): ``passed`` needs exit 0 *and* a per-run secret line that
only the audit hook can write, after the program returned to the bootstrap (see
:mod:`spsamp.sandbox.child` for why the program cannot reach the secret); ``failed`` (an
exception, an exit before the end), ``syntax_error``, ``timeout``, ``resource_limit`` (memory,
CPU, file size, the output or disk budget), ``blocked`` (the audit hook refused an operation),
``sandbox_error`` (the child could not be started).
"""

from __future__ import annotations

import logging
import os
import resource
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from spsamp.sandbox.isolation import (SANDBOX_GID, SANDBOX_UID, Plan, PlanUnavailable, child_setup, dir_usage, plans,
                                      tmpfs_usage)

log = logging.getLogger(__name__)

STATUSES = ("passed", "failed", "syntax_error", "timeout", "resource_limit", "blocked", "sandbox_error")

# exit codes the bootstrap uses to tell the parent what happened (spsamp/sandbox/child.py)
_EXIT_FAILED, _EXIT_SYNTAX, _EXIT_MEMORY, _EXIT_BLOCKED = 11, 12, 13, 14
_OUTPUT_LIMIT = 4000  # characters of the child's output kept for diagnostics
_MARK = b"SPSAMP-SANDBOX-DONE-"
_SETUP_FAILED = b"SPSAMP-SANDBOX-SETUP-"  # the child could not drop to nobody (spsamp/sandbox/child.py)
_WATCH_S = 0.05  # how often the disk budget is checked while the program runs
_CHILD = (Path(__file__).with_name("child.py")).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Limits:
    """Resources one run may use. ``timeout_s`` is wall-clock; CPU time is capped just above it."""

    timeout_s: float = 10.0
    memory_mb: int = 1024  # address space (RLIMIT_AS)
    file_size_mb: int = 16  # largest file the program may write (RLIMIT_FSIZE)
    processes: int = 64  # RLIMIT_NPROC (counts every process of the sandbox user)
    open_files: int = 64
    output_mb: float = 4.0  # stdout + stderr together; past it the child is killed (resource_limit)
    disk_mb: float = 64.0  # everything written in the sandbox dir together
    files: int = 1024  # files and directories in the sandbox dir


@dataclass(frozen=True)
class Containment:
    """Which kernel layers a run had: ``plan.net_isolated`` is False where only the audit hook
    kept the program off the network."""

    plan: Plan
    as_root: bool

    @property
    def net_isolated(self) -> bool:
        return self.plan.net_isolated

    def describe(self) -> str:
        return ("as root (child runs as nobody): " if self.as_root else "as a normal user: ") + self.plan.describe()


@dataclass(frozen=True)
class RunResult:
    status: str
    returncode: Optional[int]
    output: str  # the last _OUTPUT_LIMIT characters of stdout + stderr
    wall_s: float
    containment: Optional[Containment] = None  # None: the child never started

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _reachable_by_others(path: str) -> bool:
    """Whether a user other than the owner may execute ``path`` (o+x on it and on every parent dir)."""
    p = Path(path).resolve()
    try:
        return all(os.stat(d).st_mode & 0o001 for d in [p, *p.parents])
    except OSError:
        return False


def interpreter(as_root: Optional[bool] = None) -> Optional[str]:
    """The Python the child runs: ours, unless it runs as ``nobody`` and cannot reach ours (e.g. a
    pyenv under a 0700 /root), then the first system ``python3`` it can. None: nothing it can run."""
    if not (_as_root() if as_root is None else as_root) or _reachable_by_others(sys.executable):
        return sys.executable
    for cand in ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"):
        if os.path.exists(cand) and _reachable_by_others(cand):
            return cand
    return None


def _rlimits(limits: Limits) -> tuple:
    cpu = int(limits.timeout_s) + 2
    mem = limits.memory_mb * 2**20
    return (
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (mem, mem)),
        (resource.RLIMIT_FSIZE, (limits.file_size_mb * 2**20,) * 2),
        (resource.RLIMIT_NPROC, (limits.processes,) * 2),
        (resource.RLIMIT_NOFILE, (limits.open_files,) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
    )


# The strongest plan that could be set up in this process (index into plans()); found by the first
# run, moved down (never up) when a plan stops working, and logged once per process when the
# network is left to the audit hook.
_plan_at = 0
_warned = False
_announced = False


def _note_fallback(plan: Plan, why: str) -> None:
    global _warned
    log.warning("sandbox: %s could not be set up here (%s); using the next plan", plan.describe(), why)
    if not _warned and not plans(_as_root())[_plan_at].net_isolated:
        _warned = True
        log.warning("sandbox: no kernel network isolation on this machine (%s): model-written code is kept off "
                    "the network by the audit hook only; checked rows say so in task_check", why)


def containment() -> Containment:
    """The containment runs get in this process (runs a trivial program once to find out)."""
    res = run_python("pass\n", Limits(timeout_s=5))
    if res.containment is None:
        raise RuntimeError(f"sandbox: the child could not start: {res.output}")
    return res.containment


def _start(python: str, workdir: Path, env: dict, limits: Limits, guard: bool):
    """Start the child under the strongest plan that works here; (Popen, plan) or an error string."""
    global _plan_at, _announced
    as_root = _as_root()
    candidates = plans(as_root)
    while True:
        plan = candidates[_plan_at]
        report_r, report_w = os.pipe()
        try:
            setup = child_setup(plan, str(workdir), as_root, _rlimits(limits), int(limits.disk_mb * 2**20),
                                limits.files, report_w)
            if not plan.mounts and as_root:
                os.chown(workdir, SANDBOX_UID, SANDBOX_GID)  # the sandbox user owns its dir (and nothing else)
            proc = subprocess.Popen(
                [python, "-I", "-c", _CHILD, "guard" if guard else "off", f"{SANDBOX_UID}:{SANDBOX_GID}" if as_root else "-"],
                cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=setup, close_fds=True,
            )
            if not _announced:
                _announced = True
                log.info("sandbox: model-written code runs %s", Containment(plan, as_root).describe())
            return proc, plan
        except (subprocess.SubprocessError, PlanUnavailable) as exc:  # the setup failed: weaker plan
            os.close(report_w)
            report_w = -1
            why = os.read(report_r, 4096).decode(errors="replace") or str(exc)
            if _plan_at + 1 >= len(candidates):
                return None, why
            _plan_at += 1
            _note_fallback(plan, why)
        except OSError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        finally:
            os.close(report_r)
            if report_w >= 0:
                os.close(report_w)


class _Output:
    """The child's output, read as it comes: the tail kept for the record, the byte count, and
    which of the secret-bearing lines (pass, setup failed) were seen — searched across chunk
    boundaries, stripped from the text."""

    def __init__(self, secret: bytes, keep: int):
        self.markers = {"passed": _MARK + secret, "setup_failed": _SETUP_FAILED + secret}
        self.keep = keep
        self.tail = bytearray()
        self.total = 0
        self.seen: set[str] = set()

    @property
    def marked(self) -> bool:
        return "passed" in self.seen

    def add(self, chunk: bytes) -> None:
        for name, marker in self.markers.items():
            if name not in self.seen and marker in bytes(self.tail[-(len(marker) - 1) :]) + chunk:
                self.seen.add(name)
        self.total += len(chunk)
        self.tail += chunk
        if len(self.tail) > 2 * self.keep:
            del self.tail[: len(self.tail) - self.keep]

    def text(self) -> str:
        text = bytes(self.tail[-self.keep :]).decode("utf-8", errors="replace")
        for marker in self.markers.values():
            text = text.replace("\n" + marker.decode() + "\n", "").replace(marker.decode(), "")
        return text[-_OUTPUT_LIMIT:]


def _supervise(proc: subprocess.Popen, payload: bytes, out: _Output, limits: Limits, plan: Plan,
               workdir: Path, deadline: float) -> Optional[str]:
    """Feed stdin, read output and watch the budgets until the child is gone; the status when the
    parent ended it (``timeout`` / ``resource_limit``), else None."""
    sel = selectors.DefaultSelector()
    os.set_blocking(proc.stdin.fileno(), False)
    sel.register(proc.stdin, selectors.EVENT_WRITE)
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        pidfd = os.pidfd_open(proc.pid)
        sel.register(pidfd, selectors.EVENT_READ)
    except (AttributeError, OSError):
        pidfd = None
    output_budget = limits.output_mb * 2**20
    sent, next_watch, exited_at = 0, 0.0, None
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                return "timeout"
            if now >= next_watch:
                next_watch = now + _WATCH_S
                if _over_disk_budget(proc.pid, plan, workdir, limits):
                    out.add(b"\nsandbox: the disk budget was exceeded\n")
                    return "resource_limit"
                if exited_at is None and proc.poll() is not None:
                    exited_at = now
            if exited_at is not None and (proc.stdout.closed or now - exited_at > 0.2):
                return None  # gone; a grandchild holding the pipe is reaped by the caller
            for key, _ in sel.select(min(deadline - now, _WATCH_S)):
                if key.fileobj is proc.stdin:
                    try:
                        sent += os.write(proc.stdin.fileno(), payload[sent : sent + 65536])
                    except BlockingIOError:
                        pass
                    except BrokenPipeError:  # the child is gone before reading its program
                        sent = len(payload)
                    if sent >= len(payload):
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                elif key.fileobj is proc.stdout:
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        sel.unregister(proc.stdout)
                        proc.stdout.close()
                        if exited_at is None and proc.poll() is not None:
                            exited_at = time.monotonic()
                        continue
                    out.add(chunk)
                    if out.total > output_budget:
                        out.add(f"\nsandbox: output past the {limits.output_mb:g} MB budget\n".encode())
                        return "resource_limit"
                else:  # the pidfd: the child exited
                    sel.unregister(key.fileobj)
                    proc.poll()
                    exited_at = time.monotonic()
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)


def _over_disk_budget(pid: int, plan: Plan, workdir: Path, limits: Limits) -> bool:
    if plan.mounts:  # the tmpfs enforces the budget; full means the program ran into it
        free = tmpfs_usage(pid, str(workdir))
        return free is not None and (free[0] < 64 * 1024 or free[1] < 2)
    used, count = dir_usage(str(workdir), limits.files)
    return used > limits.disk_mb * 2**20 or count > limits.files


def run_python(source: str, limits: Limits = Limits(), audit_guard: bool = True) -> RunResult:
    """Run ``source`` as a program in a contained child process (see module doc) and classify how it ended.

    ``audit_guard=False`` leaves out the hook's containment rules (tests use it to show the OS
    layers hold alone); the rules that guard the verdict stay."""
    # the parent's pid leads the marker, so a process (a test) can tell its own sandboxes from others'
    token = f"{os.getpid()}.{secrets.token_hex(12)}"
    secret = secrets.token_hex(16)
    workdir = Path(tempfile.mkdtemp(prefix="spsamp-sandbox-"))
    t0 = time.perf_counter()
    try:
        python = interpreter()
        if python is None:
            return RunResult("sandbox_error", None, "no Python interpreter the sandbox user may execute — install python3 under /usr/bin", 0.0)
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "PYTHONDONTWRITEBYTECODE": "1",
            "SPSAMP_SANDBOX": token,
        }
        proc, plan = _start(python, workdir, env, limits, audit_guard)
        if proc is None:  # plan: why it could not start
            return RunResult("sandbox_error", None, str(plan), time.perf_counter() - t0)
        out = _Output(secret.encode(), keep=4 * _OUTPUT_LIMIT)
        payload = (secret + "\n" + source).encode("utf-8", errors="replace")
        ended = _supervise(proc, payload, out, limits, plan, workdir, time.monotonic() + limits.timeout_s)
        _reap(token, proc.pid)  # nothing it started may outlive it
        for stream in (proc.stdin, proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()
        rc = proc.wait()
        status = ended or _classify(rc, out)
        return RunResult(status, rc, out.text(), time.perf_counter() - t0, Containment(plan, _as_root()))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _reap(token: str, group: int) -> None:
    """Kill the process group and every process whose environment carries ``token``: the group
    covers the usual case, the marker catches children that left it (``setsid``). Repeated until
    none is left, SIGSTOP first, so a fork bomb cannot outrun the killer."""
    with _suppress():
        os.killpg(group, signal.SIGKILL)
    needle = f"SPSAMP_SANDBOX={token}".encode()
    for _ in range(20):
        found = []
        for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
        if not found:
            return
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in found:
                with _suppress():
                    os.kill(pid, sig)
        time.sleep(0.05)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], (ProcessLookupError, PermissionError, OSError))


def _classify(rc: int, out: _Output) -> str:
    if "setup_failed" in out.seen:
        return "sandbox_error"  # the check never ran: the answer is neither right nor wrong
    if rc == 0:
        return "passed" if out.marked else "failed"  # exit 0 without the pass line: left before the end
    if rc == _EXIT_SYNTAX:
        return "syntax_error"
    if rc == _EXIT_BLOCKED:
        return "blocked"
    if rc == _EXIT_MEMORY:
        return "resource_limit"
    if rc < 0 and -rc in (signal.SIGXCPU, signal.SIGKILL, signal.SIGXFSZ, signal.SIGSEGV):
        return "resource_limit"
    if "MemoryError" in out.text()[-2000:]:
        return "resource_limit"
    return "failed"


__all__ = ["Containment", "Limits", "RunResult", "SANDBOX_UID", "STATUSES", "containment", "interpreter", "run_python"]
