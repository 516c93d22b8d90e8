"""The sandbox worker process: imports, isolates itself, then runs user functions.

Started by :class:`engine.sandbox.pool.SandboxPool` as ``python -m engine.sandbox.worker``.
Protocol on its stdin/stdout: 4-byte big-endian length + JSON, never pickle (the parent
must not unpickle what a possibly compromised worker sends). Arrays travel through two
shared-memory segments mapped at start-up, before isolation forbids opening files.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import sys
import warnings
from collections import OrderedDict
from types import CodeType, TracebackType
from typing import Any

HEADER = struct.Struct(">I")
MAX_MESSAGE = 1 << 20
#: Output dtype kinds accepted: bool, signed/unsigned integers, floats.
OUTPUT_KINDS = "biuf"
MAX_OUTPUT_BANDS = 256


class Reader:
    """Buffered reader of framed JSON messages (one read usually brings a whole one)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()

    def _take(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return None
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read(self) -> dict[str, Any] | None:
        """The next message; None at end of file."""
        head = self._take(HEADER.size)
        if head is None:
            return None
        (size,) = HEADER.unpack(head)
        if size > MAX_MESSAGE:
            raise ValueError(f"message too large ({size} bytes)")
        body = self._take(size)
        return None if body is None else json.loads(body)


def write_message(fd: int, message: dict[str, Any]) -> None:
    """Frame and write one JSON message."""
    body = json.dumps(message, separators=(",", ":")).encode()
    data = HEADER.pack(len(body)) + body
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _attach(name: str, size: int) -> mmap.mmap:
    """Map a POSIX shared-memory segment created by the parent (no resource tracker)."""
    fd = os.open(f"/dev/shm/{name.lstrip('/')}", os.O_RDWR)
    try:
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def _user_line(tb: TracebackType | None, filename: str) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _vm_size_mb() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) // 1024
    return 0


class Worker:
    """The worker's state: curated modules, compiled-code cache, shared buffers."""

    def __init__(self, config: dict[str, Any]) -> None:
        import numpy as np
        import scipy.ndimage  # noqa: F401 - imported before isolation forbids file access

        from engine.sandbox import check, guards, limits
        from engine.sandbox.namespace import module_tree

        self.np = np
        self.check = check
        self.guards = guards
        self.limits = limits
        self.allowed = tuple(config["allowed_imports"])
        self.tree = module_tree(self.allowed)
        self.globals = guards.make_globals(self.tree, guards.make_builtins(self.tree))
        self.codes: OrderedDict[str, tuple[CodeType, bool]] = OrderedDict()
        self.cpu_s = config.get("cpu_s")
        self.in_size, self.out_size = int(config["in_size"]), int(config["out_size"])
        self.in_buf = _attach(config["in_shm"], self.in_size)
        self.out_buf = _attach(config["out_shm"], self.out_size)
        warnings.simplefilter("ignore")
        baseline_mb = _vm_size_mb()
        if config.get("isolate", True) and int(config["memory_mb"]) < baseline_mb + 64:
            raise MemoryError(f"memory_mb={config['memory_mb']} leaves no room: a worker "
                              f"already maps {baseline_mb} MB (its imports and shared "
                              "buffers); raise memory_mb or lower max_array_mb")
        self._warm_up()
        self.err_state = np.geterr()
        self.random_state = np.random.get_state()

    def _warm_up(self) -> None:
        """Exercise the usual paths once so lazy imports happen before isolation."""
        import secrets  # noqa: F401 - np.random.default_rng() seeds through it

        np = self.np
        source = (
            "import numpy as np\nimport math\nfrom scipy import ndimage\n"
            "def warm(img, k=1):\n"
            "    a = img.astype('float32')\n"
            "    m = np.ma.masked_less(a, 1)\n"
            "    r = np.random.default_rng(0).random(a.shape)\n"
            "    with np.errstate(divide='ignore', invalid='ignore'):\n"
            "        q = (a[0] - a[1]) / (a[0] + a[1])\n"
            "    f = np.fft.fft2(a[0]).real + np.linalg.norm(a[0]) + math.sqrt(2)\n"
            "    lab, n = ndimage.label(ndimage.binary_opening(a[0] > 0))\n"
            "    s = ndimage.median_filter(a[0], size=3)\n"
            "    i = np.argmax(a, axis=0)\n"
            "    return np.where(np.isfinite(q), q, 0) + f + m.filled(0)[0] + r[0] + s + i\n"
        )
        img = np.ones((2, 8, 8), dtype="uint16")
        if {"numpy", "scipy.ndimage", "math"} <= set(self.allowed):
            self.check.check_function(source, "warm", allowed_imports=self.allowed)
            self._call(self.check.compile_user(source), "warm", img, [], {})
        np.random.seed()
        try:
            self._call(self.check.compile_user("def boom(img):\n    return 1 // 0\n"),
                       "boom", img, [], {})
        except ZeroDivisionError as exc:
            _user_line(exc.__traceback__, self.check.USER_FILENAME)

    def _call(self, code: CodeType, function: str, img: Any, args: list[Any],
              kwargs: dict[str, Any]) -> Any:
        g = self.guards.fresh(self.globals)
        exec(code, g)  # noqa: S102 - restricted code, in an isolated worker
        fn = g.get(function)
        if not callable(fn):
            raise self.guards.SandboxViolation(f"{function} is not a function")
        return fn(img, *args, **kwargs)

    # -- requests ---------------------------------------------------------------------
    def run(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Run one call; the answer says ok (output in shared memory) or what failed."""
        np = self.np
        digest, function = msg["digest"], msg["function"]
        entry = self.codes.get(digest)
        if entry is None:
            source = msg.get("source")
            if source is None:
                return {"ok": False, "kind": "need_source"}
            try:
                checked = self.check.check_function(source, function,
                                                    allowed_imports=self.allowed)
                code = self.check.compile_user(checked.source)
            except self.check.FunctionRejected as exc:
                return {"ok": False, "kind": "rejected", "message": exc.reason,
                        "lineno": exc.lineno}
            entry = (code, "random" in source)
            self.codes[digest] = entry
            if len(self.codes) > 64:
                self.codes.popitem(last=False)
        else:
            self.codes.move_to_end(digest)
        code, touches_random = entry

        dtype = np.dtype(msg["dtype"])
        shape = tuple(int(s) for s in msg["shape"])
        if dtype.kind not in OUTPUT_KINDS or int(np.prod(shape)) * dtype.itemsize > self.in_size:
            return {"ok": False, "kind": "internal", "message": "bad input description"}
        img = np.ndarray(shape, dtype=dtype, buffer=self.in_buf)

        if self.cpu_s:
            self.limits.set_cpu_limit(self.cpu_s)
        try:
            out = self._call(code, function, img, msg.get("args") or [], msg.get("kwargs") or {})
        except self.guards.SandboxViolation as exc:
            return self._failure("violation", str(exc), exc)
        except MemoryError as exc:
            return self._failure("memory", "the function ran out of memory (memory limit)", exc)
        except RecursionError as exc:
            return self._failure("error", "RecursionError: maximum recursion depth exceeded",
                                 exc)
        except BaseException as exc:  # noqa: BLE001 - any user exception is reported
            text = str(exc)
            message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
            return self._failure("error", message[:2000], exc)
        finally:  # the CPU limit stays armed while idle (no CPU use); re-armed per call
            np.seterr(**self.err_state)
            if touches_random:
                np.random.set_state(self.random_state)
        try:
            return self._store(out, shape)
        except Exception as exc:  # noqa: BLE001 - e.g. a MemoryError filling a masked array
            return {"ok": False, "kind": "output",
                    "message": f"the returned value cannot be used: {type(exc).__name__}"}

    def _failure(self, kind: str, message: str, exc: BaseException) -> dict[str, Any]:
        return {"ok": False, "kind": kind, "message": message,
                "lineno": _user_line(exc.__traceback__, self.check.USER_FILENAME)}

    def _store(self, out: Any, in_shape: tuple[int, ...]) -> dict[str, Any]:
        """Validate the returned value and copy it into the output segment."""
        np = self.np
        if isinstance(out, np.ma.MaskedArray):
            out = out.filled(np.nan) if out.dtype.kind == "f" else out.filled(0)
        if not isinstance(out, np.ndarray):
            return {"ok": False, "kind": "output",
                    "message": f"the function must return a numpy array, not "
                               f"{type(out).__name__}"}
        if out.dtype.kind not in OUTPUT_KINDS:
            return {"ok": False, "kind": "output",
                    "message": f"the returned array has dtype {out.dtype}; numbers or "
                               "booleans are required"}
        yx = in_shape[-2:]
        allowed = {2, 3} | ({4} if len(in_shape) == 4 else set())
        if out.ndim not in allowed or out.shape[-2:] != yx:
            want = f"({yx[0]}, {yx[1]}) or (bands, {yx[0]}, {yx[1]})"
            if len(in_shape) == 4:
                want += f" or (time, bands, {yx[0]}, {yx[1]})"
            return {"ok": False, "kind": "output",
                    "message": f"the returned array has shape {out.shape}; expected {want}"}
        bands = int(np.prod(out.shape[:-2]))
        if bands > MAX_OUTPUT_BANDS * (in_shape[0] if len(in_shape) == 4 else 1) \
                or out.nbytes > self.out_size:
            return {"ok": False, "kind": "output",
                    "message": f"the returned array is too large ({out.nbytes} bytes, "
                               f"{bands} bands)"}
        view = np.ndarray(out.shape, dtype=out.dtype, buffer=self.out_buf)
        view[...] = out
        return {"ok": True, "shape": list(out.shape), "dtype": out.dtype.str}


def main() -> int:
    """Start-up handshake, isolation, then the request loop until stdin closes."""
    fd_in, fd_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    reader = Reader(fd_in)
    config = reader.read()
    if config is None:
        return 1
    try:
        worker = Worker(config)
    except BaseException as exc:  # noqa: BLE001 - report why start-up failed, then exit
        write_message(fd_out, {"ready": False, "message": f"{type(exc).__name__}: {exc}"})
        return 1
    caps: dict[str, Any] = {"isolated": False}
    if config.get("isolate", True):
        caps = worker.limits.isolate(memory_mb=int(config["memory_mb"]))
        caps["isolated"] = True
    write_message(fd_out, {"ready": True, "pid": os.getpid(), "capabilities": caps})
    while True:
        msg = reader.read()
        if msg is None or msg.get("op") == "exit":
            return 0
        if msg.get("op") == "run":
            reply = worker.run(msg)
        else:
            reply = {"ok": False, "kind": "internal", "message": "unknown request"}
        write_message(fd_out, reply)


if __name__ == "__main__":
    sys.exit(main())
