"""Kernel layers of the sandbox: namespaces, read-only mounts, a size-limited tmpfs, uid drop, rlimits.

Everything here runs in the forked child before ``exec`` (``preexec_fn``). A :class:`Plan` says
which layers to set up; :func:`plans` lists them strongest first for this process, and the caller
falls back to the next one when a plan cannot be set up on this machine (a container without
``CAP_SYS_ADMIN``, a kernel that refuses unprivileged user namespaces).

- **Namespaces**: as root ``unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC)``; as a normal
  user the same inside a new user namespace (``CLONE_NEWUSER``, the user's uid mapped to itself).
  The new network namespace has only a loopback device, down: no address is reachable, 127.0.0.1
  included. Python 3.11 has no ``os.unshare``, so libc is called through ctypes (in the parent's
  import; the child only calls it).
- **Mounts** (in the private mount namespace): every mount outside /proc, /sys and /dev (but
  /dev/shm and /dev/mqueue) is remounted read-only, and a tmpfs of ``disk_mb`` / ``files`` inodes
  is mounted on the sandbox dir: the only place the program can write, with a hard total budget.
- **User**: as root the child drops to ``nobody`` — not here but first thing after ``exec``
  (:mod:`spsamp.sandbox.child`): a process whose uid changed after exec is not dumpable, so no other
  ``nobody`` process (one the program might start past the audit hook) may read its memory through
  ``/proc/<pid>/mem`` or ptrace.
- **rlimits** last, so they bind the unprivileged process.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from typing import Callable, Optional

SANDBOX_UID = 65534  # nobody: the uid untrusted code runs as when spsamp runs as root
SANDBOX_GID = 65534

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x08000000, 0x10000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1 << 18, 1 << 21, 1 << 24
_OPTION_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
                 "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
_WRITABLE_UNDER_DEV = ("/dev/shm", "/dev/mqueue")


@dataclass(frozen=True)
class Plan:
    """Which kernel layers one run gets. ``namespaces``: ``root`` (unshare as root), ``user``
    (inside an unprivileged user namespace) or ``none``; ``mounts``: read-only mounts and the
    tmpfs (else the parent watches the sandbox dir's size)."""

    namespaces: str
    mounts: bool

    @property
    def net_isolated(self) -> bool:
        return self.namespaces != "none"

    def describe(self) -> str:
        if self.namespaces == "none":
            return "no namespaces: network refused by the audit hook only, disk budget by a watcher"
        ns = "network/mount/IPC namespaces" + (" in a user namespace" if self.namespaces == "user" else "")
        disk = "read-only mounts + tmpfs budget" if self.mounts else "disk budget by a watcher"
        return f"{ns}, {disk}"


def plans(as_root: bool) -> list[Plan]:
    ns = "root" if as_root else "user"
    return [Plan(ns, True), Plan(ns, False), Plan("none", False)]


class PlanUnavailable(RuntimeError):
    """This platform cannot set up the plan at all (no libc ``unshare`` / ``mount``)."""


_libc = None


def _load_libc():
    global _libc
    if _libc is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if not (hasattr(libc, "unshare") and hasattr(libc, "mount")):
            raise PlanUnavailable("no unshare/mount in libc")
        libc.unshare.argtypes = [ctypes.c_int]
        libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        _libc = (libc, ctypes)
    return _libc


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def writable_mounts() -> list[tuple[str, int]]:
    """(mount point, flags to keep) of every read-write mount the child should see read-only:
    all but /proc, /sys and /dev (except /dev/shm, /dev/mqueue), the topmost mount per path."""
    try:
        lines = open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape").read().splitlines()
    except OSError:
        return []
    found: dict[str, tuple[str, int]] = {}
    for line in lines:
        fields = line.split()
        if len(fields) < 6:
            continue
        point, options = _unescape(fields[4]), fields[5].split(",")
        special = any(point == p or point.startswith(p + "/") for p in ("/proc", "/sys", "/dev"))
        if special and not any(point == p or point.startswith(p + "/") for p in _WRITABLE_UNDER_DEV):
            continue
        if "ro" in options:
            found.pop(point, None)  # a read-only mount on top hides the one below
            continue
        flags = 0
        for opt in options:
            flags |= _OPTION_FLAGS.get(opt, 0)
        found[point] = (point, flags)  # later lines are mounted on top of earlier ones
    return list(found.values())


@dataclass(frozen=True)
class ChildSetup:
    """What the child does between fork and exec for one run; on failure it writes the failed
    step to ``report_fd`` (the parent logs it and falls back to the next plan)."""

    plan: Plan
    workdir: bytes
    as_root: bool
    rlimits: tuple
    tmpfs_options: bytes
    mounts: tuple  # (mount point as bytes, flags to keep)
    report_fd: int

    def __call__(self) -> None:
        step = "start"
        try:
            step = self._namespaces()
            if self.plan.mounts:
                step = self._mounts()
            step = "rlimits"
            for res, value in self.rlimits:
                resource.setrlimit(res, value)
        except BaseException as exc:
            try:
                os.write(self.report_fd, f"{step}: {exc}".encode()[:400])
            except OSError:
                pass
            raise

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            _, ctypes = _load_libc()
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def _namespaces(self) -> str:
        if self.plan.namespaces == "none":
            return "namespaces"
        libc, _ = _load_libc()
        flags = CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC
        if self.plan.namespaces == "user":
            uid, gid = os.getuid(), os.getgid()
            self._check(libc.unshare(flags | CLONE_NEWUSER), "unshare(user, net, mount, ipc)")
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as fh:
                    fh.write(text)
        else:
            self._check(libc.unshare(flags), "unshare(net, mount, ipc)")
        return "mounts"

    def _mounts(self) -> str:
        libc, _ = _load_libc()
        self._check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
        for point, keep in self.mounts:
            rc = libc.mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep, None)
            if rc != 0:
                _, ctypes = _load_libc()
                # ENOENT / ENOTDIR: hidden under another mount; EACCES: not even root may enter it
                # (another user's FUSE mount), so neither may the sandbox user
                if ctypes.get_errno() in (2, 13, 20):
                    continue
                self._check(rc, "remount " + os.fsdecode(point) + " read-only")
        self._check(libc.mount(b"tmpfs", self.workdir, b"tmpfs", MS_NOSUID | MS_NODEV, self.tmpfs_options),
                    "mount tmpfs on the sandbox dir")
        os.chdir(self.workdir)  # the cwd set before this still points at the directory under the tmpfs
        return "after mounts"


def child_setup(plan: Plan, workdir: str, as_root: bool, rlimits: tuple, disk_bytes: int, files: int,
                report_fd: int) -> Callable[[], None]:
    """The child's setup for ``plan``; everything it needs is prepared here, in the parent, so the
    forked child allocates as little as possible before exec."""
    if plan.namespaces != "none":
        _load_libc()  # ctypes must be loaded before fork: the child only calls into it
    owner = (SANDBOX_UID, SANDBOX_GID) if as_root else (os.getuid(), os.getgid())
    options = f"size={disk_bytes},nr_inodes={files},mode=0700,uid={owner[0]},gid={owner[1]}".encode()
    mounts = tuple((os.fsencode(p), keep) for p, keep in writable_mounts()) if plan.mounts else ()
    return ChildSetup(plan, os.fsencode(workdir), as_root, rlimits, options, mounts, report_fd)


def tmpfs_usage(pid: int, workdir: str) -> Optional[tuple[int, int]]:
    """(free bytes, free inodes) of the child's tmpfs, seen through /proc/<pid>/root; None once gone."""
    try:
        st = os.statvfs(f"/proc/{pid}/root{workdir}")
    except OSError:
        return None
    return st.f_bavail * st.f_frsize, st.f_favail


def dir_usage(path: str, max_files: int) -> tuple[int, int]:
    """(bytes allocated, entries) under ``path``, not following links; stops counting past ``max_files``."""
    total, count, stack = 0, 0, [path]
    while stack and count <= max_files:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    count += 1
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total, count


__all__ = ["Plan", "PlanUnavailable", "SANDBOX_GID", "SANDBOX_UID", "child_setup", "dir_usage", "plans", "tmpfs_usage",
           "writable_mounts"]
