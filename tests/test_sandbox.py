"""The sandbox that runs model-written code: every escape the issue names is a case here.

Each case must end within its timeout, leave no process behind and leave files outside the
sandbox dir untouched. Cases run twice where it matters: with the audit hook (the default) and
without it, to show that the OS layers (uid drop as root, rlimits, process-group kill) hold alone.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from spsamp.sandbox import Limits, interpreter, run_python

FAST = Limits(timeout_s=3)
as_root = os.geteuid() == 0
GUARDS = [True, pytest.param(False, marks=pytest.mark.skipif(not as_root, reason="without the audit hook only the uid drop (root) keeps writes out"))]


def marked_processes(token_src: str) -> list[int]:
    """pids whose environment holds this process's SPSAMP_SANDBOX marker (any sandbox child it started
    still alive; other processes' sandboxes, e.g. another pytest worker's, do not count)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"SPSAMP_SANDBOX={os.getpid()}.".encode() in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.fixture
def victim(tmp_path):
    """A file outside the sandbox that no case may create, change or delete."""
    d = tmp_path / "outside"
    d.mkdir()
    f = d / "precious.txt"
    f.write_text("keep me")
    return f


def assert_untouched(victim: Path) -> None:
    assert victim.read_text() == "keep me"
    assert sorted(p.name for p in victim.parent.iterdir()) == ["precious.txt"]


def test_passing_failing_and_syntax_error_programs():
    assert run_python("def f(x):\n    return x + 1\nassert f(1) == 2\n", FAST).status == "passed"
    res = run_python("assert 1 == 2\n", FAST)
    assert res.status == "failed" and "AssertionError" in res.output
    assert run_python("def f(:\n", FAST).status == "syntax_error"
    assert run_python("raise ValueError('boom')\n", FAST).status == "failed"


@pytest.mark.parametrize("src", ["import sys\nsys.exit(0)\nassert False\n", "import os\nos._exit(0)\n"])
def test_leaving_early_with_exit_code_zero_is_not_a_pass(src):
    # the tests come after the answer's code: an exit before them must not read as passed
    assert run_python(src, FAST).status == "failed"


@pytest.mark.parametrize("guard", [True, False])
def test_infinite_loop_times_out(guard):
    t0 = time.perf_counter()
    res = run_python("while True:\n    pass\n", Limits(timeout_s=1.5), audit_guard=guard)
    assert res.status == "timeout"
    assert time.perf_counter() - t0 < 10
    assert marked_processes("") == []


def test_sleeping_program_times_out_on_wall_clock():
    # no CPU used: only the wall-clock timeout can stop it
    t0 = time.perf_counter()
    assert run_python("import time\ntime.sleep(60)\n", Limits(timeout_s=1.5)).status == "timeout"
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("guard", [True, False])
def test_fork_bomb_is_stopped_and_reaped(guard):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    t0 = time.perf_counter()
    res = run_python(bomb, Limits(timeout_s=2, processes=32), audit_guard=guard)
    assert res.status in ("blocked", "timeout")  # the bomb swallows the refusal and spins: a timeout
    assert time.perf_counter() - t0 < 15
    time.sleep(0.2)
    assert marked_processes("") == []  # no child of the bomb outlives the check


def test_child_leaving_the_process_group_is_killed(tmp_path):
    # a daemon that calls setsid() escapes a process-group kill; the environment marker finds it
    src = (
        "import os, time\n"
        "if os.fork() == 0:\n    os.setsid()\n    time.sleep(120)\n    os._exit(0)\n"
        "time.sleep(0.3)\n"
    )
    res = run_python(src, FAST, audit_guard=False)
    assert res.status in ("passed", "timeout")  # the daemon holds the output pipe open: it waits for the timeout
    time.sleep(0.2)
    assert marked_processes("") == []


def test_huge_allocation_hits_the_memory_limit():
    res = run_python("x = bytearray(64 * 2**30)\n", Limits(timeout_s=5, memory_mb=512))
    assert res.status == "resource_limit"


@pytest.mark.parametrize("guard", GUARDS)
@pytest.mark.parametrize("call", ["os.system('{cmd}')", "subprocess.run({argv})", "subprocess.Popen({argv}).wait()"])
def test_shell_and_subprocess_cannot_touch_outside(victim, call, guard):
    target = victim.parent / "created_by_sandbox"
    cmd = f"echo pwned > {victim}; touch {target}"
    src = "import os, subprocess\n" + call.format(cmd=cmd, argv=repr(["sh", "-c", cmd])) + "\n"
    res = run_python(src, FAST, audit_guard=guard)
    assert res.status in (("blocked",) if guard else ("passed", "failed"))
    assert_untouched(victim)


@pytest.mark.parametrize("guard", GUARDS)
@pytest.mark.parametrize(
    "action",
    [
        "open({v!r}, 'w').write('changed')",
        "open({v!r}, 'a').write('more')",
        "os.remove({v!r})",
        "os.rename({v!r}, {v!r} + '.moved')",
        "open(os.path.join(os.path.dirname({v!r}), 'new.txt'), 'w').write('x')",
        "shutil.rmtree(os.path.dirname({v!r}))",
        "os.chmod({v!r}, 0o777)",
    ],
)
def test_writes_outside_the_sandbox_dir_are_refused(victim, action, guard):
    src = "import os, shutil\n" + action.format(v=str(victim)) + "\n"
    res = run_python(src, FAST, audit_guard=guard)
    assert res.status in ("blocked", "failed")
    assert_untouched(victim)


def test_writes_inside_the_sandbox_dir_work_and_the_dir_is_removed():
    src = (
        "import os, tempfile\n"
        "open('a.txt', 'w').write('x')\nos.mkdir('sub')\nopen('sub/b.txt', 'w').write('y')\n"
        "tempfile.NamedTemporaryFile(delete=False).write(b'z')\n"
        "print('CWD=' + os.getcwd())\n"
    )
    res = run_python(src, FAST)
    assert res.status == "passed", res.output
    cwd = next(line[4:] for line in res.output.splitlines() if line.startswith("CWD="))
    assert not Path(cwd).exists()


def test_environment_is_minimal(monkeypatch):
    monkeypatch.setenv("SPSAMP_TEST_SECRET_TOKEN", "hunter2")
    src = (
        "import os, sys\n"
        "assert 'SPSAMP_TEST_SECRET_TOKEN' not in os.environ, 'secret leaked'\n"
        "assert set(os.environ) <= {'PATH', 'LANG', 'HOME', 'TMPDIR', 'PYTHONDONTWRITEBYTECODE', 'SPSAMP_SANDBOX', 'LC_CTYPE'}, sorted(os.environ)\n"
        "assert sys.flags.isolated == 1\n"
    )
    res = run_python(src, FAST)
    assert res.status == "passed", res.output


@pytest.mark.skipif(not as_root, reason="the uid drop happens only when spsamp runs as root")
def test_runs_as_nobody_when_root():
    res = run_python("import os\nassert os.geteuid() == 65534 and os.getegid() == 65534, os.geteuid()\n", FAST)
    assert res.status == "passed", res.output
    assert interpreter() is not None


def test_network_is_refused():
    src = "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))\n"
    assert run_python(src, FAST).status == "blocked"
