"""A pool of warm, isolated worker processes that run user functions on arrays.

User code never runs in the calling (web server) process. Workers are started once,
isolate themselves (see :mod:`engine.sandbox.limits`) and are reused; one that times
out, crashes or runs out of memory is killed and replaced while the others keep
serving. Thread-safe: each call borrows one idle worker.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any, Self

import numpy as np

from engine.errors import FunctionFailed, FunctionRejected, SandboxError, SandboxLimitExceeded
from engine.sandbox.check import (
    CheckedFunction,
    check_function,
    default_imports,
    set_default_imports,
)
from engine.sandbox.worker import HEADER, MAX_MESSAGE, OUTPUT_KINDS

log = logging.getLogger(__name__)

_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])
#: Worker entry point. ``engine`` is stubbed as a bare package so that its __init__
#: (the notebook API: catalog, pandas, rasterio...) is not imported into workers:
#: fewer modules mapped, faster start, less reachable code.
_BOOT = ("import sys, types; m = types.ModuleType('engine'); m.__path__ = [{path!r}]; "
         "sys.modules['engine'] = m; from engine.sandbox.worker import main; sys.exit(main())")
_MB = 1024 * 1024
_ids = itertools.count(1)


class _WorkerDied(Exception):
    """The worker process exited or closed its pipe."""


class _StartRefused(SandboxError):
    """The worker refused its configuration (retrying cannot help)."""


class _Worker:
    """Parent-side handle of one worker process and its two shared-memory segments."""

    def __init__(self, *, allowed_imports: Sequence[str], memory_mb: int, cpu_s: float | None,
                 array_bytes: int, isolate: bool, start_timeout_s: float) -> None:
        self.id = next(_ids)
        self.in_shm = shared_memory.SharedMemory(create=True, size=array_bytes)
        self.out_shm = shared_memory.SharedMemory(create=True, size=array_bytes)
        self.loaded: set[str] = set()
        self._rbuf = bytearray()
        self._poller: select.poll | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        env = {
            "PYTHONPATH": _PROJECT_ROOT, "PYTHONDONTWRITEBYTECODE": "1",
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "NUMEXPR_NUM_THREADS": "1", "LANG": "C.UTF-8", "HOME": "/nonexistent",
            # Keep freed memory in the heap: per-tile temporaries are then reused instead
            # of being mapped and page-faulted afresh on every call (costly on VMs).
            "MALLOC_MMAP_THRESHOLD_": str(64 * _MB), "MALLOC_TRIM_THRESHOLD_": str(256 * _MB),
            "MALLOC_TOP_PAD_": str(16 * _MB),
        }
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-s", "-B", "-c",
                 _BOOT.format(path=str(Path(_PROJECT_ROOT) / "engine"))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env=env, cwd="/", close_fds=True, start_new_session=True)
            self._send({"in_shm": self.in_shm.name, "out_shm": self.out_shm.name,
                        "in_size": array_bytes, "out_size": array_bytes,
                        "allowed_imports": list(allowed_imports), "memory_mb": memory_mb,
                        "cpu_s": cpu_s, "isolate": isolate})
            hello = self._recv(time.monotonic() + start_timeout_s)
        except (OSError, _WorkerDied, TimeoutError) as exc:
            self.kill()
            raise SandboxError(f"a sandbox worker failed to start: {exc}") from None
        if not hello.get("ready"):
            self.kill()
            raise _StartRefused(f"a sandbox worker refused to start: {hello.get('message')}")
        self.pid = int(hello["pid"])
        self.capabilities: dict[str, Any] = hello.get("capabilities", {})
        # The worker has mapped both segments: unlink the names so nothing stays in
        # /dev/shm if this process dies; the mappings live on.
        for shm in (self.in_shm, self.out_shm):
            shm.unlink()

    # -- framing ----------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        body = json.dumps(message, separators=(",", ":")).encode()
        view = memoryview(HEADER.pack(len(body)) + body)
        try:
            fd = self.proc.stdin.fileno()
            while view:
                view = view[os.write(fd, view):]
        except (ValueError, OSError) as exc:
            raise _WorkerDied(str(exc)) from None

    def _recv(self, deadline: float) -> dict[str, Any]:
        head = self._read(HEADER.size, deadline)
        (size,) = HEADER.unpack(head)
        if size > MAX_MESSAGE:
            raise _WorkerDied("oversized message from worker")
        try:
            message = json.loads(self._read(size, deadline))
        except ValueError:
            raise _WorkerDied("malformed message from worker") from None
        if not isinstance(message, dict):
            raise _WorkerDied("malformed message from worker")
        return message

    def _read(self, n: int, deadline: float) -> bytes:
        """``n`` bytes from the worker (buffered: one read usually brings a whole reply)."""
        assert self.proc is not None and self.proc.stdout is not None
        buf = self._rbuf
        while len(buf) < n:
            if self._poller is None:
                self._poller = select.poll()
                self._poller.register(self.proc.stdout.fileno(),
                                      select.POLLIN | select.POLLHUP | select.POLLERR)
            left = deadline - time.monotonic()
            if left <= 0 or not self._poller.poll(left * 1000):
                raise TimeoutError("time limit")
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                raise _WorkerDied("worker closed its pipe")
            buf += chunk
        out = bytes(buf[:n])
        del buf[:n]
        return out

    # -- calls ------------------------------------------------------------------------
    def call(self, checked: CheckedFunction, array: np.ndarray, args: list[Any],
             kwargs: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one call and wait for its answer (output left in ``out_shm``)."""
        view = np.ndarray(array.shape, dtype=array.dtype, buffer=self.in_shm.buf)
        view[...] = array
        del view
        msg: dict[str, Any] = {"op": "run", "digest": checked.digest,
                               "function": checked.function, "shape": list(array.shape),
                               "dtype": array.dtype.str, "args": args, "kwargs": kwargs}
        deadline = time.monotonic() + timeout_s
        if checked.digest not in self.loaded:
            msg["source"] = checked.source
        self._send(msg)
        reply = self._recv(deadline)
        if reply.get("kind") == "need_source":  # evicted from the worker's cache
            msg["source"] = checked.source
            self._send(msg)
            reply = self._recv(deadline)
        if reply.get("ok") or reply.get("kind") in ("error", "violation", "output"):
            if len(self.loaded) > 4096:  # the worker keeps far fewer; it asks again
                self.loaded.clear()
            self.loaded.add(checked.digest)
        return reply

    def output(self, reply: dict[str, Any]) -> np.ndarray:
        """Copy the validated output out of shared memory (re-validated: trust nothing)."""
        try:
            dtype = np.dtype(str(reply["dtype"]))
            shape = tuple(int(s) for s in reply["shape"])
        except (KeyError, TypeError, ValueError):
            raise _WorkerDied("malformed output description") from None
        if dtype.kind not in OUTPUT_KINDS or any(s < 0 for s in shape) \
                or int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > self.out_shm.size:
            raise _WorkerDied("invalid output description")
        return np.ndarray(shape, dtype=dtype, buffer=self.out_shm.buf).copy()

    def exit_reason(self) -> str:
        """Why the process ended (waits briefly for it)."""
        if self.proc is None:
            return "not started"
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()
            return "stopped answering"
        if code < 0:
            sig = -code
            if sig == signal.SIGXCPU:
                return "exceeded the CPU time limit"
            if sig == signal.SIGKILL:
                return "was killed (SIGKILL)"
            return f"crashed ({signal.Signals(sig).name})"
        return f"exited with status {code}"

    def kill(self) -> None:
        """Kill the process (by its pid) and release the shared memory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.warning("sandbox worker %s did not exit after SIGKILL", self.proc.pid)
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
        for shm in (self.in_shm, self.out_shm):
            try:
                shm.close()
            except BufferError:  # a view still exported; freed with the object
                pass
            try:
                shm.unlink()
            except FileNotFoundError:
                pass

    def stop(self) -> None:
        """Ask the worker to exit, then make sure it did."""
        try:
            self._send({"op": "exit"})
            if self.proc is not None:
                self.proc.wait(timeout=1)
        except (_WorkerDied, subprocess.TimeoutExpired):
            pass
        self.kill()


class SandboxPool:
    """Warm isolated workers running user functions on arrays through shared memory.

    Args:
        size: number of worker processes.
        timeout_s: wall-clock limit of one call; the worker is killed and replaced.
        cpu_s: CPU-time limit of one call (default: ``timeout_s``).
        memory_mb: address-space limit of a worker (RLIMIT_AS).
        allowed_imports: modules user code may import (default: the deployment's).
        max_array_mb: largest input or output array of one call.
        isolate: apply namespaces/rlimits/seccomp (False only for debugging).
        start_timeout_s: how long a worker may take to start.
    """

    def __init__(self, size: int = 2, *, timeout_s: float = 5.0, cpu_s: float | None = None,
                 memory_mb: int = 2048, allowed_imports: Iterable[str] | None = None,
                 max_array_mb: int = 128, isolate: bool = True,
                 start_timeout_s: float = 60.0) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self.timeout_s = float(timeout_s)
        self.cpu_s = float(cpu_s) if cpu_s is not None else float(timeout_s)
        self.memory_mb = int(memory_mb)
        self.allowed_imports = tuple(sorted(set(allowed_imports))) if allowed_imports \
            is not None else default_imports()
        self.max_array_bytes = int(max_array_mb * _MB)
        self.isolate = isolate
        self.start_timeout_s = start_timeout_s
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._capabilities: dict[str, Any] | None = None
        self._start_error: str | None = None
        self._ready = threading.Event()
        for _ in range(size):
            self._spawn_async()

    # -- workers ----------------------------------------------------------------------
    def _new_worker(self) -> _Worker:
        return _Worker(allowed_imports=self.allowed_imports, memory_mb=self.memory_mb,
                       cpu_s=self.cpu_s, array_bytes=self.max_array_bytes,
                       isolate=self.isolate, start_timeout_s=self.start_timeout_s)

    def _spawn_async(self) -> None:
        threading.Thread(target=self._spawn, name="sandbox-spawn", daemon=True).start()

    def _spawn(self) -> None:
        for attempt in range(3):
            if self._closed:
                return
            try:
                worker = self._new_worker()
            except SandboxError as exc:
                log.error("sandbox worker start failed (attempt %d): %s", attempt + 1, exc)
                self._start_error = str(exc)
                if isinstance(exc, _StartRefused):
                    break
                time.sleep(0.5 * (attempt + 1))
                continue
            with self._lock:
                if self._closed:
                    worker.stop()
                    return
                self._all.add(worker)
                if self._capabilities is None:
                    self._capabilities = dict(worker.capabilities)
            self._idle.put(worker)
            self._ready.set()
            return
        self._ready.set()  # wake waiters: they will see the start error

    def _retire(self, worker: _Worker) -> None:
        """Kill a worker and start its replacement in the background."""
        with self._lock:
            self._all.discard(worker)
        worker.kill()
        if not self._closed:
            self._spawn_async()

    def _acquire(self) -> _Worker:
        deadline = time.monotonic() + self.start_timeout_s + self.timeout_s
        while True:
            if self._closed:
                raise SandboxError("the sandbox pool is closed")
            try:
                return self._idle.get(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                pass
            with self._lock:
                alive = len(self._all)
            if time.monotonic() >= deadline:
                detail = f" ({self._start_error})" if self._start_error and not alive else ""
                raise SandboxLimitExceeded(f"no sandbox worker became available{detail}")

    # -- public API -------------------------------------------------------------------
    def check(self, source: str, function: str) -> CheckedFunction:
        """The static check with this pool's allowed imports."""
        return check_function(source, function, allowed_imports=self.allowed_imports)

    def run(self, source: str, function: str, array: np.ndarray, args: Sequence[Any] = (),
            kwargs: dict[str, Any] | None = None) -> np.ndarray:
        """Call ``function(array, *args, **kwargs)`` from ``source`` in a worker.

        Args:
            source: the user's Python source (checked first).
            function: the name of the function to call.
            array: (band, y, x), (y, x) or, for time stacks, (time, band, y, x) numbers.
            args: JSON-able positional arguments after the array.
            kwargs: JSON-able keyword arguments.

        Returns:
            The validated output: (y, x), (band, y, x) or (time, band, y, x) numbers
            with the input's y and x.

        Raises:
            FunctionRejected: the source failed the static check.
            FunctionFailed: the function raised or returned an invalid value.
            SandboxLimitExceeded: time/CPU/memory limit hit or the worker crashed.
        """
        checked = self.check(source, function)
        array = np.asarray(array)
        if array.dtype.kind not in OUTPUT_KINDS or array.ndim not in (2, 3, 4):
            raise SandboxError(f"the input must be a 2-4 dimensional numeric array, got "
                               f"{array.ndim} dimensions of {array.dtype}")
        if array.nbytes > self.max_array_bytes:
            raise SandboxError(f"the input is too large for the sandbox ({array.nbytes} "
                               f"bytes, at most {self.max_array_bytes})")
        args_list, kwargs_dict = _jsonable(list(args), dict(kwargs or {}))
        worker = self._acquire()
        healthy = False
        try:
            try:
                reply = worker.call(checked, array, args_list, kwargs_dict, self.timeout_s)
                if reply.get("ok"):
                    out = worker.output(reply)
                    if out.shape[-2:] != array.shape[-2:] or not 2 <= out.ndim <= max(
                            3, array.ndim):
                        raise _WorkerDied(f"output shape {out.shape} does not fit the input")
                    healthy = True
                    return out
            except TimeoutError:
                raise SandboxLimitExceeded(
                    f"{function}() exceeded the time limit of {self.timeout_s:g} s") from None
            except _WorkerDied as exc:
                reason = worker.exit_reason()
                log.warning("sandbox worker %s died during %s(): %s (%s)", worker.pid,
                            function, reason, exc)
                raise SandboxLimitExceeded(f"{function}() stopped its sandbox worker: the "
                                           f"worker {reason}") from None
            kind = reply.get("kind")
            healthy = kind in ("error", "violation", "output", "rejected")
            raise _reply_error(function, reply)
        finally:
            if healthy and not self._closed:
                self._idle.put(worker)
            else:
                self._retire(worker)

    def capabilities(self) -> dict[str, Any]:
        """What isolation the workers enforce (verified at their start), for /healthz."""
        self._ready.wait(self.start_timeout_s)
        with self._lock:
            caps = dict(self._capabilities) if self._capabilities else {}
        if not caps:
            return {"available": False, "error": self._start_error}
        caps.update(available=True, workers=self.size, timeout_s=self.timeout_s,
                    cpu_s=self.cpu_s, memory_mb=self.memory_mb,
                    allowed_imports=list(self.allowed_imports))
        return caps

    def busy_pids(self) -> list[int]:
        """The pids of the workers running a call right now."""
        with self._lock:
            idle = {id(w) for w in list(self._idle.queue)}
            return sorted(w.pid for w in self._all if id(w) not in idle)

    def worker_pids(self) -> list[int]:
        """The pids of the live workers (for monitoring and tests)."""
        with self._lock:
            return sorted(w.pid for w in self._all)

    def wait_ready(self, count: int | None = None, timeout_s: float = 60.0) -> bool:
        """Wait until ``count`` (default: all) workers are up; True when they are."""
        want = self.size if count is None else count
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self._all) >= want:
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        """Stop every worker and free the shared memory."""
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
        for worker in workers:
            worker.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _jsonable(args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
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


def _reply_error(function: str, reply: dict[str, Any]) -> SandboxError:
    kind = reply.get("kind")
    reason = str(reply.get("message", "unknown failure"))[:2000]
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
