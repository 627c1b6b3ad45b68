"""Run untrusted (model-written) Python in a contained child process — never in the spsamp process.

Containment, outermost first (each layer holds even where an inner one is bypassed):

- **Separate process**: ``python -I`` (isolated mode: no user site-packages, no ``PYTHON*``
  environment variables, the script's directory not on ``sys.path``) in its own session and
  process group, started with a *minimal environment* (PATH, LANG, HOME=TMPDIR=the sandbox dir: no
  inherited secrets, tokens or proxy settings).
- **Fresh working directory**: a new temp dir per run, the only place the program may write; it
  is removed afterwards with everything in it.
- **Unprivileged user when root**: as root (CI, containers) the child drops to ``nobody``
  (``SANDBOX_UID``) before ``exec``, so the kernel refuses writes to any file it does not own —
  only the sandbox dir is handed to it (``chown``). As a normal user it keeps the user's uid.
- **rlimits** (``resource.setrlimit`` before ``exec``): CPU seconds (``RLIMIT_CPU``), address
  space (``RLIMIT_AS``, so a huge allocation raises ``MemoryError``), file size
  (``RLIMIT_FSIZE``), process count (``RLIMIT_NPROC``, so a fork bomb stops), open files, no core
  dumps.
- **Wall-clock timeout**: on expiry the whole process group is killed (SIGKILL), and so is any
  process still carrying this run's marker in its environment (``_reap``), so a child that left
  the group or a fork bomb cannot outlive the check.
- **Audit hook** (PEP 578, installed before the program runs, cannot be removed from Python):
  refuses process creation (``os.system``, ``subprocess``, ``os.fork``/``exec``/``spawn``),
  signals to other processes, sockets, ``ctypes`` and every write, rename, delete or permission
  change outside the sandbox dir. This is defence in depth for non-root runs; it is not a
  security boundary against code written to escape it (the OS layers above are).

The verdict (:class:`RunResult.status`): ``passed`` (exit 0 *and* the end-of-program marker was
printed, so ``sys.exit(0)`` / ``os._exit(0)`` before the tests ran is not a pass), ``failed``
(an exception, e.g. a failed ``assert``), ``syntax_error``, ``timeout``, ``resource_limit``
(``MemoryError``, killed by the CPU or file-size limit), ``blocked`` (the audit hook refused an
operation), ``sandbox_error`` (the child could not be started).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

SANDBOX_UID = 65534  # nobody: the uid untrusted code runs as when spsamp runs as root
SANDBOX_GID = 65534
STATUSES = ("passed", "failed", "syntax_error", "timeout", "resource_limit", "blocked", "sandbox_error")

# exit codes the bootstrap uses to tell the parent what happened
_EXIT_FAILED, _EXIT_SYNTAX, _EXIT_MEMORY, _EXIT_BLOCKED = 11, 12, 13, 14
_OUTPUT_LIMIT = 4000  # characters of the child's output kept for diagnostics


@dataclass(frozen=True)
class Limits:
    """Resources one run may use. ``timeout_s`` is wall-clock; CPU time is capped just above it."""

    timeout_s: float = 10.0
    memory_mb: int = 1024  # address space (RLIMIT_AS)
    file_size_mb: int = 16  # largest file the program may write (RLIMIT_FSIZE)
    processes: int = 64  # RLIMIT_NPROC (counts every process of the sandbox user)
    open_files: int = 64


@dataclass(frozen=True)
class RunResult:
    status: str
    returncode: Optional[int]
    output: str  # the last _OUTPUT_LIMIT characters of stdout + stderr
    wall_s: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# Runs in the child before the program: read the marker from stdin, install the audit hook,
# compile and exec the program file; exit codes above say how it ended.
_BOOTSTRAP = r'''
import os, sys
sys.dont_write_bytecode = True  # imports must not try to write __pycache__ (the hook would refuse)
marker = sys.stdin.readline().strip()
sys.stdin.close()
root = os.path.realpath(os.getcwd())
blocked = []
_DENY = {"os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
         "os.kill", "os.killpg", "pty.spawn", "socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo",
         "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function", "ctypes.addressof",
         "os.chroot", "os.setuid", "os.setgid", "resource.setrlimit", "resource.prlimit", "sys.remote_exec",
         "webbrowser.open", "os.startfile"}
_PATHS = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.chmod": 1, "os.chown": 1, "os.truncate": 1, "os.utime": 1,
          "os.rename": 2, "os.link": 2, "os.symlink": 2, "shutil.rmtree": 1, "shutil.copyfile": 2, "shutil.move": 2,
          "os.chflags": 1, "os.lchmod": 1, "os.setxattr": 1, "os.removexattr": 1}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

def _inside(path):
    if isinstance(path, int):
        return True  # an fd already open: its opening was checked
    try:
        p = os.path.realpath(os.fsdecode(path))
    except Exception:
        return False
    return p == root or p.startswith(root + os.sep)

def _refuse(event, args):
    blocked.append(event)
    raise PermissionError(f"sandbox: {event} is not allowed")

def _hook(event, args):
    if event in _DENY:
        _refuse(event, args)
    elif event == "open":
        path, mode, flags = args
        writes = (mode is not None and any(c in str(mode) for c in "wax+")) or bool((flags or 0) & _WRITE_FLAGS)
        if writes and path is not None and not _inside(path):
            _refuse(event, args)
    elif event in _PATHS:
        paths = args[:2] if _PATHS[event] == 2 else args[:1]
        if not all(_inside(p) for p in paths if isinstance(p, (str, bytes, os.PathLike, int))):
            _refuse(event, args)

program = sys.argv[1]
with open(program, encoding="utf-8") as fh:
    source = fh.read()
try:
    code = compile(source, "program.py", "exec")
except (SyntaxError, ValueError) as exc:
    print(f"SyntaxError: {exc}", file=sys.stderr)
    sys.exit(12)
if sys.argv[2] == "guard":
    sys.addaudithook(_hook)
try:
    exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
except MemoryError:
    sys.stderr.write("MemoryError\n")
    os._exit(13)
except SystemExit as exc:  # any exit before the end is not a pass, sys.exit(0) included
    sys.stderr.write(f"SystemExit({exc.code!r}) before the program ended\n")
    sys.stdout.flush()
    os._exit(14 if blocked else 11)
except BaseException as exc:
    import traceback
    traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(14 if blocked else 11)
sys.stdout.flush()
if blocked:
    os._exit(14)
sys.stdout.write("\n" + marker + "\n")
sys.stdout.flush()
os._exit(0)
'''


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


def _limits_preexec(limits: Limits):
    """rlimits, applied in the child between fork and exec (after the uid drop, so they bind it)."""
    import resource  # imported here, in the parent: the child may no longer read our stdlib

    def apply() -> None:
        cpu = int(limits.timeout_s) + 2
        mem = limits.memory_mb * 2**20
        for res, value in (
            (resource.RLIMIT_CPU, (cpu, cpu + 1)),
            (resource.RLIMIT_AS, (mem, mem)),
            (resource.RLIMIT_FSIZE, (limits.file_size_mb * 2**20,) * 2),
            (resource.RLIMIT_NPROC, (limits.processes,) * 2),
            (resource.RLIMIT_NOFILE, (limits.open_files,) * 2),
            (resource.RLIMIT_CORE, (0, 0)),
        ):
            resource.setrlimit(res, value)

    return apply


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


def run_python(source: str, limits: Limits = Limits(), audit_guard: bool = True) -> RunResult:
    """Run ``source`` as a program in a contained child process (see module doc) and classify how it ended.

    ``audit_guard=False`` leaves out the audit hook (tests use it to show the OS layers hold alone)."""
    token = secrets.token_hex(12)
    marker = f"SPSAMP-SANDBOX-DONE-{secrets.token_hex(16)}"
    workdir = Path(tempfile.mkdtemp(prefix="spsamp-sandbox-"))
    t0 = time.perf_counter()
    try:
        (workdir / "program.py").write_text(source, encoding="utf-8")
        python = interpreter()
        if python is None:
            return RunResult("sandbox_error", None, "no Python interpreter the sandbox user may execute — install python3 under /usr/bin", 0.0)
        user = {}
        if _as_root():
            # the sandbox user owns its dir (and nothing else): it may write there only
            os.chown(workdir, SANDBOX_UID, SANDBOX_GID)
            os.chown(workdir / "program.py", SANDBOX_UID, SANDBOX_GID)
            user = {"user": SANDBOX_UID, "group": SANDBOX_GID, "extra_groups": []}
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "PYTHONDONTWRITEBYTECODE": "1",
            "SPSAMP_SANDBOX": token,
        }
        try:
            proc = subprocess.Popen(
                [python, "-I", "-c", _BOOTSTRAP, str(workdir / "program.py"), "guard" if audit_guard else "off"],
                cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_limits_preexec(limits), close_fds=True, **user,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return RunResult("sandbox_error", None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)
        try:
            out, _ = proc.communicate((marker + "\n").encode(), timeout=limits.timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            _reap(token, proc.pid)
            out, _ = proc.communicate()
            timed_out = True
        _reap(token, proc.pid)  # nothing it started may outlive it
        text = out.decode("utf-8", errors="replace")
        return RunResult(_classify(proc.returncode, text, marker, timed_out), proc.returncode,
                         text.replace(marker, "")[-_OUTPUT_LIMIT:], time.perf_counter() - t0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _classify(rc: int, text: str, marker: str, timed_out: bool) -> str:
    if timed_out:
        return "timeout"
    if rc == 0:
        return "passed" if marker in text else "failed"  # exit 0 without the marker: left before the end
    if rc == _EXIT_SYNTAX:
        return "syntax_error"
    if rc == _EXIT_BLOCKED:
        return "blocked"
    if rc == _EXIT_MEMORY:
        return "resource_limit"
    if rc < 0 and -rc in (signal.SIGXCPU, signal.SIGKILL, signal.SIGXFSZ, signal.SIGSEGV):
        return "resource_limit"
    if "MemoryError" in text[-2000:]:
        return "resource_limit"
    return "failed"


__all__ = ["Limits", "RunResult", "SANDBOX_UID", "STATUSES", "run_python"]
