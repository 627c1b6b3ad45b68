"""The sandbox against answers written to get through it (issue 35): network, output flood, disk
fill, forged pass — each case is a program a hostile answer could be.

Kernel layers (namespaces, read-only mounts, tmpfs) are used where the machine allows them; the
cases that test a kernel layer alone (``audit_guard=False``) skip, naming the layer, where it is
missing. As root, one case also runs the sandbox as an unprivileged user (``nobody``), which gets
the user-namespace plan.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from spsamp.sandbox import Limits, _reachable_by_others, containment, run_python

FAST = Limits(timeout_s=3)
as_root = os.geteuid() == 0
WORKTREE = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def layers():
    return containment()


def need_netns(layers):
    if not layers.net_isolated:
        pytest.skip(f"no network namespace on this machine ({layers.describe()}): only the audit hook keeps the network out")


def need_tmpfs(layers):
    if not layers.plan.mounts:
        pytest.skip(f"no private mount namespace on this machine ({layers.describe()}): the disk budget is kept by the watcher")


@pytest.fixture
def open_dir():
    """A world-writable dir outside the sandbox, reachable by nobody: DAC would let a write through."""
    d = Path(tempfile.mkdtemp(prefix="spsamp-open-"))
    d.chmod(0o1777)
    if as_root and not _reachable_by_others(str(d)):
        shutil.rmtree(d)
        pytest.skip(f"the temp dir {d.parent} is not reachable by nobody")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def udp_listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.5)
    return s


def received(listener) -> bytes:
    try:
        return listener.recv(4096)
    except (socket.timeout, TimeoutError):
        return b""


def udp_sendmsg(port: int) -> str:
    # a hostile answer swallows every refusal and carries on to "pass"
    return textwrap.dedent(f"""
        import _socket
        try:
            s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
            s.sendmsg([b'leaked-by-the-answer'], [], 0, ('127.0.0.1', {port}))
        except BaseException as exc:
            print('refused:', exc)
    """)


# --- network ---------------------------------------------------------------------------------


def test_udp_sendmsg_is_refused_by_the_audit_hook():
    listener = udp_listener()
    try:
        res = run_python(udp_sendmsg(listener.getsockname()[1]), FAST)
        assert received(listener) == b""
        assert res.status == "blocked", res.output  # socket creation itself is refused
    finally:
        listener.close()


def test_no_network_without_the_audit_hook_in_the_namespace(layers):
    need_netns(layers)
    udp = udp_listener()
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(1)
    tcp.settimeout(0.5)
    try:
        src = udp_sendmsg(udp.getsockname()[1]) + textwrap.dedent(f"""
            import socket
            try:
                socket.create_connection(('127.0.0.1', {tcp.getsockname()[1]}), timeout=1)
                print('CONNECTED')
            except OSError as exc:
                print('no route:', exc)
        """)
        res = run_python(src, FAST, audit_guard=False)
        assert received(udp) == b""
        with pytest.raises((socket.timeout, TimeoutError)):
            tcp.accept()
        assert "CONNECTED" not in res.output and "no route" in res.output, res.output
    finally:
        udp.close()
        tcp.close()


# --- output ----------------------------------------------------------------------------------


def test_output_flood_is_killed_at_the_budget_and_the_parent_stays_flat():
    flood = "import sys\nchunk = 'x' * 65536\nwhile True:\n    sys.stdout.write(chunk)\n"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, the peak so far
    t0 = time.perf_counter()
    res = run_python(flood, FAST)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert res.status == "resource_limit", res.output[-300:]
    assert time.perf_counter() - t0 < FAST.timeout_s  # killed at the byte budget, not at the timeout
    assert len(res.output) <= 4000
    assert grown_mb < 64, f"the parent's peak memory grew by {grown_mb:.0f} MB"


def test_output_under_the_budget_is_kept_as_a_tail():
    res = run_python("for i in range(20000):\n    print(i)\n", FAST)
    assert res.status == "passed"
    assert res.output.rstrip().endswith("19999") and len(res.output) <= 4000


# --- disk ------------------------------------------------------------------------------------

FILL = textwrap.dedent("""
    total = 0
    for i in range(100000):
        try:
            with open(f'f{i}', 'wb') as fh:
                fh.write(b'0' * (15 * 2**20))
            total += 15 * 2**20
        except OSError:
            pass
        print('wrote', total, flush=True)
""")


def max_written(output: str) -> int:
    return max([int(line.split()[1]) for line in output.splitlines() if line.startswith("wrote ")] or [0])


@pytest.mark.parametrize("guard", [True, False])
def test_filling_the_disk_is_stopped_at_the_budget(guard, layers):
    if not guard and not as_root:
        pytest.skip("without the audit hook only the uid drop (root) keeps writes outside the sandbox dir out")
    limits = Limits(timeout_s=5, disk_mb=48)
    res = run_python(FILL, limits, audit_guard=guard)
    assert res.status == "resource_limit", res.output[-300:]
    slack = 0 if layers.plan.mounts else 512 * 2**20  # the watcher looks every 50 ms
    assert max_written(res.output) <= limits.disk_mb * 2**20 + slack


def test_too_many_files_is_a_resource_limit():
    src = "for i in range(100000):\n    try:\n        open(f'f{i}', 'w').close()\n    except OSError:\n        pass\n"
    assert run_python(src, Limits(timeout_s=5, files=200)).status == "resource_limit"


def test_writes_outside_the_sandbox_dir_hit_a_read_only_mount(layers, open_dir):
    need_tmpfs(layers)
    src = f"open({str(open_dir / 'x')!r}, 'w').write('x')\n"
    res = run_python(src, FAST, audit_guard=False)
    assert res.status == "failed" and "Read-only file system" in res.output, res.output
    assert list(open_dir.iterdir()) == []


# --- the verdict -----------------------------------------------------------------------------

PRINT_AND_LEAVE = """
import os
def leave(found):
    os.write(1, ('\\n'.join(str(x) for x in found) + '\\n').encode(errors='replace'))
    os._exit(0)
def walk(f):
    found = []
    while f is not None:
        found += list(f.f_globals.values()) + list(f.f_locals.values())
        f = f.f_back
    return found
"""

FORGERIES = {
    # the case: walk a traceback back to the bootstrap's frame and print what it holds
    "traceback frames": """
found = []
try:
    raise ValueError
except ValueError as e:
    try:
        found += walk(e.__traceback__.tb_frame)
    except BaseException as exc:
        found.append(exc)
leave(found)
""",
    "sys._getframe": """
import sys
found = []
try:
    found += walk(sys._getframe())
except BaseException as exc:
    found.append(exc)
leave(found)
""",
    "generator frames": """
found = []
def gen():
    yield walk(g.gi_frame)  # running: its frame's f_back is the caller's
g = gen()
try:
    found += next(g)
except BaseException as exc:
    found.append(exc)
leave(found)
""",
    "modules": """
import sys
found = []
for m in list(sys.modules.values()):
    found += [v for v in vars(m).values() if isinstance(v, (str, bytes))]
leave(found)
""",
    "gc": """
found = []
try:
    import gc
    for o in gc.get_objects():
        if isinstance(o, (dict, list, tuple)):
            found += [v for v in (o.values() if isinstance(o, dict) else o) if isinstance(v, (str, bytes))]
except BaseException as exc:
    found.append(exc)
leave(found)
""",
    "file descriptors": """
found = []
for fd in range(64):
    try:
        os.set_blocking(fd, False)
        found.append(os.read(fd, 1 << 16))
    except BaseException:
        pass
leave(found)
""",
    "process memory": """
import re
found = []
try:
    with open('/proc/self/maps') as maps, open('/proc/self/mem', 'rb', 0) as mem:
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split()[0].split('-'))
            if 'r' not in line.split()[1] or hi - lo > 2**28:
                continue
            try:
                mem.seek(lo)
                found += re.findall(rb'SPSAMP-SANDBOX-DONE-[0-9a-f]{32}', mem.read(hi - lo))
            except OSError:
                pass
except BaseException as exc:
    found.append(exc)
leave(found)
""",
    "signal handler frames": """
import signal, sys
found = []
def grab(signum, frame):
    while frame is not None:
        found.extend(v for v in frame.f_locals.values() if isinstance(v, (str, bytes)))
        try:
            found.extend(c for c in frame.f_code.co_consts if isinstance(c, bytes))
        except BaseException as exc:
            found.append(type(exc).__name__)
        frame = frame.f_back
try:
    signal.signal(signal.SIGALRM, grab)
    signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
    for _ in range(5000):
        try:
            open('/nonexistent-' + str(_))  # an audit event each: the hook is on the stack often
        except OSError:
            pass
    signal.setitimer(signal.ITIMER_REAL, 0)
except BaseException as exc:
    found.append(exc)
leave(found)
""",
    "the pass event": """
import sys
try:
    sys.audit('spsamp.pass')
except BaseException as exc:
    leave([exc])
leave([])
""",
    # a thread that waits until the program failed and the bootstrap reports, then digs
    "after the report": """
import sys, threading, time
saved = []
try:
    sys._current_frames()  # refused: its traceback runs through the hook
except BaseException as exc:
    saved.append(exc.__traceback__)
def thief():
    time.sleep(0.2)
    found = []
    tb = saved[0]
    while tb is not None:
        try:
            found.extend(tb.tb_frame.f_code.co_consts)
        except BaseException as exc:
            found.append(exc)
        tb = tb.tb_next
    try:
        import gc
        found.extend(o for o in gc.get_objects() if isinstance(o, tuple))
    except BaseException as exc:
        found.append(exc)
    leave(found)
threading.Thread(target=thief).start()
class Slow(Exception):
    def __str__(self):
        time.sleep(2)  # the bootstrap formats the failure: the thief runs meanwhile
        return 'slow'
raise Slow()
""",
}


@pytest.mark.parametrize("guard", [True, False])
@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_a_forged_pass_is_not_a_pass(name, guard):
    program = PRINT_AND_LEAVE + FORGERIES[name] + "\nassert False, 'the tests ran and failed'\n"
    res = run_python(program, Limits(timeout_s=5), audit_guard=guard)
    assert res.status != "passed", res.output[-500:]
    assert "SPSAMP-SANDBOX-DONE-" not in res.output


HELPER_READS_MEMORY = r"""
import os, _posixsubprocess, sys
# _posixsubprocess.fork_exec raises no audit event: the helper runs past the hook and scans the
# answer's memory for the pass line
helper = (
    "import re, sys\n"
    "pid = int(sys.argv[1])\n"
    "try:\n"
    "    with open(f'/proc/{pid}/maps') as maps, open(f'/proc/{pid}/mem', 'rb', 0) as mem:\n"
    "        for line in maps:\n"
    "            lo, hi = (int(x, 16) for x in line.split()[0].split('-'))\n"
    "            if 'r' in line.split()[1] and hi - lo < 2**28:\n"
    "                try:\n"
    "                    mem.seek(lo)\n"
    "                    for m in re.findall(rb'SPSAMP-SANDBOX-DONE-[0-9a-f]{32}', mem.read(hi - lo)):\n"
    "                        print(m.decode())\n"
    "                except OSError:\n"
    "                    pass\n"
    "except OSError as exc:\n"
    "    print('helper:', exc)\n"
)
argv = [sys.executable.encode(), b'-c', helper.encode(), str(os.getpid()).encode()]
er, ew = os.pipe()
pid = _posixsubprocess.fork_exec(argv, [argv[0]], True, (), None, None, -1, -1, -1, -1, -1, -1, er, ew,
                                 False, False, -1, None, None, None, -1, None, False)
os.waitpid(pid, 0)
os._exit(0)
"""


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="_posixsubprocess.fork_exec's signature is CPython 3.11's")
@pytest.mark.skipif(not as_root, reason="as a normal user the program has the user's uid: a process it starts past "
                    "the hook may read its memory (docs/quality.md)")
def test_a_process_started_past_the_hook_cannot_read_the_answers_memory():
    res = run_python(HELPER_READS_MEMORY + "assert False\n", Limits(timeout_s=10))
    assert "helper:" in res.output and "Permission denied" in res.output, res.output
    assert res.status != "passed" and "SPSAMP-SANDBOX-DONE-" not in res.output


@pytest.mark.parametrize("threshold", range(1, 10))
def test_a_callback_run_while_the_bootstrap_is_on_top_does_not_pass(threshold):
    # a C-level callback (no Python frame of its own) raising the end event; the gc threshold picks
    # when it runs — some values make it run in the bootstrap's frame while it handles the failure
    src = textwrap.dedent(f"""
        import functools, gc, sys
        gc.collect()
        gc.set_threshold({threshold})
        gc.callbacks.append(functools.partial(sys.audit, "spsamp.pass"))
        raise RuntimeError("the tests never ran")
    """)
    assert run_python(src, FAST).status in ("failed", "blocked")


def test_the_pass_line_is_written_only_by_the_harness():
    # the line's prefix is public, the secret after it is not
    src = "import os\nprint('\\nSPSAMP-SANDBOX-DONE-' + '0' * 32)\nos._exit(0)\n"
    assert run_python(src, FAST).status == "failed"


def test_common_imports_still_work():
    # the hook refuses frame introspection: the stdlib modules that probe frames must keep working
    src = textwrap.dedent("""
        import asyncio, collections, dataclasses, enum, inspect, logging, typing, warnings
        from typing import NamedTuple, TypeVar
        T = TypeVar('T')
        P = collections.namedtuple('P', 'a b')
        class Q(NamedTuple):
            a: int
        @dataclasses.dataclass
        class D:
            x: int = 1
        E = enum.Enum('E', 'a b')
        logging.getLogger('x').warning('logged')
        warnings.warn('warned')
        print(P(1, 2), Q(1), D(), E.a, inspect.signature(lambda a, b=2: 0))
    """)
    res = run_python(src, Limits(timeout_s=10))
    assert res.status == "passed", res.output


# --- as an unprivileged user -----------------------------------------------------------------


@pytest.mark.skipif(not as_root, reason="needs root to start the check as nobody")
def test_as_an_unprivileged_user(open_dir):
    """The same attacks, with spsamp itself running as nobody (the user-namespace plan)."""
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin:/bin")
    if python is None or not _reachable_by_others(python):
        pytest.skip("no system python3 that nobody may run")
    module = WORKTREE / "spsamp" / "sandbox" / "__init__.py"
    if not _reachable_by_others(str(module.parent)) or not module.stat().st_mode & 0o004:
        pytest.skip(f"the checkout {WORKTREE} is not readable by nobody")
    listener = udp_listener()
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(WORKTREE)!r})
        from spsamp.sandbox import Limits, containment, run_python
        c = containment()
        out = {{"plan": c.describe(), "net": c.net_isolated, "mounts": c.plan.mounts}}
        out["udp"] = run_python({udp_sendmsg(listener.getsockname()[1])!r}, Limits(timeout_s=3), audit_guard=False).status
        out["outside"] = run_python({f"open({str(open_dir / 'x')!r}, 'w').write('x')"!r}, Limits(timeout_s=3),
                                    audit_guard=False).output
        out["flood"] = run_python("while True:\\n    print('x' * 9999)\\n", Limits(timeout_s=3)).status
        out["fill"] = run_python({FILL!r}, Limits(timeout_s=5, disk_mb=48)).status
        print(json.dumps(out))
    """)
    try:
        proc = subprocess.run([python, "-I", "-c", script], capture_output=True, text=True, timeout=120, cwd="/",
                              user=65534, group=65534, extra_groups=[], env={"PATH": "/usr/bin:/bin"})
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert received(listener) == b""
    finally:
        listener.close()
    assert out["flood"] == "resource_limit" and out["fill"] == "resource_limit", out
    if not (out["net"] and out["mounts"]):
        pytest.skip(f"no unprivileged user namespace with mounts here ({out['plan']}): the audit hook alone guards "
                    "the network and files outside")
    assert "Read-only file system" in out["outside"] and list(open_dir.iterdir()) == [], out


def test_the_hook_code_loads_no_global_name():
    # every name the hook uses is bound before the program runs: a program that swaps builtins or
    # module functions cannot make the hook run its code
    import dis

    from spsamp.sandbox.child import HOOK_SOURCE

    def loads(code):
        names = [i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")]
        for const in code.co_consts:
            if hasattr(const, "co_code"):
                names += loads(const)
        return names

    module = compile(HOOK_SOURCE.replace("@MARK@", "x"), "<sandbox hook>", "exec")
    make = next(c for c in module.co_consts if hasattr(c, "co_code"))
    assert loads(make) == []


# --- where the kernel gives no namespace -----------------------------------------------------


def test_without_namespaces_the_log_and_task_check_say_so(monkeypatch, caplog):
    """A machine that refuses every namespace: the run falls back to the audit hook, says so once
    in the log, and each checked row's task_check carries the suffix."""
    import pyarrow as pa

    import spsamp.sandbox as sb
    from spsamp.data.checkers import NO_NET_ISOLATION, check_text
    from spsamp.records.schema import schema_for, validate_table
    from spsamp.sandbox import isolation

    def refuse(self):
        if self.plan.namespaces != "none":
            raise OSError(1, "unshare: Operation not permitted (test)")
        return "namespaces"

    monkeypatch.setattr(isolation.ChildSetup, "_namespaces", refuse)
    monkeypatch.setattr(sb, "_plan_at", 0)
    monkeypatch.setattr(sb, "_warned", False)
    problem = {"prompt": "def add(a, b):\n", "entry_point": "add", "test": "def check(f):\n    assert f(1, 2) == 3\n"}
    with caplog.at_level("INFO", logger="spsamp.sandbox"):
        first = check_text("tests", problem, "```python\ndef add(a, b):\n    return a + b\n```", Limits(timeout_s=5))
        second = check_text("tests", problem, "```python\ndef add(a, b):\n    return a - b\n```", Limits(timeout_s=5))
        res = run_python(udp_sendmsg(9), FAST)
    assert first == (True, "passed" + NO_NET_ISOLATION) and second == (False, "failed" + NO_NET_ISOLATION)
    assert res.status == "blocked" and not res.containment.net_isolated  # the hook still refuses sockets
    warnings = [r.getMessage() for r in caplog.records if "no kernel network isolation" in r.getMessage()]
    assert len(warnings) == 1 and "unshare" in warnings[0], warnings  # once per run, with the reason

    base = {"run_id": "r", "resume_key": "k", "status": "ok", "method": "baseline"}
    rows = [dict(base, resume_key="a", task_correct=first[0], task_check=first[1]),
            dict(base, resume_key="b", task_correct=second[0], task_check=second[1])]
    assert validate_table(pa.Table.from_pylist(rows, schema=schema_for(rows))) == []
    bad = rows + [dict(base, resume_key="c", task_correct=False, task_check="no_code" + NO_NET_ISOLATION)]
    assert any("unknown values" in p for p in validate_table(pa.Table.from_pylist(bad, schema=schema_for(bad))))


@pytest.mark.skipif(not as_root, reason="the uid drop happens only when spsamp runs as root")
def test_a_child_that_cannot_drop_to_nobody_is_a_sandbox_error(monkeypatch):
    # a uid the kernel refuses (out of range): no check may run as root, and the verdict says the
    # check did not run rather than "failed"
    import spsamp.sandbox as sb

    monkeypatch.setattr(sb, "SANDBOX_UID", 2**32)
    res = run_python("pass\n", FAST)
    assert res.status == "sandbox_error" and "dropping to" in res.output, res.output
