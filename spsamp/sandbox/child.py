"""The sandbox child: run one program under the audit hook and report how it ended.

Never imported by spsamp: :mod:`spsamp.sandbox` passes this file's text to ``python -I -c`` with two
arguments: ``guard`` or ``off`` (whether the containment rules of the hook apply; the verdict rules
always do), and ``uid:gid`` to drop to before anything else (as root; ``-`` otherwise) — dropping
after exec leaves the process non-dumpable, so processes of the same uid cannot read its memory.
It must run on any CPython 3.11+, standard library only.

Protocol. stdin carries one line with the run's secret (32 hex digits), then the program source;
it is read to the end and replaced by /dev/null before the program runs. Exit codes: 11 failed,
12 syntax error, 13 resource limit, 14 blocked. A pass is exit 0 *and* the line
``SPSAMP-SANDBOX-DONE-<secret>`` on stdout, written by the hook itself.

Why the program cannot forge that line: the secret exists only as a constant inside the hook's
code object (compiled here from text, then dropped). No frame, global or closure variable holds
it, and the hook refuses every Python route to that code object: ``f_code`` of the hook's frames
and ``__code__`` of its functions (recognised by their private globals dict), ``gc``
introspection, ``function.__new__``, ``ctypes``, opening ``/proc/*/mem``, adding
another audit hook. The hook writes the line only when the ``spsamp.pass`` event comes from this
bootstrap's own frame at its last line, which it reaches only after ``exec`` of the program
returned. Until then
the hook also refuses frame introspection (tracebacks' ``tb_frame``, generators' frames,
``f_code``, ``sys._getframe``, ``sys._current_frames``, tracing and profiling).
"""

import os
import sys

EXIT_FAILED, EXIT_SYNTAX, EXIT_RESOURCE, EXIT_BLOCKED = 11, 12, 13, 14

# Compiled with the marker in place of @MARK@. Every name the hook uses is a closure variable bound
# here, before the program runs: a program that replaces builtins or os functions cannot make the
# hook call its code, and the hook's globals are an empty private dict.
HOOK_SOURCE = r'''
def make(main, pass_line, private, root, guard, frame_type, function_type, getframe, write, exit_, realpath,
         perm_error, value_error, str_, bytes_, int_, type_, frozenset_, len_):
    blocked = 0
    reported = False
    always = frozenset_({
        "sys.addaudithook", "sys.settrace", "sys.setprofile", "sys._current_frames", "sys._current_exceptions",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents", "function.__new__",
        "sys.remote_exec", "builtins.breakpoint"})
    frames = frozenset_({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_code"})
    policy = frozenset_({
        "os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
        "os.kill", "os.killpg", "pty.spawn", "os.chroot", "os.setuid", "os.setgid", "resource.setrlimit",
        "resource.prlimit", "webbrowser.open", "os.startfile", "os.pidfd_open"})
    # events whose first path / first two paths must lie in the sandbox dir (immutable: a signal
    # handler that catches the hook's frame sees its variables)
    one_path = frozenset_({"os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.utime",
                           "shutil.rmtree", "os.chflags", "os.lchmod", "os.setxattr", "os.removexattr"})
    two_paths = frozenset_({"os.rename", "os.link", "os.symlink", "shutil.copyfile", "shutil.move"})
    write_flags = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000  # O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND
    memory_files = frozenset_({"mem", "kmem", "kcore", "pagemap"})

    def text(path):
        """The path as str, or None when it is not a plain str / bytes (a path-like object would
        run the program's __fspath__ here, and could answer differently than it did to open())."""
        if type_(path) is str_:
            return path
        if type_(path) is bytes_:
            return bytes_.decode(path, "utf-8", "surrogateescape")
        return None

    def last_part(p):
        parts = [x for x in p.split("/") if x and x != "."]
        return parts[-1] if parts else ""

    def reads_memory(p):
        """Paths that reach this process's memory or descriptors: /proc/<pid>/mem and friends."""
        if last_part(p) in memory_files:
            return True
        for q in (p, realpath(p)):
            if last_part(q) in memory_files:
                return True
            if q.startswith("/proc/"):
                parts = q.split("/")
                if len_(parts) > 3 and parts[3] in ("fd", "map_files", "fdinfo"):
                    return True
        return False

    def inside(p):
        r = realpath(p)
        return r == root or r.startswith(root + "/")

    def refuse(event, soft=False):
        nonlocal blocked
        if soft:
            raise value_error("sandbox: " + event + " is not available")
        blocked += 1
        raise perm_error("sandbox: " + event + " is not allowed")

    def from_bootstrap():
        try:
            return getframe(2) is main  # 0: here, 1: hook, 2: whoever raised the event
        except value_error:  # the hook refuses frames other than the bootstrap's, to itself too
            return False

    def hook(event, args):
        nonlocal reported
        if type_(event) is not str_:
            refuse("an audit event named by a non-str")
        if event == "object.__getattr__":
            obj, name = args[0], args[1]
            if type_(name) is not str_:
                refuse("object.__getattr__")
            # the hook's own code holds the secret: never handed out, not even after the report
            if name == "f_code" and type_(obj) is frame_type and obj.f_globals is private:
                refuse("object.__getattr__ f_code")
            if name == "__code__" and type_(obj) is function_type and obj.__globals__ is private:
                refuse("object.__getattr__ __code__")
            if name in frames and not reported:
                refuse("object.__getattr__ " + name)
            return
        if event == "sys._getframe":
            if args[0] is main or reported:
                return
            refuse(event, soft=True)  # ValueError: what the stdlib expects where frames are unavailable
        if event in always or event.startswith("ctypes."):
            refuse(event)
        if event == "import":
            name = args[0]
            if type_(name) is not str_ or name == "ctypes" or name.startswith(("ctypes.", "_ctypes", "_test")):
                refuse("import " + str_(name) if type_(name) is str_ else "import")
            return
        if event == "open":
            path, mode, flags = args[0], args[1], args[2]
            if type_(path) is int_:
                return  # a descriptor already open: its opening was checked
            p = text(path)
            if p is None:
                refuse("open of a path that is not a str, bytes or descriptor")
            if reads_memory(p):
                refuse("open " + p)
            if guard:
                writes = (type_(mode) is str_ and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)) or (
                    type_(flags) is int_ and flags & write_flags)
                if writes and not inside(p):
                    refuse("open " + p + " for writing")
            return
        if event in ("os.symlink", "os.link"):
            target = text(args[0])
            if target is None or reads_memory(target):
                refuse(event)
        if event == "spsamp.pass":
            # from the bootstrap, at its last line: the program's code may run while the bootstrap's
            # frame is on top (a finalizer, a weakref or signal callback calling sys.audit), but
            # the bootstrap reaches that line only after the program returned
            if not from_bootstrap() or main.f_lineno != pass_line:
                refuse(event)
            if blocked:
                exit_(14)
            if not reported:
                write(1, b"\n@MARK@\n")
                exit_(0)
            return
        if event == "spsamp.report":
            if not from_bootstrap():
                refuse(event)
            reported = True
            args[0][0] = blocked
            return
        if not guard:
            return
        if event in policy or event.startswith("socket."):
            refuse(event)
        n = 2 if event in two_paths else 1 if event in one_path else 0
        if n:
            for p in args[:n]:
                if type_(p) is int_:
                    continue
                t = text(p)
                if t is None or not inside(t):
                    refuse(event)

    return hook
'''


def _read_stdin() -> bytes:
    chunks = []
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return b"".join(chunks)


def _hook(secret: str, main, guard: bool):
    """The audit hook, compiled with the marker; the text holding the secret is dropped on return."""
    if len(secret) != 32 or any(c not in "0123456789abcdef" for c in secret):
        os._exit(EXIT_FAILED)
    private = {"__builtins__": {}}
    exec(compile(HOOK_SOURCE.replace("@MARK@", "SPSAMP-SANDBOX-DONE-" + secret), "<sandbox hook>", "exec"), private)
    make = private.pop("make")
    last_line = max(line for _, _, line in main.f_code.co_lines() if line is not None)
    return make(main, last_line, private, os.path.realpath(os.getcwd()), guard, type(main), type(make), sys._getframe,
                os.write, os._exit, os.path.realpath, PermissionError, ValueError, str, bytes, int, type, frozenset, len)


_exit = os._exit  # bound before the program runs: it may replace os._exit


def _report(exc: BaseException, blocked: int, source: str) -> None:
    """Say how the program failed and exit with the matching code."""
    import errno

    if isinstance(exc, MemoryError):
        sys.stderr.write("MemoryError\n")
        _exit(EXIT_RESOURCE)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        sys.stderr.write(f"OSError: {os.strerror(exc.errno)} (the sandbox's disk budget)\n")
        _exit(EXIT_RESOURCE)
    if isinstance(exc, SystemExit):  # any exit before the end is not a pass, sys.exit(0) included
        sys.stderr.write(f"SystemExit({exc.code!r}) before the program ended\n")
    else:
        sys.stderr.write(_traceback(exc, source))
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    _exit(EXIT_BLOCKED if blocked else EXIT_FAILED)


def _traceback(exc: BaseException, source: str) -> str:
    """The exception and its chain, formatted like Python's traceback but without the hook's frames
    (whose code the hook keeps hidden even now) and without running the program's code."""
    lines = source.splitlines()
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen and len(chain) < 8:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    out = []
    for i, e in enumerate(reversed(chain)):
        if i:
            out.append("\nDuring handling of the above exception, another exception occurred:\n\n")
        out.append("Traceback (most recent call last):\n")
        tb = e.__traceback__
        while tb is not None:
            try:
                code = tb.tb_frame.f_code
                where = f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}\n'
                if code.co_filename == "program.py" and 0 < tb.tb_lineno <= len(lines):
                    where += "    " + lines[tb.tb_lineno - 1].strip() + "\n"
            except PermissionError:
                where = "  File \"<sandbox hook>\"\n"
            out.append(where)
            tb = tb.tb_next
        try:
            text = str(e)
        except BaseException:
            text = "<unprintable>"
        out.append(f"{type(e).__name__}: {text}\n" if text else f"{type(e).__name__}\n")
    return "".join(out)


def main() -> None:
    import builtins
    import types  # noqa: F401  its import reads a traceback's tb_frame, which the hook refuses to the program

    head, _, body = _read_stdin().partition(b"\n")
    if sys.argv[2] != "-":
        try:
            uid, gid = (int(x) for x in sys.argv[2].split(":"))
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        except (OSError, OverflowError, ValueError) as exc:  # no check may run as root: say so on a line the program cannot write
            os.write(1, b"\nSPSAMP-SANDBOX-SETUP-" + head + b"\n" + f"dropping to {sys.argv[2]}: {exc}\n".encode())
            os._exit(EXIT_FAILED)
    sys.dont_write_bytecode = True  # imports must not try to write __pycache__ (outside the sandbox dir)
    guard = sys.argv[1] == "guard"
    source = body.decode("utf-8", errors="replace")
    del body
    try:
        code = compile(source, "program.py", "exec")
    except (SyntaxError, ValueError) as exc:
        print(f"SyntaxError: {exc}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(EXIT_SYNTAX)
    hook = _hook(head.decode("ascii", errors="replace"), sys._getframe(), guard)
    del head
    audit = sys.audit
    sys.addaudithook(hook)
    del hook
    try:
        exec(code, {"__name__": "__main__", "__builtins__": builtins})
    except BaseException as exc:
        box = [0]
        audit("spsamp.report", box)
        _report(exc, box[0], source)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    audit("spsamp.pass")  # the last line (the hook checks): exit 0 with the marker, or 14 when something was refused


if __name__ == "__main__":
    main()
    _exit(EXIT_FAILED)
