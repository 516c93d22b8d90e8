"""Hostile user functions: each is contained with a clear error, the pool stays healthy
(a normal call succeeds right after), and nothing appears on disk.

Static cases are refused by the check before any worker sees them; run-time cases pass
the check and are stopped by the guards, the curated namespaces or the worker limits.
"""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time

import numpy as np
import pytest
from sandbox_cases import NDVI, assert_healthy, expected_ndvi, small_img

from engine.errors import FunctionFailed, FunctionRejected, SandboxError, SandboxLimitExceeded
from engine.sandbox import SandboxPool


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(2, timeout_s=2, memory_mb=768, max_array_mb=16) as p:
        assert p.wait_ready(timeout_s=60)
        yield p


@pytest.fixture
def img():
    return small_img()




def _src(body: str, target: str) -> str:
    """A function ``f(img)`` with ``body`` ({target} = a path that must stay absent)."""
    return "def f(img):\n" + textwrap.indent(textwrap.dedent(body).format(target=target), "    ")


# (id, body, line of the offence within f, fragment of the reason)
STATIC = [
    ("import-os", "import os\nos.system('touch {target}')\nreturn img[0]", 2, "import of 'os'"),
    ("dunder-import", "m = __import__('os')\nreturn img[0]", 2, "'__import__'"),
    ("importlib", "import importlib\nreturn img[0]", 2, "importlib"),
    ("from-os", "from os import system\nreturn img[0]", 2, "import of 'os'"),
    ("builtins-dict", "e = __builtins__['eval']\nreturn img[0]", 2, "__builtins__"),
    ("sys-modules", "import sys\nos = sys.modules['os']\nreturn img[0]", 2, "import of 'sys'"),
    ("subclasses", "x = ().__class__.__bases__[0].__subclasses__()\nreturn img[0]", 2,
     "__subclasses__"),
    ("class-attr", "c = img.__class__\nreturn img[0]", 2, "__class__"),
    ("getframe", "import sys\nf = sys._getframe()\nreturn img[0]", 2, "import of 'sys'"),
    ("traceback-frame", ("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n"
     "    g = e.__traceback__.tb_frame.f_globals\nreturn img[0]"), 5, "f_globals"),
    ("traceback-attr", ("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n"
     "    t = e.__traceback__\nreturn img[0]"), 5, "__traceback__"),
    ("tb-frame-plain", ("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n"
     "    t = e.with_traceback(None)\nreturn img[0]"), 5, "with_traceback"),
    ("generator-yield", "yield img[0]", 2, "yield"),
    ("generator-frame", "g = (x for x in [1])\nfr = g.gi_frame\nreturn img[0]", 2,
     "generator expressions"),
    ("gi-frame-attr", "g = [1]\nfr = g.gi_frame\nreturn img[0]", 3, "gi_frame"),
    ("format-class", "s = '{{0.__class__}}'.format(img)\nreturn img[0]", 2, "'format'"),
    ("format-map", "s = '{{x.dtype}}'.format_map({{'x': img}})\nreturn img[0]", 2,
     "format_map"),
    ("fstring-dunder", "s = f'{{img.__class__}}'\nreturn img[0]", 2, "__class__"),
    ("func-globals", "g = f.__globals__\nreturn img[0]", 2, "__globals__"),
    ("func-code", "c = f.__code__\nreturn img[0]", 2, "__code__"),
    ("np-save", "np.save('{target}', img)\nreturn img[0]", 2, "'save'"),
    ("np-load", "x = np.load('/etc/passwd')\nreturn img[0]", 2, "'load'"),
    ("tofile", "img.tofile('{target}')\nreturn img[0]", 2, "'tofile'"),
    ("dump", "img.dump('{target}')\nreturn img[0]", 2, "'dump'"),
    ("dumps", "s = img.dumps()\nreturn img[0]", 2, "'dumps'"),
    ("reduce", "r = img.__reduce__()\nreturn img[0]", 2, "__reduce__"),
    ("ctypes-attr", "p = img.ctypes\nreturn img[0]", 2, "'ctypes'"),
    ("data-attr", "m = img.data\nreturn img[0]", 2, "'data'"),
    ("ctypeslib", "p = np.ctypeslib.as_ctypes(img)\nreturn img[0]", 2, "numpy.ctypeslib"),
    ("np-lib-format", "np.lib.format.write_array(None, img)\nreturn img[0]", 2, "'format'"),
    ("np-lib-stride", "x = np.lib.stride_tricks.as_strided(img, (10 ** 9,), (0,))\nreturn img[0]",
     2, "numpy.lib is not"),
    ("import-ctypeslib", "import numpy.ctypeslib\nreturn img[0]", 2, "numpy.ctypeslib"),
    ("from-numpy-memmap", "from numpy import memmap\nreturn img[0]", 2, "memmap"),
    ("as-strided", "from numpy.lib.stride_tricks import as_strided\nreturn img[0]", 2,
     "numpy.lib.stride_tricks"),
    ("frombuffer", "x = np.frombuffer(b'abcd', dtype='uint8')\nreturn img[0]", 2,
     "numpy.frombuffer"),
    ("bit-generator-ctypes", ("g = np.random.default_rng().bit_generator.ctypes\n"
     "return img[0]"), 2, "'ctypes'"),
    ("array-resize", "img.resize((10 ** 6,), refcheck=False)\nreturn img[0]", 2, "resize"),
    ("open", "open('{target}', 'w').write('x')\nreturn img[0]", 2, "'open'"),
    ("eval", "return eval('img[0]')", 2, "'eval'"),
    ("exec", "exec('x = 1')\nreturn img[0]", 2, "'exec'"),
    ("getattr", "c = getattr(img, '__class__')\nreturn img[0]", 2, "'getattr'"),
    ("type", "t = type(img)\nreturn img[0]", 2, "'type'"),
    ("globals", "g = globals()\nreturn img[0]", 2, "'globals'"),
    ("vars", "v = vars()\nreturn img[0]", 2, "'vars'"),
    ("global-stmt", "global np\nreturn img[0]", 2, "global"),
    ("class-def", "class A:\n    pass\nreturn img[0]", 2, "class"),
    ("socket", "import socket\nsocket.create_connection(('127.0.0.1', 80))\nreturn img[0]",
     2, "import of 'socket'"),
    ("subprocess", ("import subprocess\nsubprocess.run(['touch', '{target}'])\n"
     "return img[0]"), 2, "subprocess"),
    ("os-exit", "import os\nos._exit(0)", 2, "import of 'os'"),
    ("ctypes-segfault", "import ctypes\nctypes.string_at(0)\nreturn img[0]", 2,
     "import of 'ctypes'"),
    ("faulthandler-segfault", "import faulthandler\nfaulthandler._sigsegv()", 2,
     "import of 'faulthandler'"),
    ("capsule", "c = np.random.default_rng().bit_generator.capsule\nreturn img[0]", 2,
     "'capsule'"),
    ("plain-scipy", "import scipy\nreturn img[0]", 2, "import of 'scipy'"),
    ("scipy-io", "from scipy import io\nreturn img[0]", 2, "import of 'scipy'"),
    ("relative-import", "from . import x\nreturn img[0]", 2, "relative"),
    ("np-write-attr", "np.where = None\nreturn img[0]", 2, "read-only"),
    ("bare-except", "try:\n    x = 1\nexcept:\n    pass\nreturn img[0]", 4, "bare"),
    ("breakpoint", "breakpoint()\nreturn img[0]", 2, "'breakpoint'"),
    ("dunder-name", "x = __name__\nreturn img[0]", 2, "'__name__'"),
    ("match", "match img:\n    case _:\n        pass\nreturn img[0]", 2, "match"),
    # issue 13, "what was found": the real ndarray class, raw buffers, library flags, runners
    ("ma-baseclass", "nd = np.ma.MaskedArray(img).baseclass\nreturn img[0]", 2, "'baseclass'"),
    ("masked-baseclass", "nd = np.ma.masked.baseclass\nreturn img[0]", 2, "'baseclass'"),
    ("mvoid", "v = np.ma.mvoid(img[0, 0, :2])\nreturn img[0]", 2, "'mvoid'"),
    ("array-base", "b = img.base\nreturn img[0]", 2, "'base'"),
    ("view-base", "b = img[0].base\nreturn img[0]", 2, "'base'"),
    ("setflags-mask", "m = np.ma.masked.mask\nm.setflags(write=True)\nreturn img[0]", 3,
     "'setflags'"),
    ("linalg-test", "np.linalg.test()\nreturn img[0]", 2, "numpy.linalg.test is not"),
    ("fft-test", "np.fft.test()\nreturn img[0]", 2, "numpy.fft.test is not"),
    ("random-test", "np.random.test()\nreturn img[0]", 2, "numpy.random.test is not"),
    ("ma-test", "np.ma.test()\nreturn img[0]", 2, "numpy.ma.test is not"),
    ("ndimage-test", "from scipy import ndimage\nndimage.test()\nreturn img[0]", 3,
     "scipy.ndimage.test is not"),
    ("from-ndimage-test", "from scipy.ndimage import test\nreturn img[0]", 2,
     "scipy.ndimage.test is not"),
]


@pytest.mark.parametrize(("body", "line", "reason"), [c[1:] for c in STATIC],
                         ids=[c[0] for c in STATIC])
def test_static_refusal(pool, img, tmp_path, body, line, reason):
    target = str(tmp_path / "pwned")
    with pytest.raises(FunctionRejected) as info:
        pool.run(_src(body, target), "f", img)
    assert info.value.lineno == line, str(info.value)
    assert reason in str(info.value)
    assert str(info.value).startswith(f"line {line}: ")
    assert_healthy(pool, img)
    assert list(tmp_path.iterdir()) == []


def test_static_refusals_need_no_worker(pool, img):
    before = pool.worker_pids()
    for case in STATIC:
        with pytest.raises(FunctionRejected):
            pool.run(_src(case[1], "/nonexistent"), "f", img)
    assert pool.worker_pids() == before


def test_more_than_40_hostile_functions():
    assert len(STATIC) + len(RUNTIME) >= 40 + 10


def test_syntax_error_and_missing_function(pool, img):
    with pytest.raises(FunctionRejected, match=r"^line 2: syntax error") as info:
        pool.run("def f(img):\n    return img[0\n", "f", img)
    assert info.value.lineno == 2
    with pytest.raises(FunctionRejected, match="does not define a function named 'g'"):
        pool.run(NDVI, "g", img)
    with pytest.raises(FunctionRejected, match="defined more than once"):
        pool.run(NDVI + NDVI, "ndvi", img)
    with pytest.raises(FunctionRejected, match="first parameter"):
        pool.run("def f():\n    return 1\n", "f", img)
    with pytest.raises(FunctionRejected, match="top level"):
        pool.run("import numpy as np\nnp.ones(3)\n" + NDVI, "ndvi", img)


@pytest.mark.parametrize(("source", "line"), [
    ("def f(img):\n    return img[0]\n\nf = np.asarray\n", 4),
    ("def f(img):\n    return img[0]\n\nx = (f := np.asarray)\n", 4),
    ("def f(img):\n    return img[0]\n\nfrom numpy import asarray as f\n", 4),
    ("def f(img):\n    return img[0]\n\nimport numpy as f\n", 4),
    ("def f(img):\n    return img[0]\n\nf, g = np.asarray, 1\n", 4),
])
def test_the_checked_function_cannot_be_rebound(pool, img, source, line):
    with pytest.raises(FunctionRejected, match=f"^line {line}: the top level rebinds 'f'"):
        pool.run(source, "f", img)


@pytest.mark.parametrize("source", ["-" * 24000 + "img", ".T" * 24000, "()" * 24000,
                                    "img" + ".T" * 24000, "[" * 24000 + "]" * 24000])
def test_deep_or_huge_sources_are_refused(pool, img, source):
    with pytest.raises(FunctionRejected):
        pool.run(source, "f", img)


# (id, body, exception, message fragment, line or None) - these pass the static check.
RUNTIME = [
    ("infinite-loop", "while True:\n    pass", SandboxLimitExceeded, "time limit", None),
    ("endless-iterator", "for _ in iter(int, 1):\n    pass\nreturn img[0]",
     SandboxLimitExceeded, "time limit", None),
    ("memory-bomb-numpy", "x = np.ones((20000, 20000))\nreturn img[0]", SandboxLimitExceeded,
     "memory limit", 2),
    ("memory-bomb-list", "x = []\nwhile True:\n    x.append(np.empty(10 ** 7, dtype=np.uint8))",
     SandboxLimitExceeded, "memory limit", 4),
    ("memory-bomb-str", "s = 'a' * (10 ** 10)\nreturn img[0]", SandboxLimitExceeded,
     "memory limit", 2),
    ("deep-recursion", "return f(img)", FunctionFailed, "RecursionError", 2),
    ("raises", "x = 1\nraise ValueError('boom')", FunctionFailed, "ValueError: boom", 3),
    ("wrong-shape", "return img[:, :10]", FunctionFailed, "shape", None),
    ("object-dtype", "return img.astype(object)", FunctionFailed, "dtype object", None),
    ("complex-dtype", "return img.astype(np.complex64)", FunctionFailed, "dtype complex64",
     None),
    ("huge-output", "return np.zeros((300,) + img.shape[1:], dtype=np.uint8)", FunctionFailed,
     "too large", None),
    ("not-an-array", "return [1, 2, 3]", FunctionFailed, "numpy array", None),
    ("raw-buffer-ndarray", "x = np.ndarray((4,), dtype=object, buffer=img)\nreturn img[0]",
     FunctionFailed, "not available in the sandbox", 2),
    ("object-view", "return img.view(object)[0]", FunctionFailed, "TypeError", 2),
    ("write-namespace-alias", "m = np\nm.where = None\nreturn img[0]", FunctionRejected,
     "cannot be modified", 3),
    ("violation-not-catchable", ("m = np\ntry:\n    m.where = None\nexcept Exception:\n"
     "    pass\nreturn img[0]"), FunctionRejected, "cannot be modified", 4),
    ("namespace-via-list", "x = [np]\nc = x[0].ctypeslib\nreturn img[0]", FunctionFailed,
     "numpy.ctypeslib is not available", 3),
    ("random-module", "r = np.random\nb = [r][0].bit_generator\nreturn img[0]",
     FunctionFailed, "bit_generator is not available", 3),
    ("write-function-attr", "g = np.mean\ng.cache = 1\nreturn img[0]", FunctionRejected,
     "cannot be modified", 3),
    ("lambda-write", "h = lambda: 0\nh.x = 1\nreturn img[0]", FunctionRejected,
     "cannot be modified", 3),
    ("big-int", "x = 10 ** (10 ** 9)\nreturn img[0]", SandboxLimitExceeded, "limit", None),
    ("deep-error-value", "x = []\nfor i in range(200000):\n    x = [x]\nraise ValueError(x)",
     FunctionFailed, "ValueError: <the exception's value cannot be printed>", 5),
    ("masked-mask-write", "np.copyto(np.ma.masked.mask, False)\nreturn img[0]", FunctionFailed,
     "read-only", 2),
    ("control-chars-in-error", "raise ValueError('a\\x1b[31mb\\x00c' * 5000)", FunctionFailed,
     "a?[31mb?c", 2),
]


@pytest.mark.parametrize(("body", "exc", "fragment", "line"), [c[1:] for c in RUNTIME],
                         ids=[c[0] for c in RUNTIME])
def test_runtime_containment(pool, img, tmp_path, body, exc, fragment, line):
    source = _src(body, str(tmp_path / "pwned"))
    pool.check(source, "f")  # passes the static check: the run-time defences stop it
    with pytest.raises(exc) as info:
        pool.run(source, "f", img)
    assert fragment in str(info.value)
    if line is not None:
        assert info.value.lineno == line, str(info.value)
    assert_healthy(pool, img)
    assert list(tmp_path.iterdir()) == []


def test_timeout_is_wall_clock_and_kills_the_call_process(pool, img):
    zygote = pool.worker_pids()
    seen: list[int] = []
    threading.Timer(0.5, lambda: seen.extend(pool.busy_pids())).start()
    t0 = time.monotonic()
    with pytest.raises(SandboxLimitExceeded, match="time limit of 2 s"):
        pool.run(_src("while True:\n    pass", ""), "f", img)
    assert 1.9 < time.monotonic() - t0 < 6
    assert len(seen) == 1 and pool.busy_pids() == []
    _wait_gone(seen[0])
    assert pool.worker_pids() == zygote  # the zygote never runs user code: it stays
    assert_healthy(pool, img)


def _wait_gone(pid: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not os.path.exists(f"/proc/{pid}")


def test_worker_killed_mid_call_while_another_thread_calls(pool, img):
    assert pool.wait_ready(timeout_s=60)
    slow = _src("x = 0\nfor i in range(10 ** 8):\n    x += 1\nreturn img[0]", "")
    errors: list[BaseException] = []

    def victim():
        try:
            pool.run(slow, "f", img)
        except SandboxError as exc:
            errors.append(exc)

    thread = threading.Thread(target=victim)
    thread.start()
    deadline = time.monotonic() + 5
    while not pool.busy_pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    (pid,) = pool.busy_pids()
    results = []

    def bystander():
        for _ in range(5):
            results.append(pool.run(NDVI, "ndvi", img))

    other = threading.Thread(target=bystander)
    other.start()
    os.kill(pid, signal.SIGKILL)
    thread.join(10)
    other.join(30)
    assert len(errors) == 1 and isinstance(errors[0], SandboxLimitExceeded)
    assert "SIGKILL" in str(errors[0])
    assert len(results) == 5
    for out in results:
        np.testing.assert_allclose(out, expected_ndvi(img), rtol=1e-6)
    _wait_gone(pid)
    assert_healthy(pool, img)


def test_segfaulting_worker_is_reported_and_replaced(pool, img):
    assert pool.wait_ready(timeout_s=60)
    slow = _src("x = 0\nfor i in range(10 ** 8):\n    x += 1\nreturn img[0]", "")
    timer = None

    def crash():
        for pid in pool.busy_pids():
            os.kill(pid, signal.SIGSEGV)

    timer = threading.Timer(0.3, crash)
    timer.start()
    with pytest.raises(SandboxLimitExceeded, match="crashed \\(SIGSEGV\\)"):
        pool.run(slow, "f", img)
    timer.join()
    assert_healthy(pool, img)


def test_cpu_limit_kills_busy_function():
    # The wall-clock limit is generous: the CPU limit (SIGXCPU) must fire first.
    with SandboxPool(1, timeout_s=30, cpu_s=1, memory_mb=768, max_array_mb=16) as p:
        img = np.zeros((2, 8, 8), dtype=np.uint16)
        t0 = time.monotonic()
        with pytest.raises(SandboxLimitExceeded, match="CPU time limit"):
            p.run(_src("while True:\n    pass", ""), "f", img)
        assert time.monotonic() - t0 < 25
        out = p.run(_src("return img[0] + 1", ""), "f", img)
        assert out.sum() == 64
