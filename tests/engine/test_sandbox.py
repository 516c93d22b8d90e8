"""The sandbox pool: results, limits, isolation between calls, capabilities, threads,
the chain executor adapter and test_execute."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from rio_tiler.models import ImageData

from engine.errors import FunctionFailed, FunctionRejected, SandboxError, SandboxLimitExceeded
from engine.sandbox import (
    SandboxPool,
    chain_executor,
    close_default_pool,
    configure,
    simulated_input,
    test_execute,
    test_execute_times,
)

NDVI = ("import numpy as np\n\ndef ndvi(img, red=0, nir=1, *, eps=1e-6):\n"
        "    a = img.astype(np.float32)\n"
        "    return (a[nir] - a[red]) / (a[nir] + a[red] + eps)\n")


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(2, timeout_s=3, memory_mb=768, max_array_mb=16) as p:
        assert p.wait_ready(timeout_s=60)
        yield p


@pytest.fixture(scope="module")
def one():
    """A one-worker pool: consecutive calls land in the same process."""
    with SandboxPool(1, timeout_s=3, memory_mb=768, max_array_mb=16) as p:
        assert p.wait_ready(timeout_s=60)
        yield p


@pytest.fixture
def img():
    return simulated_input((4, 64, 64))


def _ndvi(img, red=0, nir=1, eps=1e-6):
    a = img.astype(np.float32)
    return (a[nir] - a[red]) / (a[nir] + a[red] + eps)


def test_run_matches_in_process_numpy(pool, img):
    out = pool.run(NDVI, "ndvi", img, args=(2, 3), kwargs={"eps": 0.5})
    assert out.dtype == np.float32 and out.shape == (64, 64)
    np.testing.assert_allclose(out, _ndvi(img, 2, 3, 0.5), rtol=1e-6)


@pytest.mark.parametrize(("shape", "body", "expect"), [
    ((64, 64), "return img * 2", lambda a: a * 2),
    ((64, 64), "return np.stack([img, img + 1])", lambda a: np.stack([a, a + 1])),
    ((3, 64, 64), "return img[::-1].astype(np.int32) - 5", lambda a: a[::-1].astype("i4") - 5),
    ((3, 64, 64), "return img > 1000", lambda a: a > 1000),
    ((2, 3, 64, 64), "return img.max(axis=0)", lambda a: a.max(axis=0)),
    ((2, 3, 64, 64), "return img.astype(np.float64) / 7", lambda a: a / 7.0),
    ((2, 3, 64, 64), "return img.mean(axis=(0, 1))", lambda a: a.mean(axis=(0, 1))),
])
def test_shapes_and_dtypes(pool, shape, body, expect):
    a = simulated_input(shape)
    out = pool.run(f"def f(img):\n    {body}\n", "f", a)
    want = expect(a)
    assert out.dtype == want.dtype and out.shape == want.shape
    np.testing.assert_array_equal(out, want)


def test_float_inputs_and_in_place_changes_do_not_leak(one, img):
    a = img.astype(np.float32)
    src = "def f(img):\n    img[0] = -1\n    return img[0] + img[1]\n"
    first = one.run(src, "f", a)
    np.testing.assert_array_equal(first, a[1] - 1)
    assert (a[0] != -1).all()  # the caller's array is untouched
    second = one.run("def g(img):\n    return img[0]\n", "g", a)
    np.testing.assert_array_equal(second, a[0])


def test_augmented_item_assignment(pool, img):
    src = ("def f(img):\n    out = np.zeros(img.shape[1:], dtype=np.int32)\n"
           "    out[img[0] > 1500] += 2\n    out[:, 0] *= 3\n    total = [0]\n"
           "    total[0] += 1\n    return out + total[0]\n")
    out = pool.run(src, "f", img)
    want = np.zeros(img.shape[1:], dtype=np.int32)
    want[img[0] > 1500] += 2
    want[:, 0] *= 3
    np.testing.assert_array_equal(out, want + 1)
    with pytest.raises(FunctionRejected, match="line 3: Augmented assignment"):
        pool.run("def f(img):\n    out = img.copy()\n    out[len(img) - 1] += 1\n"
                 "    return out\n", "f", img)


def test_arguments_must_be_json(pool, img):
    with pytest.raises(SandboxError, match="must be numbers"):
        pool.run(NDVI, "ndvi", img, args=(object(),))
    with pytest.raises(SandboxError, match="must be numbers"):
        pool.run(NDVI, "ndvi", img, args=(float("nan"),))
    with pytest.raises(FunctionFailed, match="TypeError") as info:
        pool.run(NDVI, "ndvi", img, kwargs={"nope": 1})
    assert "nope" in str(info.value)


def test_input_validation(pool):
    with pytest.raises(SandboxError, match="too large"):
        pool.run(NDVI, "ndvi", np.zeros((4, 2048, 2048), dtype=np.float32))
    with pytest.raises(SandboxError, match="2-4 dimensional numeric"):
        pool.run(NDVI, "ndvi", np.zeros(5, dtype=np.uint16))
    with pytest.raises(SandboxError, match="2-4 dimensional numeric"):
        pool.run(NDVI, "ndvi", np.zeros((2, 2, 2), dtype=object))


def test_runtime_error_names_the_users_line(pool, img):
    src = "def f(img):\n    a = img[0]\n    b = a.astype(float)\n    return b / undefined_name\n"
    with pytest.raises(FunctionFailed) as info:
        pool.run(src, "f", img)
    assert info.value.lineno == 4
    assert str(info.value) == "line 4: f() raised NameError: name 'undefined_name' is not defined"


def test_calls_are_isolated_from_each_other(one, img):
    # numpy random state: seeding in one call is not seen by the next
    seeded = "def s(img):\n    np.random.seed(42)\n    return img[0]\n"
    draw = "def d(img):\n    return np.random.random(img.shape[-2:])\n"
    one.run(seeded, "s", img)
    after = one.run(draw, "d", img)
    np.random.seed(42)
    assert not np.allclose(after, np.random.random(img.shape[-2:]))
    assert not np.array_equal(after, one.run(draw, "d", img))  # seeded afresh per call
    # numpy error state
    one.run("def e(img):\n    np.seterr(all='raise')\n    return img[0]\n", "e", img)
    out = one.run("def z(img):\n    return img[0] / np.zeros(img.shape[-2:])\n", "z", img)
    assert np.isinf(out[img[0] > 0]).all()
    # module globals and builtins: a fresh namespace per call
    one.run("COUNT = [0]\ndef c(img):\n    COUNT[0] += 1\n    len = None\n"
            "    return img[0] * COUNT[0]\n", "c", img)
    out = one.run("COUNT = [0]\ndef c(img):\n    COUNT[0] += 1\n    len = None\n"
                  "    return img[0] * COUNT[0]\n", "c", img)
    np.testing.assert_array_equal(out, img[0])
    out = one.run("def l(img):\n    return img[:len(img) - 2]\n", "l", img)
    assert out.shape == (2, 64, 64)
    # the curated modules cannot be changed for the next call
    with pytest.raises(FunctionRejected, match="cannot be modified"):
        one.run("def w(img):\n    m = np\n    m.where = None\n    return img[0]\n", "w", img)
    out = one.run("def u(img):\n    return np.where(img[0] > 0, 1, 0)\n", "u", img)
    np.testing.assert_array_equal(out, np.where(img[0] > 0, 1, 0))


def test_found_leaks_between_calls_are_contained(one, img):
    """Issue 13's leaks that pass the static check: each call's process is fresh."""
    marker = 48611
    one.run(f"def a(img):\n    t = np.full((4, 256, 256), {marker}, dtype=np.uint16)\n"
            "    u = t + 0\n    return u[0, :64, :64]\n", "a", img)
    leaked = one.run(f"def b(img):\n    e = np.empty((4, 256, 256), dtype=np.uint16)\n"
                     f"    return np.full(img.shape[-2:], (e == {marker}).sum())\n", "b", img)
    assert int(leaked[0, 0]) == 0  # np.empty hands out nothing of the previous call
    # fullwidth letters are normalised by Python: this is np.random.seed(1)
    one.run("def s(img):\n    np.\uff52\uff41\uff4e\uff44\uff4f\uff4d.seed(1)\n"
            "    return img[0]\n", "s", img)
    draw = one.run("def d(img):\n    return np.random.random(img.shape[-2:])\n", "d", img)
    assert not np.allclose(draw, np.random.RandomState(1).random_sample(img.shape[-2:]))
    one.run("def g(img):\n    np.random.set_bit_generator(np.random.PCG64(1))\n"
            "    return img[0]\n", "g", img)
    draw = one.run("def d(img):\n    return np.random.random(img.shape[-2:])\n", "d", img)
    assert draw.shape == img.shape[-2:]
    with pytest.raises(FunctionFailed, match="read-only"):
        one.run("def w(img):\n    np.copyto(np.ma.masked.mask, False)\n    return img[0]\n",
                "w", img)
    out = one.run("def m(img):\n    return np.ma.masked_less(img[0], 2000).filled(0)\n",
                  "m", img)
    np.testing.assert_array_equal(out, np.ma.masked_less(img[0], 2000).filled(0))


def test_print_repr_and_warnings_are_harmless(pool, img):
    src = ("def f(img):\n    print('hello', img.dtype, repr(img[0, 0, :2]))\n"
           "    s = str(img.dtype) + repr(img.shape)\n    return np.log(img[0] * 0.0)\n")
    out = pool.run(src, "f", img)
    assert np.isneginf(out).all()


def test_capabilities_are_verified(pool):
    caps = pool.capabilities()
    assert caps["available"] and caps["workers"] == 2 and caps["isolated"]
    for key in ("seccomp", "netns", "readonly_fs", "rlimits", "unprivileged", "no_network",
                "no_fs_write", "no_subprocess"):
        assert isinstance(caps[key], bool), key
    if caps["seccomp"]:  # the filter is verified by a probe child trying what it forbids
        assert caps["blocked"] == {k: True for k in ("open", "listdir", "write", "socket",
                                                     "fork", "exec", "signal_parent")}
        assert caps["zygote_threads"] == 1 and "zygote" in caps["design"]
    if os.geteuid() == 0 and Path("/proc/self/ns/net").exists():
        # as root on Linux (this project's machines and CI) everything must be enforced
        assert all(caps[k] for k in ("seccomp", "netns", "readonly_fs", "rlimits",
                                     "unprivileged", "no_network", "no_fs_write",
                                     "no_subprocess")), caps


def test_call_processes_run_unprivileged_with_limits(pool, img):
    caps = pool.capabilities()
    slow = "def f(img):\n    x = 0\n    for i in range(10 ** 7):\n        x += 1\n    return img[0]\n"
    def call():
        with contextlib.suppress(SandboxLimitExceeded):  # a loaded machine may be slow
            pool.run(slow, "f", img)

    thread = threading.Thread(target=call)
    thread.start()
    while not pool.busy_pids() and thread.is_alive():
        time.sleep(0.005)
    pids = pool.busy_pids()
    for p in pids:  # wait until the child has restricted itself (before reading its call)
        while "NoNewPrivs:\t1" not in Path(f"/proc/{p}/status").read_text() \
                and thread.is_alive():
            time.sleep(0.005)
    texts = [(Path(f"/proc/{p}/status").read_text(), Path(f"/proc/{p}/limits").read_text())
             for p in pids]
    thread.join()
    assert len(texts) == 1
    for status, limits in texts:
        assert re.search(r"Max file size\s+0\s+0", limits)
        assert re.search(r"Max core file size\s+0\s+0", limits)
        assert re.search(rf"Max address space\s+{768 * 1024 * 1024}\s", limits)
        if caps["seccomp"]:
            assert re.search(r"Seccomp:\s+2", status) and re.search(r"NoNewPrivs:\s+1", status)
        if caps["unprivileged"] and os.geteuid() == 0:
            assert re.search(r"Uid:\s+65534", status)


def test_no_shared_memory_names_and_nothing_left_behind():
    """Segments are anonymous memfds: no /dev/shm name exists that another process could
    open, and closing the pool ends the zygote and its call processes."""
    def shm_fds(pid):
        targets = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(FileNotFoundError):  # closed meanwhile by a thread
                targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        return [t for t in targets if t.startswith("/dev/shm")]

    with SandboxPool(1, memory_mb=768, max_array_mb=4) as p:
        assert p.wait_ready(timeout_s=60)
        pids = p.worker_pids()
        p.run("def f(img):\n    return img\n", "f", np.ones((8, 8), dtype=np.uint8))
        assert shm_fds(os.getpid()) == [] and shm_fds(pids[0]) == []
        # (POSIX semaphores of other libraries, /dev/shm/sem.*, are not our segments)
        maps = Path(f"/proc/{os.getpid()}/maps").read_text().splitlines()
        assert [m for m in maps if "/dev/shm/" in m and "/dev/shm/sem." not in m] == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    with pytest.raises(SandboxError, match="closed"):
        p.run("def f(img):\n    return img\n", "f", np.ones((8, 8), dtype=np.uint8))


def test_many_threads_share_the_pool(pool):
    arrays = [simulated_input((4, 32, 32), seed=i) for i in range(24)]

    def call(a):
        return pool.run(NDVI, "ndvi", a)

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(call, arrays))
    for a, out in zip(arrays, results, strict=True):
        np.testing.assert_allclose(out, _ndvi(a), rtol=1e-6)


def test_memory_limit_must_fit_the_worker():
    with SandboxPool(1, memory_mb=100, max_array_mb=4, start_timeout_s=30) as p:
        caps = p.capabilities()
        assert caps["available"] is False and "memory_mb=100" in caps["error"]


# -- the chain executor adapter ------------------------------------------------------------
class _Step:
    def __init__(self, source, function, *args, **kwargs):
        self.source, self.function, self.args, self.kwargs = source, function, args, kwargs


def test_chain_executor_keeps_nodata_masked(pool, img):
    mask = np.zeros(img.shape, dtype=bool)
    mask[:, :5, :7] = True  # nodata in every band
    mask[0, 20, 20] = True  # one band only: not nodata
    arr = np.ma.MaskedArray(img, mask=mask)
    out = chain_executor(pool)(_Step(NDVI, "ndvi", 2, 3), arr, band_names=list("abcd"),
                               dates=None)
    np.testing.assert_allclose(out.data, _ndvi(img, 2, 3), rtol=1e-6)
    np.testing.assert_array_equal(out.mask, mask.all(axis=0))
    stack = np.ma.MaskedArray(np.stack([img, img]), mask=np.stack([mask, np.zeros_like(mask)]))
    src = "def f(s):\n    return s.max(axis=0)\n"
    out = chain_executor(pool)(_Step(src, "f"), stack, band_names=list("abcd"), dates=None)
    assert out.shape == (4, 64, 64) and not out.mask.any()  # the 2nd date has data
    src = "def g(s):\n    return s[:, :2]\n"
    out = chain_executor(pool)(_Step(src, "g"), stack, band_names=list("abcd"), dates=None)
    assert out.shape == (2, 2, 64, 64)
    assert out.mask[0, :, :5, :7].all() and not out.mask[1].any()


def test_chain_execute_step_runs_in_the_sandbox(pool, img):
    from engine.chain.executor import set_executor
    from engine.chain.steps import Execute

    step = Execute(function="ndvi", source=NDVI, args=[2, 3])
    previous = set_executor(chain_executor(pool))
    try:
        res = step(ImageData(np.ma.MaskedArray(img), band_names=["B02", "B03", "B04", "B08"]))
    finally:
        set_executor(previous)
    np.testing.assert_allclose(res.array[0].data, _ndvi(img, 2, 3), rtol=1e-6)
    with pytest.raises(FunctionRejected, match="line 2: import of 'os'"):
        Execute(function="f", source="def f(img):\n    import os\n    return img\n")


def test_a_process_never_serves_two_chains(img):
    from engine.chain.executor import chain_scope

    with SandboxPool(1, timeout_s=5, memory_mb=768, max_array_mb=16,
                     calls_per_process=8) as p:
        run = chain_executor(p)
        step = _Step(NDVI, "ndvi")
        with chain_scope("chain-a"):
            for _ in range(3):
                np.testing.assert_allclose(run(step, img).data, _ndvi(img), rtol=1e-6)
        with chain_scope("chain-b"):
            np.testing.assert_allclose(run(step, img).data, _ndvi(img), rtol=1e-6)
        bound = sorted((p_.key, p_.pid, p_.used) for v in p._idle.values() for p_ in v)
        assert len(bound) == 2 and bound[0][1] != bound[1][1]  # same step, two processes
        assert sorted(u for _, _, u in bound) == [1, 3]  # chain-a's reused for its 3 calls


def test_chain_apply_scopes_its_steps_to_the_chain_id(pool, img):
    from engine.chain import Chain
    from engine.chain.executor import current_chain, set_executor

    chain = Chain.model_validate({"source": {"collection": "c", "bands": ["a", "b", "c", "d"]},
                                  "steps": [{"name": "execute", "function": "ndvi",
                                             "source": NDVI}]})
    seen = []

    def recording(step, array, **kwargs):
        seen.append(current_chain())
        return chain_executor(pool)(step, array, **kwargs)

    previous = set_executor(recording)
    try:
        chain.apply(ImageData(np.ma.MaskedArray(img), band_names=["a", "b", "c", "d"]))
    finally:
        set_executor(previous)
    assert seen == [chain.id] and current_chain() == ""


# -- test_execute (the seed's testExecute) --------------------------------------------------
@pytest.fixture(scope="module")
def default_pool_small():
    configure(size=1, timeout_s=3, memory_mb=768, max_array_mb=16)
    yield
    close_default_pool()
    configure(size=2)


def stubble(img, v4, v6, v8, v11min, v11max):
    b4, b6, b8, b11 = img[0], img[1], img[2], img[3]
    res = numpy.ones_like(b4)  # noqa: F821 - the sandbox pre-binds numpy, as the seed did
    res[b4 >= v4] = 0
    res[b6 >= v6] = 0
    res[b8 >= v8] = 0
    res[numpy.logical_or(b11 <= v11min, b11 >= v11max)] = 0  # noqa: F821
    return res


def broken(img, k):
    out = img[0] * k
    return out / missing  # noqa: F821 - the error test_execute must point at


def maxNDI(inputimage, fband11, fband8, fband4, fbandR=0, fbandG=0, fbandB=0):
    b8 = inputimage[:, fband8].astype("float32")
    b4 = inputimage[:, fband4].astype("float32")
    index = np.argmax((b8 - b4) / (b8 + b4 + 1), axis=0)
    return np.array([index.choose(inputimage[:, b]) for b in (fbandR, fbandG, fbandB)])


def test_test_execute_runs_the_seed_examples(default_pool_small):
    assert test_execute(stubble, 1000, 1200, 1200, 500, 1600) is True
    assert test_execute_times(2, 8, maxNDI, 0, 1, 2, 2, 3, 4) is True


def test_test_execute_points_at_the_users_file_line(default_pool_small):
    with pytest.raises(FunctionFailed) as info:
        test_execute(broken, 2)
    line = broken.__code__.co_firstlineno + 2
    assert info.value.lineno == line
    assert f"test_sandbox.py, line {line}: NameError" in str(info.value)
    with pytest.raises(FunctionRejected, match="cannot be called with these arguments"):
        test_execute(stubble, 1000)


def test_execute_in_a_notebook_like_namespace(default_pool_small, tmp_path):
    # functions defined in executed cells (IPython registers cell sources in linecache)
    import linecache

    cell = "<ipython-input-7>"
    code = "def cellfn(img, k=1):\n    x = img[0]\n    return x.resize((2,))\n"
    linecache.cache[cell] = (len(code), None, code.splitlines(True), cell)
    ns: dict = {}
    exec(compile(code, cell, "exec"), ns)  # noqa: S102 - defines the test's function only
    with pytest.raises(FunctionRejected, match=r"<ipython-input-7>, line 3: the method "
                                               r"'resize' is not allowed"):
        test_execute(ns["cellfn"])
    assert threading.active_count() >= 1
