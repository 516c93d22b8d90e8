"""The zygote: a single-threaded fork server that forks one disposable child per call.

Started by :class:`engine.sandbox.pool.SandboxPool` with a clean environment (no
secrets, no settings). It imports numpy/scipy and the curated namespaces, warms them up,
compiles the seccomp filter, enters its namespaces (network, mount; read-only mounts;
uid nobody) and then only ever receives *fork requests*: three descriptors (the call's
socket, its input segment, an empty output segment) and their sizes. It never sees a
user's source, arguments or pixels, so a child (a copy of the zygote) holds nothing of
any other call.

A child closes every other descriptor, maps its two segments, applies rlimits,
no-new-privs and the seccomp allow-list, and only then reads its call from its socket,
runs it and writes the answer; it exits after ``calls`` calls (1 by default; more only
for further calls of the very same function and arguments, see SandboxPool) or when the
parent closes its socket. The zygote reaps children, kills those past their
deadline, and reports every exit status to the parent.

Control protocol (SOCK_SEQPACKET, one JSON object per packet): parent -> zygote
``{"op": "fork", "id", "in_size", "out_size", "calls", "lifetime_s"}`` + 3 fds,
``{"op": "kill", "pid"}``; zygote -> parent ``{"id", "pid"}``, ``{"exit": pid, "status"}``.
"""

from __future__ import annotations

import gc
import json
import mmap
import os
import select
import signal
import socket
import sys
import time
from typing import Any, NoReturn

from engine.sandbox import limits
from engine.sandbox.worker import Reader, Runner, load_code, write_message

CONTROL_MAX = 1 << 16
#: Descriptor numbers a child's call socket, input and output segment are moved to.
CHAN_FD, IN_FD, OUT_FD = 3, 4, 5
#: How often the zygote re-checks its parent when no pidfd can watch it, and re-sends
#: SIGKILL to a child past its deadline that has not been reaped yet.
RECHECK_S = 1.0


def watch_parent(parent: int) -> int | None:
    """A pidfd that becomes readable when ``parent`` exits (None: poll ``getppid``).

    PR_SET_PDEATHSIG cannot be used for the zygote: it fires when the *thread* that
    started it exits, and pools start their zygote from short-lived threads.
    """
    try:
        fd: int | None = os.pidfd_open(parent)
    except (AttributeError, OSError):
        fd = None
    if os.getppid() != parent:  # gone before we opened it: the pid may be another's now
        if fd is not None:
            os.close(fd)
        raise ParentGone
    return fd


class ParentGone(Exception):
    """The process that started the zygote exited."""


def _vm_size_mb() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) // 1024
    return 0


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


class Zygote:
    """The fork server's state (everything here is inherited by each child)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.memory_mb = int(config["memory_mb"])
        self.cpu_s = float(config["cpu_s"]) if config.get("cpu_s") else None
        self.isolate = bool(config.get("isolate", True))
        self.runner = Runner(tuple(config["allowed_imports"]))
        need = _vm_size_mb() + 2 * int(config["max_array_mb"]) + 64
        if self.isolate and self.memory_mb < need:
            raise MemoryError(f"memory_mb={self.memory_mb} leaves no room: a call needs "
                              f"about {need} MB (the zygote's imports plus its input and "
                              "output segments); raise memory_mb or lower max_array_mb")
        self.filter = limits.SeccompFilter()
        self.children: dict[int, float] = {}
        self.pid = os.getpid()
        caps: dict[str, Any] = {"isolated": False}
        if self.isolate:
            caps = limits.isolate_zygote()
            caps["isolated"] = True
        caps["seccomp"] = self.isolate and self.filter.available
        if self.filter.error:
            caps["seccomp_error"] = self.filter.error
        caps["zygote_threads"] = _threads()
        caps.update(self._probe())
        self.capabilities = caps
        gc.collect()
        gc.freeze()  # children then never touch the zygote's objects to scan them

    # -- children -------------------------------------------------------------------------
    def _restrict(self, max_fd: int, calls: int = 1) -> dict[str, bool]:
        """In a child: rlimits, no-new-privs and seccomp (what worked)."""
        if not self.isolate:
            return {"rlimits": False, "seccomp_loaded": False}
        rl = limits.set_rlimits(memory_mb=self.memory_mb, cpu_s=self.cpu_s, max_fd=max_fd,
                                calls=calls)
        return {"rlimits": rl, "seccomp_loaded": self.filter.load()}

    def _probe(self) -> dict[str, Any]:
        """Fork one child restricted like a call's and report what it could not do."""
        r, w = os.pipe()
        me = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                applied = self._restrict(max_fd=w)
                blocked = limits.probe_blocked(me) if self.isolate else {}
                os.write(w, json.dumps({**applied, "blocked": blocked}).encode())
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as fh:
            data = fh.read()
        os.waitpid(pid, 0)
        try:
            found = json.loads(data)
        except ValueError:
            found = {"rlimits": False, "seccomp_loaded": False, "blocked": {}}
        blocked = found.get("blocked", {})
        caps = {"rlimits": bool(found.get("rlimits")), "blocked": blocked}
        caps["seccomp"] = bool(found.get("seccomp_loaded"))
        caps["no_network"] = bool(blocked.get("socket"))
        caps["no_fs_write"] = bool(blocked.get("write"))
        caps["no_fs_read"] = bool(blocked.get("open")) and bool(blocked.get("listdir"))
        caps["no_subprocess"] = bool(blocked.get("fork")) and bool(blocked.get("exec"))
        caps["no_signals"] = bool(blocked.get("signal_parent"))
        return caps

    def fork(self, fds: list[int], msg: dict[str, Any]) -> int:
        """Fork the child of one call; the zygote keeps none of its descriptors."""
        try:
            pid = os.fork()
        except OSError:
            pid = -1
        if pid == 0:
            self._child(fds, msg)
        for fd in fds:
            os.close(fd)
        if pid > 0:
            self.children[pid] = time.monotonic() + float(msg.get("lifetime_s", 60))
        return pid

    def _child(self, fds: list[int], msg: dict[str, Any]) -> NoReturn:
        status = 3  # whatever happens, the child never returns into the zygote's code
        try:
            # Die with the zygote (single-threaded, so "the parent thread" is the zygote
            # itself): a call process never outlives it, even if it is SIGKILLed.
            limits.set_parent_death_signal(signal.SIGKILL)
            if os.getppid() != self.pid:
                status = 5
                raise SystemExit(status)
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd, target in zip(fds, (CHAN_FD, IN_FD, OUT_FD), strict=True):
                os.dup2(fd, target + 100)
            for fd, target in zip(fds, (CHAN_FD, IN_FD, OUT_FD), strict=True):
                os.dup2(target + 100, target)
            os.closerange(OUT_FD + 1, 1 << 20)  # the zygote's socket and everything else
            in_size, out_size = int(msg["in_size"]), int(msg["out_size"])
            rw = mmap.PROT_READ | mmap.PROT_WRITE
            in_buf = mmap.mmap(IN_FD, in_size, flags=mmap.MAP_SHARED, prot=rw)
            out_buf = mmap.mmap(OUT_FD, out_size, flags=mmap.MAP_SHARED, prot=rw)
            os.close(IN_FD)
            os.close(OUT_FD)
            calls = max(1, int(msg.get("calls", 1)))
            applied = self._restrict(max_fd=CHAN_FD, calls=calls)
            if self.isolate and not all(applied.values()) and self.capabilities["seccomp"]:
                status = 4  # restrictions that worked at start failed now: run nothing
                raise SystemExit(status)
            reader = Reader(CHAN_FD)
            np = self.runner.np
            defaults = np.geterr()
            code = None
            for _ in range(calls):  # calls of ONE function (same code and arguments)
                call = reader.read()
                if call is None:
                    break
                if code is None:
                    code = load_code(call)  # only the first message carries it
                np.random.seed()  # a fresh stream and default error handling per call
                np.seterr(**defaults)
                if self.cpu_s and self.isolate:
                    limits.arm_cpu(self.cpu_s)
                write_message(CHAN_FD, self.runner.run(call, in_buf, out_buf, code))
            status = 0
        finally:
            os._exit(status)

    # -- the loop -------------------------------------------------------------------------
    def serve(self, ctrl: socket.socket, parent: int | None = None,
              parent_fd: int | None = None) -> None:
        """Handle fork/kill requests until the parent closes the control socket or exits
        (``parent_fd``: a pidfd of ``parent``; without one ``getppid`` is polled)."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        poller = select.poll()
        poller.register(ctrl.fileno(), select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        if parent_fd is not None:
            poller.register(parent_fd, select.POLLIN)
        try:
            while self._serve_once(ctrl, poller, wake_r, parent, parent_fd):
                pass
        finally:
            self._kill_all()

    def _serve_once(self, ctrl: socket.socket, poller: Any, wake_r: int, parent: int | None,
                    parent_fd: int | None) -> bool:
        """One round of the loop; False when the zygote must stop."""
        soonest = min(self.children.values(), default=None)
        timeout = None if soonest is None else max(0.0, (soonest - time.monotonic()) * 1000)
        if parent is not None and parent_fd is None:  # no pidfd: look at the parent anyway
            timeout = RECHECK_S * 1000 if timeout is None else min(timeout, RECHECK_S * 1000)
        for fd, _ in poller.poll(timeout):
            if fd == wake_r:
                while True:
                    try:
                        if not os.read(wake_r, 512):
                            break
                    except BlockingIOError:
                        break
            elif fd == parent_fd:
                return False  # the parent exited without closing its socket (yet)
            elif not self._request(ctrl):
                return False
        if parent is not None and os.getppid() != parent:
            return False
        if not self._reap(ctrl):
            return False
        now = time.monotonic()
        for pid, deadline in list(self.children.items()):
            if now > deadline:
                self._kill(pid)
                # not reaped yet (dying): send again later instead of polling with a
                # zero timeout, which would spin the zygote until the child is gone
                self.children[pid] = now + RECHECK_S
        return True

    def _request(self, ctrl: socket.socket) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(ctrl, CONTROL_MAX, 3)
        except OSError:
            return False
        if not data:
            for fd in fds:
                os.close(fd)
            return False
        msg = json.loads(data)
        if msg.get("op") == "fork" and len(fds) == 3:
            pid = self.fork(fds, msg)
            return _send(ctrl, {"id": msg.get("id"), "pid": pid})
        for fd in fds:
            os.close(fd)
        if msg.get("op") == "kill":
            self._kill(int(msg.get("pid", 0)))
        return True

    def _kill(self, pid: int) -> None:
        # Only our own unreaped children: their pid cannot have been reused.
        if pid in self.children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _reap(self, ctrl: socket.socket) -> bool:
        """Reap exited children and report them; False when the parent is unreachable."""
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == 0:
                return True
            self.children.pop(pid, None)
            if not _send(ctrl, {"exit": pid, "status": status}):
                return False
        return True

    def _kill_all(self) -> None:
        for pid in list(self.children):
            self._kill(pid)
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _send(ctrl: socket.socket, message: dict[str, Any]) -> bool:
    """Send one control message; False when the parent is gone (its socket closed)."""
    try:
        ctrl.send(json.dumps(message).encode())
    except OSError:
        return False
    return True


def main() -> int:
    """Start-up handshake, isolation, then the fork loop until the parent goes away."""
    ctrl = socket.socket(fileno=int(sys.argv[1]))
    parent = int(sys.argv[2]) if len(sys.argv) > 2 else None
    try:
        parent_fd = watch_parent(parent) if parent is not None else None
    except ParentGone:
        return 1
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    os.close(null)
    config = json.loads(ctrl.recv(CONTROL_MAX) or b"{}")
    try:
        zygote = Zygote(config)
    except BaseException as exc:  # noqa: BLE001 - report why start-up failed, then exit
        ctrl.send(json.dumps({"ready": False, "message": f"{type(exc).__name__}: {exc}"[:2000]})
                  .encode())
        return 1
    if not _send(ctrl, {"ready": True, "pid": os.getpid(),
                        "capabilities": zygote.capabilities}):
        return 1
    zygote.serve(ctrl, parent, parent_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
