"""What runs one user call in a disposable child of the zygote (see :mod:`.zygote`).

The :class:`Runner` is built once in the zygote (curated modules, guarded globals, warm
code paths) and inherited by every child through fork; a child runs exactly one call and
exits, so nothing a call changes (module state, RNG, error settings, heap contents)
reaches another call. Messages are a 4-byte big-endian length + JSON, never pickle: the
parent must not unpickle what a possibly compromised child sends.
"""

from __future__ import annotations

import base64
import builtins
import json
import marshal
import os
import struct
import types
import warnings
from types import TracebackType
from typing import Any

HEADER = struct.Struct(">I")
MAX_MESSAGE = 1 << 20
#: Output dtype kinds accepted: bool, signed/unsigned integers, floats.
OUTPUT_KINDS = "biuf"
MAX_OUTPUT_BANDS = 256
#: Longest error message a child may report (the parent truncates again).
MAX_ERROR_CHARS = 2000


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


def frame(message: dict[str, Any]) -> bytes:
    """One JSON message with its length header."""
    body = json.dumps(message, separators=(",", ":")).encode()
    return HEADER.pack(len(body)) + body


def write_message(fd: int, message: dict[str, Any]) -> None:
    """Frame and write one JSON message."""
    view = memoryview(frame(message))
    while view:
        view = view[os.write(fd, view):]


def sanitize(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """Printable characters only (others become '?'), at most ``limit`` of them."""
    text = str(text)[: limit + 1]
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def describe(exc: BaseException) -> str:
    """``Type: message`` of a user exception; never raises (a value that cannot be
    printed, e.g. a 200,000-deep nested list, is reported as such)."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except BaseException:  # noqa: BLE001 - RecursionError, MemoryError, a hostile __str__
        text = "<the exception's value cannot be printed>"
    return sanitize(f"{name}: {text}" if text else name)


def _user_line(tb: TracebackType | None, filename: str) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class Runner:
    """The zygote's prepared state: curated modules and the guarded globals template."""

    def __init__(self, allowed_imports: tuple[str, ...]) -> None:
        import numpy as np
        import scipy.ndimage  # noqa: F401 - imported once, in the zygote

        from engine.sandbox import check, guards
        from engine.sandbox.namespace import module_tree

        self.np = np
        self.check = check
        self.guards = guards
        self.allowed = allowed_imports
        self.tree = module_tree(self.allowed)
        self.globals = guards.make_globals(self.tree, guards.make_builtins(self.tree))
        warnings.simplefilter("ignore")
        self._warm_up()

    def _warm_up(self) -> None:
        """Exercise the usual paths once so lazy imports happen in the zygote."""
        import secrets  # noqa: F401 - np.random.default_rng() seeds through it

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
        img = self.np.ones((2, 8, 8), dtype="uint16")
        if {"numpy", "scipy.ndimage", "math"} <= set(self.allowed):
            checked = self.check.check_function(source, "warm", allowed_imports=self.allowed)
            self.call(marshal.loads(checked.code), "warm", img, [], {})
        try:
            self.call(self.check.compile_user("def boom(img):\n    return 1 // 0\n"),
                      "boom", img, [], {})
        except ZeroDivisionError as exc:
            describe(exc)
            _user_line(exc.__traceback__, self.check.USER_FILENAME)

    def call(self, code: types.CodeType, function: str, img: Any, args: list[Any],
             kwargs: dict[str, Any], *, raw: bool = False) -> Any:
        """Define the user's module and call its checked function."""
        if raw:  # tests only (SandboxPool._run_unchecked): plain Python, real builtins
            g: dict[str, Any] = {"__builtins__": builtins, "__name__": "raw",
                                 "np": self.np, "numpy": self.np}
        else:
            g = self.guards.fresh(self.globals)
        exec(code, g)  # noqa: S102 - checked code, in a restricted disposable child
        fn = g.get(function)
        if not isinstance(fn, types.FunctionType) or fn.__name__ != function \
                or fn.__code__.co_filename != self.check.USER_FILENAME:
            raise self.guards.SandboxViolation(f"{function} is not the checked function")
        return fn(img, *args, **kwargs)

    # -- one call -----------------------------------------------------------------------
    def run(self, msg: dict[str, Any], in_buf: Any, out_buf: Any,
            code: types.CodeType) -> dict[str, Any]:
        """Run the call described by ``msg`` (``code`` from :func:`load_code`); the answer
        says ok (output in ``out_buf``) or what failed."""
        np = self.np
        function = str(msg["function"])
        dtype = np.dtype(msg["dtype"])
        shape = tuple(int(s) for s in msg["shape"])
        img = np.ndarray(shape, dtype=dtype, buffer=in_buf)
        try:
            out = self.call(code, function, img, msg.get("args") or [],
                            msg.get("kwargs") or {}, raw=bool(msg.get("raw")))
        except self.guards.SandboxViolation as exc:
            return self._failure("violation", describe(exc).split(": ", 1)[-1], exc)
        except MemoryError as exc:
            return self._failure("memory", "the function ran out of memory (memory limit)", exc)
        except RecursionError as exc:
            return self._failure("error", "RecursionError: maximum recursion depth exceeded",
                                 exc)
        except BaseException as exc:  # noqa: BLE001 - any user exception is reported
            return self._failure("error", describe(exc), exc)
        try:
            return self._store(out, shape, out_buf)
        except BaseException as exc:  # noqa: BLE001 - e.g. a MemoryError filling a masked array
            return {"ok": False, "kind": "output",
                    "message": f"the returned value cannot be used: {type(exc).__name__}"}

    def _failure(self, kind: str, message: str, exc: BaseException) -> dict[str, Any]:
        try:
            line = _user_line(exc.__traceback__, self.check.USER_FILENAME)
        except BaseException:  # noqa: BLE001 - never let the report itself fail
            line = None
        return {"ok": False, "kind": kind, "message": message, "lineno": line}

    def _store(self, out: Any, in_shape: tuple[int, ...], out_buf: Any) -> dict[str, Any]:
        """Validate the returned value and copy it into the output segment."""
        np = self.np
        if isinstance(out, np.ma.MaskedArray):
            out = out.filled(np.nan) if out.dtype.kind == "f" else out.filled(0)
        if type(out) is not np.ndarray:
            return {"ok": False, "kind": "output",
                    "message": f"the function must return a numpy array, not "
                               f"{sanitize(type(out).__name__, 100)}"}
        if out.dtype.kind not in OUTPUT_KINDS:
            return {"ok": False, "kind": "output",
                    "message": f"the returned array has dtype {out.dtype}; numbers or "
                               "booleans are required"}
        problem = output_problem(out.shape, out.dtype.itemsize, in_shape, len(out_buf))
        if problem:
            return {"ok": False, "kind": "output", "message": problem}
        view = np.ndarray(out.shape, dtype=out.dtype, buffer=out_buf)
        view[...] = out
        return {"ok": True, "shape": list(out.shape), "dtype": out.dtype.str}


def load_code(msg: dict[str, Any]) -> types.CodeType:
    """The compiled user module a call message carries (sent once per process)."""
    return marshal.loads(base64.b64decode(msg["code"]))


def output_problem(shape: tuple[int, ...], itemsize: int, in_shape: tuple[int, ...],
                   capacity: int) -> str:
    """Why an output of ``shape`` does not fit an input of ``in_shape`` ('' when it does);
    the child checks before writing, the parent again before reading."""
    yx = tuple(in_shape[-2:])
    allowed = {2, 3} | ({4} if len(in_shape) == 4 else set())
    if len(shape) not in allowed or tuple(shape[-2:]) != yx:
        want = f"({yx[0]}, {yx[1]}) or (bands, {yx[0]}, {yx[1]})"
        if len(in_shape) == 4:
            want += f" or (time, bands, {yx[0]}, {yx[1]})"
        return f"the returned array has shape {tuple(shape)}; expected {want}"
    bands, nbytes = 1, itemsize
    for s in shape:
        nbytes *= s
    for s in shape[:-2]:
        bands *= s
    if bands > MAX_OUTPUT_BANDS * (in_shape[0] if len(in_shape) == 4 else 1) \
            or nbytes > capacity:
        return f"the returned array is too large ({nbytes} bytes, {bands} bands)"
    return ""
