"""Assume breach: the process is the boundary.

``SandboxPool._run_unchecked`` (tests only) runs plain Python with real builtins and the
real numpy in a call's child, as if a function had escaped the static check and the
guards. It must not open or list files, create sockets, fork or exec, signal the parent
or the zygote, find another call's data, or leave anything the next call sees; the
parent and other users stay healthy.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from sandbox_cases import assert_healthy, small_img

from engine.errors import FunctionFailed, SandboxLimitExceeded
from engine.sandbox import SandboxPool


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(2, timeout_s=5, memory_mb=768, max_array_mb=16) as p:
        assert p.wait_ready(timeout_s=60)
        caps = p.capabilities()
        if not caps.get("seccomp"):
            pytest.skip(f"this machine enforces no seccomp filter: {caps}")
        yield p


@pytest.fixture
def img():
    return small_img()




#: Each attempt returns True when the child was refused (an OSError).
ATTEMPTS = """
import os, socket, signal

def refused(action):
    try:
        action()
    except OSError:
        return True
    return False

def spawn():
    if os.fork() == 0:
        os._exit(0)

def libc_call(name, *args):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) == -1:
        raise OSError(ctypes.get_errno(), name)

def exec_memory():
    import mmap
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)

def attempts(img, parent, zygote, path):
    out = [
        refused(lambda: open('/etc/hostname').read()),
        refused(lambda: open('/proc/self/status').read()),
        refused(lambda: os.listdir('/')),
        refused(lambda: os.stat('/etc/passwd')),
        refused(lambda: open(path, 'w').write('pwned')),
        refused(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)),
        refused(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)),
        refused(spawn),
        refused(lambda: os.execv('/bin/sh', ['sh', '-c', 'touch ' + path])),
        refused(lambda: os.kill(parent, signal.SIGKILL)),
        refused(lambda: os.kill(zygote, signal.SIGKILL)),
        refused(lambda: os.kill(os.getpid(), 0)),
        refused(lambda: libc_call('ptrace', 16, parent, 0, 0)),  # PTRACE_ATTACH
        refused(exec_memory),
        refused(lambda: libc_call('unshare', 0x10000000)),  # a new user namespace
    ]
    return np.array(out, dtype=bool)[:, None, None] & np.ones(img.shape[-2:], dtype=bool)
"""
ATTEMPT_NAMES = ["open", "open-proc", "listdir", "stat", "write", "inet-socket",
                 "unix-socket", "fork", "exec", "kill-parent", "kill-zygote", "kill-self",
                 "ptrace", "exec-memory", "unshare"]


def test_unchecked_code_can_only_compute(pool, img, tmp_path):
    target = str(tmp_path / "pwned")
    (zygote,) = pool.worker_pids()
    out = pool._run_unchecked(ATTEMPTS, "attempts", img, args=(os.getpid(), zygote, target))
    refused = dict(zip(ATTEMPT_NAMES, out[:, 0, 0].tolist(), strict=True))
    assert refused == {name: True for name in ATTEMPT_NAMES}
    assert list(tmp_path.iterdir()) == []
    assert pool.worker_pids() == [zygote]
    assert_healthy(pool, img)


def test_unchecked_thread_creation_fails(pool, img):
    src = ("import threading\ndef f(img):\n    t = threading.Thread(target=lambda: None)\n"
           "    t.start()\n    return img[0]\n")
    with pytest.raises(FunctionFailed, match="RuntimeError: can't start new thread"):
        pool._run_unchecked(src, "f", img)
    assert_healthy(pool, img)


SECRET = "s3cr3t-7f1d2c"
MARKER = 48611  # a uint16 pixel value the victim's input is full of

#: Searches everything reachable in its own process for the victim's source and pixels.
SNOOP = """
import gc, types

def contents(o):
    if isinstance(o, dict):
        return list(o.keys()) + list(o.values())
    if isinstance(o, (list, tuple, set, frozenset)):
        return list(o)
    if isinstance(o, types.FunctionType):
        return list(o.__code__.co_consts) + [o.__code__.co_filename]
    return []

def snoop(img, head, tail, marker):
    secret = head + tail  # only the halves travel in this call's message
    found_text = any(isinstance(x, (str, bytes)) and secret in str(x)
                     for o in gc.get_objects() for x in contents(o))
    # whatever the heap hands out (the old warm worker returned the last call's arrays)
    found_pixels = bool((img == marker).any()) or any(
        bool((np.empty(n, dtype=np.uint16) == marker).sum() > 100)
        for n in (4 * 256 * 256, 256 * 256, 8 * 256 * 256, 4 * 32 * 32))
    return np.full(img.shape[-2:], 2 * found_text + found_pixels, dtype=np.uint8)
"""


def _victim_source() -> str:
    return (f"KEY = '{SECRET}'\n\ndef victim(img):\n"
            "    x = img.astype('float64') * len(KEY)\n    y = x.copy()\n    z = y + 1\n"
            "    return (z - 1) / len(KEY)\n")


def test_another_calls_source_and_pixels_are_not_found(pool):
    victim_img = np.full((4, 256, 256), MARKER, dtype=np.uint16)
    for _ in range(3):
        out = pool.run(_victim_source(), "victim", victim_img)
        np.testing.assert_allclose(out, victim_img.astype("float64"))
    attacker_img = np.zeros((4, 32, 32), dtype=np.uint16)
    got = pool._run_unchecked(SNOOP, "snoop", attacker_img, args=(SECRET[:6], SECRET[6:], MARKER))
    assert int(got[0, 0]) == 0  # neither the secret source nor the pixels
    # the snoop finds both when they are in its own process (so a 0 above means absent)
    own = pool._run_unchecked(f"KEY = '{SECRET}'\n" + SNOOP, "snoop", victim_img[:, :32, :32],
                              args=(SECRET[:6], SECRET[6:], MARKER))
    assert int(own[0, 0]) == 3

    # ... nor while the victim runs at the same time
    slow_victim = (f"KEY = '{SECRET}'\n\ndef victim(img):\n    x = img.astype('float64')\n"
                   "    for i in range(300):\n        x = x * 1.0\n    return x\n")
    results = []
    thread = threading.Thread(target=lambda: results.append(
        pool.run(slow_victim, "victim", victim_img)))
    thread.start()
    got = pool._run_unchecked(SNOOP, "snoop", attacker_img, args=(SECRET[:6], SECRET[6:], MARKER))
    thread.join()
    assert int(got[0, 0]) == 0
    np.testing.assert_array_equal(results[0], victim_img.astype("float64"))


#: Changes everything it can reach: modules, builtins, the runner, RNG, error state.
POISON = """
import builtins
import engine.sandbox.worker as worker

def poison(img):
    np.random.seed(1)
    np.seterr(all='raise')
    np.add = np.subtract
    np.pwned = True
    builtins.sum = lambda *a: 0
    worker.Runner.run = lambda self, msg, i, o: {'ok': True, 'shape': [32, 32], 'dtype': '<u2'}
    worker.Runner.call = lambda *a, **k: np.full((32, 32), 666, dtype=np.uint16)
    try:
        np.ma.masked.mask.setflags(write=True)
        np.copyto(np.ma.masked.mask, False)
    except ValueError:
        pass
    return img[0]
"""
CHECK_CLEAN = """
import builtins

def clean(img):
    seeded = np.random.RandomState(1).random_sample(4)
    draws = np.random.random_sample(4)
    ok = [not hasattr(np, 'pwned'), np.add is not np.subtract, builtins.sum([1]) == 1,
          np.geterr()['divide'] == 'warn', not np.allclose(seeded, draws),
          bool(np.ma.masked.mask)]
    return np.array(ok)[:, None, None] & np.ones(img.shape[-2:], dtype=bool)
"""


def test_nothing_an_escaped_call_changes_reaches_the_next(pool, img):
    pool._run_unchecked(POISON, "poison", img)
    flags = pool._run_unchecked(CHECK_CLEAN, "clean", img)[:, 0, 0]
    assert flags.tolist() == [True] * 6
    assert_healthy(pool, img)  # the next user's NDVI: its own pixels, not the attacker's
    for _ in range(3):
        assert_healthy(pool, img)


def test_concurrent_users_each_get_their_own_result_while_one_is_killed(img):
    """8 users with different functions at once (each compared with in-process numpy),
    while a ninth call is killed at the time limit and a tenth hits the memory limit."""
    funcs = {
        f"u{i}": ((f"def u{i}(img):\n    a = img.astype('float64')\n"
                   f"    return a[{i % 4}] * {i + 1} - a[{(i + 1) % 4}] + {i}\n"),
                  lambda a, i=i: a.astype("float64")[i % 4] * (i + 1)
                  - a.astype("float64")[(i + 1) % 4] + i)
        for i in range(8)
    }
    inputs = {name: (np.random.default_rng(k).integers(0, 10_000, (4, 64, 64))
                     .astype(np.uint16)) for k, name in enumerate(funcs)}
    with SandboxPool(4, timeout_s=2, memory_mb=768, max_array_mb=16) as pool:
        assert pool.wait_ready(timeout_s=60)
        results: dict[str, list[np.ndarray]] = {name: [] for name in funcs}
        errors: list[BaseException] = []
        start = threading.Barrier(10)

        def user(name: str) -> None:
            start.wait()
            for _ in range(4):
                results[name].append(pool.run(funcs[name][0], name, inputs[name]))

        def looper() -> None:
            start.wait()
            try:
                pool.run("def spin(img):\n    while True:\n        pass\n", "spin", img)
            except SandboxLimitExceeded as exc:
                errors.append(exc)

        def hog() -> None:
            start.wait()
            try:
                pool.run("def hog(img):\n    x = np.ones((20000, 20000))\n    return img[0]\n",
                         "hog", img)
            except SandboxLimitExceeded as exc:
                errors.append(exc)

        threads = [threading.Thread(target=user, args=(n,)) for n in funcs]
        threads += [threading.Thread(target=looper), threading.Thread(target=hog)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for name, (_, reference) in funcs.items():
            assert len(results[name]) == 4, name
            for out in results[name]:
                np.testing.assert_array_equal(out, reference(inputs[name]))
        messages = sorted(str(e) for e in errors)
        assert len(messages) == 2
        assert "time limit" in messages[1] and "memory limit" in messages[0], messages
        assert pool.busy_pids() == []


def test_a_crashing_call_process_does_not_hurt_the_zygote(pool, img):
    (zygote,) = pool.worker_pids()
    src = "import ctypes\ndef f(img):\n    ctypes.string_at(0)\n    return img[0]\n"
    with pytest.raises(SandboxLimitExceeded, match=r"crashed \(SIGSEGV\)"):
        pool._run_unchecked(src, "f", img)
    assert pool.worker_pids() == [zygote]
    os.kill(zygote, 0)  # still alive
    assert_healthy(pool, img)


PID = "import os\ndef {name}(img, k=0):\n    return np.full(img.shape[-2:], os.getpid())\n"


def test_a_process_only_ever_serves_one_function(img):
    """Bound processes (calls_per_process > 1) are reused only for the same function with
    the same arguments and input layout, and retired after N calls; with 1 each call gets
    a new process."""
    with SandboxPool(2, timeout_s=5, memory_mb=768, max_array_mb=16,
                     calls_per_process=3) as pool:
        def pid(name, arr=img, k=0):
            return int(pool._run_unchecked(PID.format(name=name), name, arr, args=(k,))[0, 0])

        f = [pid("f") for _ in range(4)]
        assert f[0] == f[1] == f[2] != f[3]  # reused for f, retired after 3 calls
        g, f_other_arg, f_other_shape = pid("g"), pid("f", k=1), pid("f", arr=img[:, :16])
        assert len({f[3], g, f_other_arg, f_other_shape}) == 4
    with SandboxPool(1, timeout_s=5, memory_mb=768, max_array_mb=16,
                     calls_per_process=1) as strict:
        pids = {int(strict._run_unchecked(PID.format(name="f"), "f", img)[0, 0])
                for _ in range(3)}
        assert len(pids) == 3
        assert "one disposable process per call" in strict.capabilities()["design"]


def test_a_killed_zygote_is_replaced(img):
    with SandboxPool(1, timeout_s=5, memory_mb=768, max_array_mb=16) as pool:
        assert pool.wait_ready(timeout_s=60)
        (zygote,) = pool.worker_pids()
        assert_healthy(pool, img)
        os.kill(zygote, 9)
        deadline = time.monotonic() + 10
        while pool.worker_pids() == [zygote] and time.monotonic() < deadline:
            time.sleep(0.01)  # the pool notices the closed control socket
        assert_healthy(pool, img)
        assert_healthy(pool, img[:2])  # a new process, forked by a new zygote
        (new,) = pool.worker_pids()
        assert new != zygote
