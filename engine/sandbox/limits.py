"""Linux isolation of a sandbox worker: namespaces, read-only mounts, rlimits, seccomp.

Each step is tried, its success recorded, and what worked is reported as capabilities
(a user's machine may allow less than a server). Called by the worker once, after it
has imported everything it needs and before it runs any user code.
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
PR_SET_DUMPABLE = 4
PROT_EXEC = 4
NOBODY = 65534

#: Syscalls a worker may make once isolated; everything else fails with EPERM.
#: Enough for CPython, numpy and scipy compute on memory already mapped; no file
#: opening, sockets, process creation, exec, ptrace, mounts or namespace changes.
ALLOWED_SYSCALLS = (
    "read", "write", "readv", "writev", "pread64", "close", "fstat", "newfstatat", "lseek",
    "munmap", "mremap", "brk", "madvise", "futex", "rt_sigaction", "rt_sigprocmask",
    "rt_sigreturn", "sigaltstack", "clock_gettime", "clock_getres", "clock_nanosleep",
    "nanosleep", "gettimeofday", "time", "getpid", "gettid", "getppid", "getuid", "geteuid",
    "getgid", "getegid", "getrusage", "getrlimit", "setrlimit", "exit", "exit_group", "poll",
    "ppoll", "select", "pselect6", "getrandom", "sched_yield", "sched_getaffinity",
    "restart_syscall", "getcwd", "uname", "sysinfo", "membarrier", "rseq",
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


def set_rlimits(*, memory_mb: int) -> bool:
    """Address space, no file writes, no core files, no new processes, no new fds."""
    fds = [int(n) for n in os.listdir("/proc/self/fd")]
    limits = {
        resource.RLIMIT_AS: memory_mb * 1024 * 1024,
        resource.RLIMIT_FSIZE: 0,
        resource.RLIMIT_CORE: 0,
        resource.RLIMIT_NPROC: 0,
        resource.RLIMIT_NOFILE: max(fds) + 1,
    }
    ok = True
    for which, value in limits.items():
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError) as exc:
            log.info("sandbox: setrlimit(%s) failed: %s", which, exc)
            ok = False
    return ok


def set_cpu_limit(seconds: float | None) -> None:
    """Soft CPU limit ``seconds`` from now (SIGXCPU kills the worker), or none."""
    if seconds is None:
        resource.setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY,
                                                 resource.RLIM_INFINITY))
        return
    now = time.process_time()
    resource.setrlimit(resource.RLIMIT_CPU, (math.ceil(now + seconds), resource.RLIM_INFINITY))


def install_seccomp() -> bool:
    """Load the syscall allowlist (default: EPERM); True when the filter is active."""
    sc = _seccomp
    if sc is None:
        log.info("sandbox: seccomp unavailable: %s", _SECCOMP_ERROR)
        return False
    try:
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
        filt.add_rule(sc.ALLOW, "prlimit64", sc.Arg(0, sc.EQ, 0))  # own limits only
        filt.add_rule(sc.ALLOW, "tgkill", sc.Arg(0, sc.EQ, os.getpid()))  # abort()
        filt.load()
    except OSError as exc:
        log.info("sandbox: loading the seccomp filter failed: %s", exc)
        return False
    return True


def _syscall_blocked() -> dict[str, bool]:
    """Try what the filter must forbid; True means refused."""
    out = {}
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
        out["socket"] = False
    except OSError:
        out["socket"] = True
    out["write"] = write_blocked("/tmp") and write_blocked("/dev/shm")
    try:
        pid = os.fork()
    except OSError:
        out["fork"] = True
    else:
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        out["fork"] = False
    return out


def isolate(*, memory_mb: int) -> dict[str, Any]:
    """Apply every isolation this machine allows; return what is enforced (verified)."""
    caps: dict[str, Any] = {}
    caps.update(enter_namespaces())
    caps["readonly_fs"] = make_readonly() if caps["mountns"] else False
    caps["readonly_fs"] = caps["readonly_fs"] and write_blocked("/tmp")
    caps["network_isolated"] = caps["netns"] and only_loopback()
    os.chdir("/")
    caps["unprivileged"] = drop_privileges()
    caps["rlimits"] = set_rlimits(memory_mb=memory_mb)
    caps["seccomp"] = install_seccomp()
    blocked = _syscall_blocked()
    caps["blocked"] = blocked
    # What a user function could do if it escaped the Python-level checks:
    caps["no_network"] = blocked["socket"] or caps["network_isolated"]
    caps["no_fs_write"] = blocked["write"]
    caps["no_subprocess"] = blocked["fork"]
    return caps
