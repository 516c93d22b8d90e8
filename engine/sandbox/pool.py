"""The sandbox pool: one disposable process per user call, forked by a warm zygote.

User code never runs in the calling (web server) process, and no process ever runs two
calls: a single-threaded zygote (see :mod:`engine.sandbox.zygote`) with numpy/scipy
imported and no secrets forks a child per call; the child restricts itself (rlimits,
no-new-privs, seccomp allow-list; namespaces inherited), reads its call, runs it, writes
its output and exits. Inputs are copied into a segment that holds only this call's data;
the parent trusts nothing but a validated output array and a sanitised error message.
Thread-safe: at most ``size`` calls run at once.
"""

from __future__ import annotations

import atexit
import base64
import logging
import marshal
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np

from engine.errors import SandboxError, SandboxLimitExceeded
from engine.sandbox.check import (
    USER_FILENAME,
    CheckedFunction,
    check_function,
    default_imports,
    set_default_imports,
)
from engine.sandbox.forkserver import (
    Call,
    ChildDied,
    ForkServer,
    StartRefused,
    binding,
    jsonable,
    reply_error,
)
from engine.sandbox.worker import OUTPUT_KINDS, output_problem

log = logging.getLogger(__name__)

_MB = 1024 * 1024
#: What the machine enforces, in words, for /healthz and the README.
DESIGN = ("one disposable process per call, forked from a single-threaded zygote that "
          "holds no secrets and no other call's data")
DESIGN_BOUND = ("disposable processes forked from a single-threaded zygote that holds no "
                "secrets and no other call's data; a process runs at most {n} calls, all of "
                "ONE function of ONE chain with the same arguments and input shape")


@dataclass
class _Process:
    """A call process bound to one function identity (``key``)."""

    key: str
    call: Call
    pid: int
    server: ForkServer | None = None  # its zygote (a process dies with its zygote)
    born: float = field(default_factory=time.monotonic)
    used: int = 0


class SandboxPool:
    """Runs user functions on arrays, each call in its own freshly forked process.

    Args:
        size: how many calls may run at once (one child process each).
        timeout_s: wall-clock limit of one call; its process is killed.
        cpu_s: CPU-time limit of one call (default: ``timeout_s``).
        memory_mb: address-space limit of a call's process (RLIMIT_AS).
        allowed_imports: modules user code may import (default: the deployment's).
        max_array_mb: largest input or output array of one call.
        isolate: apply namespaces/rlimits/seccomp (False only for debugging).
        start_timeout_s: how long the zygote may take to start.
        calls_per_process: 1 = a fresh process for every call; N > 1 = a process may
            serve up to N calls of the very same function, arguments and input shape
            (never another function's), then exits; idle ones exit after ``idle_s``.
        idle_s: how long an idle bound process is kept.
    """

    def __init__(self, size: int = 2, *, timeout_s: float = 5.0, cpu_s: float | None = None,
                 memory_mb: int = 2048, allowed_imports: Iterable[str] | None = None,
                 max_array_mb: int = 128, isolate: bool = True,
                 start_timeout_s: float = 60.0, calls_per_process: int = 64,
                 idle_s: float = 10.0) -> None:
        if size < 1 or calls_per_process < 1:
            raise ValueError("size and calls_per_process must be at least 1")
        self.calls_per_process = int(calls_per_process)
        self.idle_s = float(idle_s)
        self._idle: dict[str, list[_Process]] = {}
        self.size = size
        self.timeout_s = float(timeout_s)
        self.cpu_s = float(cpu_s) if cpu_s is not None else float(timeout_s)
        self.memory_mb = int(memory_mb)
        self.allowed_imports = tuple(sorted(set(allowed_imports))) if allowed_imports \
            is not None else default_imports()
        self.max_array_mb = max_array_mb
        self.max_array_bytes = int(max_array_mb * _MB)
        self.isolate = isolate
        self.start_timeout_s = start_timeout_s
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._server: ForkServer | None = None
        self._busy: set[int] = set()
        self._closed = False
        self._start_error: str | None = None
        self._refused = False
        threading.Thread(target=self._ensure_server, name="sandbox-zygote-start",
                         daemon=True).start()

    # -- the zygote -----------------------------------------------------------------------
    def _ensure_server(self) -> ForkServer | None:
        """The running zygote, started (or restarted) if needed; None when it cannot."""
        with self._start_lock:
            server = self._server
            if server is not None and server.alive:
                return server
            if self._closed or self._refused:
                return None
            if server is not None:
                log.warning("sandbox zygote %s is gone; starting a new one", server.pid)
                server.close()
            config = {"allowed_imports": list(self.allowed_imports), "memory_mb": self.memory_mb,
                      "cpu_s": self.cpu_s, "isolate": self.isolate,
                      "max_array_mb": self.max_array_mb}
            try:
                server = ForkServer(config, self.start_timeout_s)
            except SandboxError as exc:
                log.error("sandbox zygote start failed: %s", exc)
                self._start_error = str(exc)
                self._refused = isinstance(exc, StartRefused)
                return None
            with self._lock:
                if self._closed:
                    server.close()
                    return None
                self._server = server
            return server

    # -- public API -----------------------------------------------------------------------
    def check(self, source: str, function: str) -> CheckedFunction:
        """The static check with this pool's allowed imports."""
        return check_function(source, function, allowed_imports=self.allowed_imports)

    def run(self, source: str, function: str, array: np.ndarray, args: Sequence[Any] = (),
            kwargs: dict[str, Any] | None = None, *, scope: str = "") -> np.ndarray:
        """Call ``function(array, *args, **kwargs)`` from ``source`` in a sandbox process.

        Args:
            source: the user's Python source (checked first).
            function: the name of the function to call.
            array: (band, y, x), (y, x) or, for time stacks, (time, band, y, x) numbers.
            args: JSON-able positional arguments after the array.
            kwargs: JSON-able keyword arguments.
            scope: who the call belongs to (the chain id for tiles): a process is only
                reused for calls of the same scope, function, arguments and input shape.

        Returns:
            The validated output: (y, x), (band, y, x) or (time, band, y, x) numbers
            with the input's y and x.

        Raises:
            FunctionRejected: the source failed the static check.
            FunctionFailed: the function raised or returned an invalid value.
            SandboxLimitExceeded: time/CPU/memory limit hit or the process crashed.
        """
        checked = self.check(source, function)
        return self._call(checked.code, function, array, args, kwargs, raw=False, scope=scope)

    def _run_unchecked(self, source: str, function: str, array: np.ndarray,
                       args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, *,
                       scope: str = "") -> np.ndarray:
        """TESTS ONLY: run plain, unchecked Python (real builtins, real numpy) in a child.

        Proves the process boundary with the static check and the guards switched off
        (what an escaped function could do). Not reachable from HTTP or chains.
        """
        code = marshal.dumps(compile(source, USER_FILENAME, "exec"))
        return self._call(code, function, array, args, kwargs, raw=True, scope=scope)

    def _call(self, code: bytes, function: str, array: np.ndarray, args: Sequence[Any],
              kwargs: dict[str, Any] | None, *, raw: bool, scope: str) -> np.ndarray:
        array = np.asarray(array)
        if array.dtype.kind not in OUTPUT_KINDS or array.ndim not in (2, 3, 4):
            raise SandboxError(f"the input must be a 2-4 dimensional numeric array, got "
                               f"{array.ndim} dimensions of {array.dtype}")
        if array.nbytes > self.max_array_bytes:
            raise SandboxError(f"the input is too large for the sandbox ({array.nbytes} "
                               f"bytes, at most {self.max_array_bytes})")
        args_list, kwargs_dict = jsonable(list(args), dict(kwargs or {}))
        message = {"function": function, "code": base64.b64encode(code).decode(),
                   "shape": list(array.shape), "dtype": array.dtype.str,
                   "args": args_list, "kwargs": kwargs_dict, "raw": raw}
        if not self._slots.acquire(timeout=self.start_timeout_s + self.timeout_s):
            raise SandboxLimitExceeded("no sandbox slot became free in time")
        try:
            server = self._ensure_server()
            if server is None:
                if self._closed:
                    raise SandboxError("the sandbox pool is closed")
                raise SandboxLimitExceeded(f"the sandbox is not available ({self._start_error})")
            return self._in_child(server, message, array, function, scope)
        finally:
            self._slots.release()

    def _in_child(self, server: ForkServer, message: dict[str, Any], array: np.ndarray,
                  function: str, scope: str) -> np.ndarray:
        deadline = time.monotonic() + self.timeout_s
        key = binding(message, scope)
        proc = self._take_idle(key, array, server)
        healthy = False
        try:
            try:
                if proc is None:
                    proc = self._fork(server, key, array, deadline)
                with self._lock:
                    self._busy.add(proc.pid)
                # the process keeps the code of its one function after the first call
                proc.call.send(message if proc.used == 0 else
                               {k: v for k, v in message.items() if k != "code"})
                proc.used += 1
                reply = proc.call.receive(deadline)
            except TimeoutError:
                if proc is not None:
                    server.kill(proc.pid)
                raise SandboxLimitExceeded(
                    f"{function}() exceeded the time limit of {self.timeout_s:g} s") from None
            except ChildDied as exc:
                reason = server.exit_reason(proc.pid) if proc is not None else str(exc)
                log.warning("sandbox call %s() ended in process %s: %s", function,
                            proc.pid if proc else None, reason)
                raise SandboxLimitExceeded(f"{function}() stopped its sandbox process: the "
                                           f"process {reason}") from None
            if reply.get("ok") is True:
                out = self._output(proc.call, reply, array.shape, function)
                healthy = True
                return out
            raise reply_error(function, reply)
        finally:
            if proc is not None:
                with self._lock:
                    self._busy.discard(proc.pid)
                self._release(proc, healthy)

    def _fork(self, server: ForkServer, key: str, array: np.ndarray,
              deadline: float) -> _Process:
        call = Call(array, self.max_array_bytes)
        try:
            pid = server.fork(call.child_fds(),
                              {"in_size": call.in_size, "out_size": call.out_size,
                               "calls": self.calls_per_process,
                               "lifetime_s": self._lifetime_s()}, deadline)
        except BaseException:
            call.close()
            raise
        call.handed_over()
        return _Process(key, call, pid, server)

    def _lifetime_s(self) -> float:
        if self.calls_per_process == 1:
            return self.timeout_s + 2
        return self.idle_s + self.timeout_s * 2 + 5

    def _take_idle(self, key: str, array: np.ndarray,
                   server: ForkServer) -> _Process | None:
        """An idle process bound to ``key`` with the input copied in, or None. Processes
        of another (dead) zygote, or that closed their socket, are dropped: they died."""
        if self.calls_per_process == 1:
            return None
        now = time.monotonic()
        expired: list[_Process] = []
        found = None
        with self._lock:
            for k in list(self._idle):
                keep = [p for p in self._idle[k] if now - p.born < self.idle_s]
                expired += [p for p in self._idle[k] if p not in keep]
                if keep:
                    self._idle[k] = keep
                else:
                    del self._idle[k]
            while self._idle.get(key) and found is None:
                found = self._idle[key].pop()
                if found.server is not server or not server.alive \
                        or found.call.hung_up():
                    expired.append(found)
                    found = None
            if key in self._idle and not self._idle[key]:
                del self._idle[key]
        for p in expired:
            p.call.close()  # the child reads end-of-file and exits
        if found is not None:
            found.call.write_input(array)
        return found

    def _release(self, proc: _Process, healthy: bool) -> None:
        """Keep a healthy, not yet used-up process for its function's next call."""
        if not healthy or proc.used >= self.calls_per_process or self._closed:
            proc.call.close()
            return
        with self._lock:
            self._idle.setdefault(proc.key, []).append(proc)
            total = sum(len(v) for v in self._idle.values())
            oldest = None
            if total > 4 * self.size:  # idle processes kept: a few per call slot
                oldest = min((p for v in self._idle.values() for p in v), key=lambda p: p.born)
                self._idle[oldest.key].remove(oldest)
        if oldest is not None:
            oldest.call.close()

    def _output(self, call: Call, reply: dict[str, Any], in_shape: tuple[int, ...],
                function: str) -> np.ndarray:
        """The output array, re-validated here: trust nothing the child says."""
        try:
            dtype = np.dtype(str(reply["dtype"]))
            shape = tuple(int(s) for s in reply["shape"])
        except (KeyError, TypeError, ValueError):
            raise SandboxError(f"{function}(): the sandbox process sent a malformed "
                               "answer") from None
        problem = "" if dtype.kind in OUTPUT_KINDS and all(s >= 0 for s in shape) \
            else "invalid output description"
        problem = problem or output_problem(shape, dtype.itemsize, in_shape, call.out_size)
        if problem:
            raise SandboxError(f"{function}(): the sandbox process sent an invalid answer: "
                               f"{problem}")
        return call.output(shape, dtype)

    def capabilities(self) -> dict[str, Any]:
        """What isolation this machine enforces (verified by a probe child), for /healthz."""
        server = self._ensure_server()
        if server is None:
            return {"available": False, "error": self._start_error}
        caps = dict(server.capabilities)
        design = DESIGN if self.calls_per_process == 1 else DESIGN_BOUND.format(
            n=self.calls_per_process)
        caps.update(available=True, design=design, workers=self.size,
                    calls_per_process=self.calls_per_process,
                    timeout_s=self.timeout_s, cpu_s=self.cpu_s, memory_mb=self.memory_mb,
                    allowed_imports=list(self.allowed_imports))
        return caps

    def status(self) -> dict[str, Any]:
        """What the pool is doing now (never waits for a zygote start): its zygote's pid
        when one runs, whether one is starting, why the last start failed, busy calls."""
        with self._lock:
            server, busy, closed = self._server, len(self._busy), self._closed
        alive = server is not None and server.alive
        return {"zygote": server.pid if alive else None, "closed": closed,
                "starting": not alive and self._start_lock.locked(),
                "start_error": self._start_error, "refused": self._refused, "busy": busy,
                "size": self.size}

    def busy_pids(self) -> list[int]:
        """The pids of the processes running a call right now."""
        with self._lock:
            return sorted(self._busy)

    def worker_pids(self) -> list[int]:
        """The pid of the zygote (for monitoring and tests); calls run in its children."""
        with self._lock:
            server = self._server
        return [server.pid] if server is not None and server.alive else []

    def wait_ready(self, count: int | None = None, timeout_s: float = 60.0) -> bool:
        """Wait until the zygote is up; True when it is (``count`` is ignored)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.worker_pids():
                return True
            if self._refused or self._closed:
                return False
            time.sleep(0.02)
        return False

    def close(self) -> None:
        """Stop the zygote (it kills any running child)."""
        with self._lock:
            self._closed = True
            server, self._server = self._server, None
            idle = [p for v in self._idle.values() for p in v]
            self._idle.clear()
        for proc in idle:
            proc.call.close()
        if server is not None:
            server.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the process-wide default pool --------------------------------------------------------
_default_lock = threading.Lock()
_default_pool: SandboxPool | None = None
_default_config: dict[str, Any] = {"size": 2}


def configure(**kwargs: Any) -> None:
    """Set the default pool's SandboxPool arguments (closes a running default pool).

    ``allowed_imports`` also becomes the deployment default of the static check (the
    one chains run at registration).
    """
    global _default_pool
    if "allowed_imports" in kwargs:
        set_default_imports(kwargs["allowed_imports"])
    with _default_lock:
        _default_config.clear()
        _default_config.update(kwargs)
        pool, _default_pool = _default_pool, None
    if pool is not None:
        pool.close()


def default_pool() -> SandboxPool:
    """The process-wide pool (started on first use, closed at exit)."""
    global _default_pool
    with _default_lock:
        if _default_pool is None:
            _default_pool = SandboxPool(**_default_config)
            atexit.register(_default_pool.close)
        return _default_pool


def close_default_pool() -> None:
    """Stop the default pool if it runs."""
    global _default_pool
    with _default_lock:
        pool, _default_pool = _default_pool, None
    if pool is not None:
        pool.close()


def capabilities() -> dict[str, Any]:
    """The default pool's verified isolation (starts it if needed)."""
    return default_pool().capabilities()
