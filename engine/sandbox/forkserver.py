"""The parent's side of the zygote (:mod:`engine.sandbox.zygote`) and of one call's child.

:class:`ForkServer` starts the zygote with a clean environment and talks to it over a
SOCK_SEQPACKET socket: fork requests carrying three descriptors, kill requests, and the
zygote's answers (a child's pid, a child's exit status) read by one background thread.
:class:`Call` is one call's private resources: an input segment holding only this call's
pixels, an empty output segment, and a stream socket to the child. Nothing the child
sends is trusted beyond a small JSON answer that the caller validates.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import mmap
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import FunctionFailed, FunctionRejected, SandboxError, SandboxLimitExceeded
from engine.sandbox.worker import HEADER, MAX_MESSAGE, frame, sanitize

log = logging.getLogger(__name__)

_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])
#: Zygote entry point. ``engine`` is stubbed as a bare package so that its __init__
#: (the notebook API: catalog, pandas, rasterio...) is not imported into the zygote:
#: fewer modules mapped, faster forks, less reachable code.
_BOOT = ("import sys, types; m = types.ModuleType('engine'); m.__path__ = [{path!r}]; "
         "sys.modules['engine'] = m; from engine.sandbox.zygote import main; sys.exit(main())")
_MB = 1024 * 1024
_CONTROL_MAX = 1 << 16


class ChildDied(Exception):
    """The child (or the zygote) exited or closed its socket."""


class StartRefused(SandboxError):
    """The zygote refused its configuration (retrying cannot help)."""


def _env() -> dict[str, str]:
    return {
        "PYTHONPATH": _PROJECT_ROOT, "PYTHONDONTWRITEBYTECODE": "1",
        "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1", "LANG": "C.UTF-8", "HOME": "/nonexistent",
        # Keep freed memory in the heap: a call's temporaries reuse it instead of
        # mapping and page-faulting fresh memory (costly on VMs).
        "MALLOC_MMAP_THRESHOLD_": str(64 * _MB), "MALLOC_TRIM_THRESHOLD_": str(256 * _MB),
        "MALLOC_TOP_PAD_": str(16 * _MB),
    }


class ForkServer:
    """A running zygote: fork a child per call, kill one, learn how one exited."""

    def __init__(self, config: dict[str, Any], start_timeout_s: float) -> None:
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._send_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pids: dict[int, int] = {}
        self._exits: OrderedDict[int, int] = OrderedDict()
        self._ids = itertools.count(1)
        self.alive = False
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-s", "-B", "-c",
                 _BOOT.format(path=str(Path(_PROJECT_ROOT) / "engine")), str(theirs.fileno()),
                 str(os.getpid())],  # the zygote exits when this process does
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=_env(), cwd="/", pass_fds=[theirs.fileno()], start_new_session=True)
            theirs.close()
            self._sock.send(json.dumps(config).encode())
            self._sock.settimeout(start_timeout_s)
            hello = json.loads(self._sock.recv(_CONTROL_MAX) or b"{}")
            self._sock.settimeout(None)
        except (OSError, ValueError) as exc:
            theirs.close()
            self.close()
            raise SandboxError(f"the sandbox zygote failed to start: {exc}") from None
        if not hello.get("ready"):
            self.close()
            raise StartRefused(f"the sandbox zygote refused to start: {hello.get('message')}")
        self.pid = int(hello["pid"])
        self.capabilities: dict[str, Any] = dict(hello.get("capabilities") or {})
        self.alive = True
        threading.Thread(target=self._read_loop, name="sandbox-zygote", daemon=True).start()

    def _read_loop(self) -> None:
        while True:
            try:
                data = self._sock.recv(_CONTROL_MAX)
                msg = json.loads(data) if data else None
            except (OSError, ValueError):
                msg = None
            with self._cond:
                if not isinstance(msg, dict):
                    self.alive = False
                    self._cond.notify_all()
                    return
                if isinstance(msg.get("id"), int) and isinstance(msg.get("pid"), int):
                    self._pids[msg["id"]] = msg["pid"]
                elif isinstance(msg.get("exit"), int) and isinstance(msg.get("status"), int):
                    self._exits[msg["exit"]] = msg["status"]
                    while len(self._exits) > 4096:
                        self._exits.popitem(last=False)
                self._cond.notify_all()

    def fork(self, fds: list[int], meta: dict[str, Any], deadline: float) -> int:
        """Ask for a child holding ``fds``; its pid."""
        request_id = next(self._ids)
        body = json.dumps({"op": "fork", "id": request_id, **meta}).encode()
        try:
            with self._send_lock:
                socket.send_fds(self._sock, [body], fds)
        except OSError as exc:
            raise ChildDied(f"the zygote is gone ({exc})") from None
        with self._cond:
            while request_id not in self._pids:
                left = deadline - time.monotonic()
                if not self.alive:
                    raise ChildDied("the zygote is gone")
                if left <= 0:
                    raise TimeoutError("time limit")
                self._cond.wait(left)
            pid = self._pids.pop(request_id)
        if pid <= 0:
            raise ChildDied("the zygote could not fork")
        return pid

    def kill(self, pid: int) -> None:
        """SIGKILL a child (the zygote only kills its own unreaped children)."""
        try:
            with self._send_lock:
                self._sock.send(json.dumps({"op": "kill", "pid": pid}).encode())
        except OSError:
            pass

    def exit_reason(self, pid: int, timeout_s: float = 2.0) -> str:
        """Why child ``pid`` ended (waits briefly for the zygote's report)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while pid not in self._exits and self.alive:
                left = deadline - time.monotonic()
                if left <= 0:
                    return "stopped answering"
                self._cond.wait(left)
            status = self._exits.pop(pid, None)
        if status is None:
            return "was lost with its zygote"
        code = os.waitstatus_to_exitcode(status)
        if code < 0:
            sig = -code
            if sig == signal.SIGXCPU:
                return "exceeded the CPU time limit"
            if sig == signal.SIGKILL:
                return "was killed (SIGKILL)"
            try:
                return f"crashed ({signal.Signals(sig).name})"
            except ValueError:
                return f"crashed (signal {sig})"
        return f"exited with status {code}"

    def close(self) -> None:
        """Close the control socket (the zygote kills its children and exits)."""
        self.alive = False
        try:
            self._sock.close()
        except OSError:
            pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


class Call:
    """A call process's segments and socket (all closed by :meth:`close`).

    The input segment is sized for one input and rewritten whole before each call, so it
    only ever holds the current call's pixels.
    """

    def __init__(self, array: np.ndarray, out_bytes: int) -> None:
        self.in_fd = os.memfd_create("eox-sandbox-in", os.MFD_CLOEXEC)
        self.out_fd = os.memfd_create("eox-sandbox-out", os.MFD_CLOEXEC)
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.in_size = max(array.nbytes, 1)
        self.out_size = out_bytes
        self._rbuf = bytearray()
        self._poller = select.poll()
        self._poller.register(self.ours.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        self._out_map: mmap.mmap | None = None
        os.ftruncate(self.in_fd, self.in_size)
        os.ftruncate(self.out_fd, out_bytes)
        self.write_input(array)

    def write_input(self, array: np.ndarray) -> None:
        """Copy ``array`` into the input segment (same size as the first input)."""
        data = np.ascontiguousarray(array)
        view = memoryview(data).cast("B") if data.nbytes else memoryview(b"\0")
        if len(view) != self.in_size:
            raise ValueError("the input does not match this call process's segment")
        offset = 0
        while offset < len(view):
            offset += os.pwrite(self.in_fd, view[offset:], offset)

    def child_fds(self) -> list[int]:
        return [self.theirs.fileno(), self.in_fd, self.out_fd]

    def handed_over(self) -> None:
        """The zygote has its copy: drop ours of the child's end of the socket."""
        self.theirs.close()

    def hung_up(self) -> bool:
        """True when the child's end is closed (it exited) or it sent something unasked."""
        return bool(self._poller.poll(0))

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.ours.sendall(frame(message))
        except OSError as exc:
            raise ChildDied(str(exc)) from None

    def receive(self, deadline: float) -> dict[str, Any]:
        """The child's answer (TimeoutError past ``deadline``, ChildDied at EOF)."""
        head = self._read(HEADER.size, deadline)
        (size,) = HEADER.unpack(head)
        if size > MAX_MESSAGE:
            raise ChildDied("oversized message from the child")
        try:
            message = json.loads(self._read(size, deadline))
        except ValueError:
            raise ChildDied("malformed message from the child") from None
        if not isinstance(message, dict):
            raise ChildDied("malformed message from the child")
        return message

    def _read(self, n: int, deadline: float) -> bytes:
        buf = self._rbuf
        fd = self.ours.fileno()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not self._poller.poll(left * 1000):
                raise TimeoutError("time limit")
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError as exc:  # reset by a dying child
                raise ChildDied(str(exc)) from None
            if not chunk:
                raise ChildDied("the child closed its socket")
            buf += chunk
        out = bytes(buf[:n])
        del buf[:n]
        return out

    def output(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A copy of the output segment as ``shape``/``dtype`` (already validated)."""
        if int(np.prod(shape, dtype=np.int64)) == 0:
            return np.empty(shape, dtype=dtype)
        if self._out_map is None:  # mapped once per process, read-only here
            self._out_map = mmap.mmap(self.out_fd, self.out_size, flags=mmap.MAP_SHARED,
                                      prot=mmap.PROT_READ)
        view = np.ndarray(shape, dtype=dtype, buffer=self._out_map)
        out = view.copy()
        del view
        return out

    def close(self) -> None:
        if self._out_map is not None:
            self._out_map.close()
            self._out_map = None
        for fd in (self.in_fd, self.out_fd):
            if fd >= 0:
                os.close(fd)
        self.in_fd = self.out_fd = -1
        self.ours.close()
        self.theirs.close()


def binding(message: dict[str, Any], scope: str) -> str:
    """What a reused process is bound to: the scope (chain id), code, function, arguments
    and input layout."""
    text = json.dumps([scope, message["code"], message["function"], message["args"],
                       message["kwargs"], message["raw"], message["shape"], message["dtype"]],
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def jsonable(args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Arguments as JSON round-trips them (numbers, strings, booleans, lists)."""
    try:
        text = json.dumps([args, kwargs], allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SandboxError(f"function arguments must be numbers, strings, booleans or lists "
                           f"of them: {exc}") from None
    if len(text) > MAX_MESSAGE // 2:
        raise SandboxError("function arguments are too large")
    loaded = json.loads(text)
    return loaded[0], loaded[1]


def reply_error(function: str, reply: dict[str, Any]) -> SandboxError:
    kind = reply.get("kind")
    reason = sanitize(str(reply.get("message", "unknown failure")))
    lineno = reply.get("lineno") if isinstance(reply.get("lineno"), int) else None
    where = f"line {lineno}: " if lineno else ""
    if kind == "rejected":
        return FunctionRejected(f"{where}{reason}", lineno=lineno, reason=reason)
    if kind == "memory":
        return SandboxLimitExceeded(f"{where}{function}() exceeded the memory limit",
                                    lineno=lineno, reason=reason)
    if kind == "violation":
        return FunctionRejected(f"{where}{reason}", lineno=lineno, reason=reason)
    if kind == "output":
        return FunctionFailed(f"{function}(): {reason}", reason=reason)
    if kind == "error":
        return FunctionFailed(f"{where}{function}() raised {reason}", lineno=lineno,
                              reason=reason)
    return SandboxError(f"{function}(): sandbox failure: {reason}")
