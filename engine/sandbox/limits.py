"""Linux isolation of the sandbox: namespaces and read-only mounts for the zygote (inherited
by every child), rlimits, no-new-privs and a seccomp allow-list for each disposable child.

Each step is tried, its success recorded, and what worked is reported as capabilities
(a user's machine may allow less than a server). The seccomp filter is compiled to BPF
once, in the zygote; a child only loads it (two prctl calls), before it reads any input.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import math
import os
import resource
import socket
import time
from typing import Any

log = logging.getLogger(__name__)

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PROT_EXEC = 4
NOBODY = 65534

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2

#: Syscalls a child may make once restricted; everything else fails with EPERM. Enough
#: for CPython, numpy and scipy computing on memory already mapped and talking over the
#: descriptors it already holds: no open/openat/stat of paths, sockets, fork/clone/exec,
#: kill/tgkill (not even of itself), ptrace, process_vm_*, mounts, namespaces, or
#: executable mappings (mmap/mprotect with PROT_EXEC).
ALLOWED_SYSCALLS = (
    "read", "write", "readv", "writev", "close", "lseek", "munmap", "mremap", "brk",
    "madvise", "futex", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack",
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
    "getpid", "gettid", "getrusage", "exit", "exit_group", "getrandom", "sched_yield",
    "restart_syscall", "membarrier", "rseq",
)

_libc = ctypes.CDLL(None, use_errno=True)  # the process's own libc symbols

try:  # imported now: loading it needs files that isolation makes unreachable
    import pyseccomp as _seccomp
    _SECCOMP_ERROR = ""
except (ImportError, RuntimeError, OSError) as _exc:  # no libseccomp on this machine
    _seccomp = None
    _SECCOMP_ERROR = str(_exc)


def _err() -> str:
    return os.strerror(ctypes.get_errno())


def enter_namespaces() -> dict[str, bool]:
    """A new network and mount namespace (with a user namespace when not root)."""
    flags = CLONE_NEWNET | CLONE_NEWNS
    uid, gid = os.geteuid(), os.getegid()
    userns = uid != 0
    if userns:
        flags |= CLONE_NEWUSER
    if _libc.unshare(flags) != 0:
        log.info("sandbox: unshare(net|mount) failed: %s", _err())
        if _libc.unshare(CLONE_NEWNET | (CLONE_NEWUSER if userns else 0)) != 0:
            return {"netns": False, "mountns": False, "userns": False}
        flags = CLONE_NEWNET | (CLONE_NEWUSER if userns else 0)
    if userns:
        try:
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"0 {uid} 1")
            _write("/proc/self/gid_map", f"0 {gid} 1")
        except OSError as exc:
            log.info("sandbox: user namespace id maps failed: %s", exc)
    return {"netns": True, "mountns": bool(flags & CLONE_NEWNS), "userns": userns}


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(text)


def only_loopback() -> bool:
    """True when the process sees no network interface but loopback."""
    try:
        return all(name == "lo" for _, name in socket.if_nameindex())
    except OSError:
        return True


def make_readonly() -> bool:
    """Remount every mount read-only in our (private) mount namespace."""
    if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        log.info("sandbox: making mounts private failed: %s", _err())
        return False
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
        points = [line.split()[1].encode().decode("unicode_escape") for line in fh]
    ok = True
    for point in dict.fromkeys(points):
        try:
            f = os.statvfs(point).f_flag
        except OSError:
            continue
        keep = ((MS_NOSUID if f & os.ST_NOSUID else 0) | (MS_NODEV if f & os.ST_NODEV else 0)
                | (MS_NOEXEC if f & os.ST_NOEXEC else 0)
                | (MS_NOATIME if f & os.ST_NOATIME else 0)
                | (MS_NODIRATIME if f & os.ST_NODIRATIME else 0)
                | (MS_RELATIME if f & os.ST_RELATIME else 0))
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | keep
        if _libc.mount(None, point.encode(), None, flags, None) != 0:
            log.info("sandbox: read-only remount of %s failed: %s", point, _err())
            ok = ok and point != "/"
    return ok


def write_blocked(directory: str = "/tmp") -> bool:
    """True when a file cannot be created in ``directory`` (nothing is left behind)."""
    path = os.path.join(directory, f".eox-sandbox-probe-{os.getpid()}")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return True
    os.close(fd)
    os.unlink(path)
    return False


def drop_privileges() -> bool:
    """Root: become nobody (no capabilities); everyone: not dumpable (no ptrace of us)."""
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    if os.geteuid() != 0:
        return True
    try:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    except OSError as exc:
        log.info("sandbox: dropping to uid %d failed: %s", NOBODY, exc)
        return False
    return os.geteuid() != 0


def set_parent_death_signal(sig: int) -> bool:
    """Have the kernel send ``sig`` to this process when its parent exits (Linux)."""
    return _libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def set_rlimits(*, memory_mb: int, cpu_s: float | None, max_fd: int, calls: int = 1) -> bool:
    """Address space, CPU seconds (hard: ``calls`` x ``cpu_s``; see :func:`arm_cpu`), no
    file writes, no core files, no new processes, no new descriptors above ``max_fd``."""
    limits = {
        resource.RLIMIT_AS: memory_mb * 1024 * 1024,
        resource.RLIMIT_FSIZE: 0,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_NPROC: 0,
        resource.RLIMIT_NOFILE: max_fd + 1,
    }
    ok = True
    for which, value in limits.items():
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            ok = False
    if cpu_s:
        soft = math.ceil(time.process_time() + cpu_s)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, math.ceil(cpu_s * calls) + 1))
    return ok


def arm_cpu(cpu_s: float) -> None:
    """SIGXCPU ``cpu_s`` CPU seconds from now (within the hard limit set at start)."""
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    soft = math.ceil(time.process_time() + cpu_s)
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY
                                             else min(soft, hard), hard))


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class SeccompFilter:
    """The child's seccomp allow-list as BPF, compiled once (in the zygote) by libseccomp.

    ``load()`` is then two prctl calls in a child: no libseccomp work per call.
    """

    def __init__(self) -> None:
        self.error = ""
        self._buffer: ctypes.Array[ctypes.c_char] | None = None
        self._prog: _SockFprog | None = None
        try:
            bpf = _compile_bpf()
        except (OSError, RuntimeError, ValueError) as exc:
            self.error = str(exc)
            return
        self._buffer = ctypes.create_string_buffer(bpf, len(bpf))
        self._prog = _SockFprog(len(bpf) // ctypes.sizeof(_SockFilter),
                                ctypes.addressof(self._buffer))

    @property
    def available(self) -> bool:
        return self._prog is not None

    def load(self) -> bool:
        """No new privileges, then the filter; True when the filter is active."""
        if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or self._prog is None:
            return False
        return _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(self._prog),
                           0, 0) == 0


def _compile_bpf() -> bytes:
    sc = _seccomp
    if sc is None:
        raise RuntimeError(f"seccomp unavailable: {_SECCOMP_ERROR}")
    filt = sc.SyscallFilter(defaction=sc.ERRNO(errno.EPERM))
    arch = sc.system_arch()
    for name in ALLOWED_SYSCALLS:
        try:
            sc.resolve_syscall(arch, name)
        except (ValueError, OSError):
            continue  # not a syscall on this architecture
        filt.add_rule(sc.ALLOW, name)
    no_exec = sc.Arg(2, sc.MASKED_EQ, PROT_EXEC, 0)
    filt.add_rule(sc.ALLOW, "mmap", no_exec)
    filt.add_rule(sc.ALLOW, "mprotect", no_exec)
    filt.add_rule(sc.ALLOW, "prlimit64", sc.Arg(0, sc.EQ, 0))  # its own limits only
    fd = os.memfd_create("eox-bpf", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "rb") as fh:
            filt.export_bpf(fh)
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    bpf = b"".join(chunks)
    if not bpf or len(bpf) % ctypes.sizeof(_SockFilter):
        raise RuntimeError("libseccomp exported no usable BPF program")
    return bpf


def isolate_zygote() -> dict[str, Any]:
    """Namespaces, read-only mounts, no privileges: applied once, inherited by children."""
    caps: dict[str, Any] = {}
    caps.update(enter_namespaces())
    caps["readonly_fs"] = make_readonly() if caps["mountns"] else False
    caps["readonly_fs"] = caps["readonly_fs"] and write_blocked("/tmp")
    caps["network_isolated"] = caps["netns"] and only_loopback()
    os.chdir("/")
    caps["unprivileged"] = drop_privileges()
    return caps


def probe_blocked(parent_pid: int) -> dict[str, bool]:
    """Run in a restricted child: try what must be impossible; True means refused."""

    def refused(action: Any) -> bool:
        try:
            action()
        except OSError:
            return True
        return False

    def fork() -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)

    return {
        "open": refused(lambda: os.close(os.open("/proc/self/status", os.O_RDONLY))),
        "listdir": refused(lambda: os.listdir("/")),
        "write": refused(lambda: os.close(os.open(
            f"/tmp/.eox-probe-{os.getpid()}", os.O_WRONLY | os.O_CREAT, 0o600))),
        "socket": refused(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()),
        "fork": refused(fork),
        "exec": refused(lambda: os.execv("/bin/true", ["true"])),
        "signal_parent": refused(lambda: os.kill(parent_pid, 0)),
    }
