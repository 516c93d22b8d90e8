"""No sandbox process outlives its owner: the zygote exits when the process that started it
dies (even when a forked copy of that process keeps the control socket open, so no EOF
ever arrives), and a call process dies with its zygote (even in a busy loop)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from engine.sandbox import SandboxPool

ROOT = Path(__file__).resolve().parents[2]
SPIN = "def spin(img):\n    while True:\n        pass\n"

# An owner process: starts a pool, leaves one idle bound call process, then forks a copy
# of itself that only sleeps (as a fork-started helper of a notebook or worker would),
# so the zygote's control socket stays open in the copy after the owner is killed.
OWNER = """
import os, sys, time
import numpy as np
from engine.sandbox import SandboxPool
pool = SandboxPool(size=1, timeout_s=30, idle_s=120)
assert pool.wait_ready(timeout_s=120)
pool.run("def f(a):\\n    return a * 2\\n", "f", np.ones((2, 4, 4)))
idle = [p.pid for v in pool._idle.values() for p in v]
copy = os.fork()
if copy == 0:
    time.sleep(600)
    os._exit(0)
print(pool.worker_pids()[0], idle[0], copy, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    """The pids still alive after waiting up to ``timeout_s`` for all to exit."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def test_zygote_and_its_children_exit_when_the_owner_is_killed():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, env=env,
                             cwd=ROOT, text=True)
    copy = None
    try:
        line = owner.stdout.readline()
        assert line, "the owner process did not start its pool"
        zygote, child, copy = (int(v) for v in line.split())
        assert alive(zygote) and alive(child) and alive(copy)
        owner.kill()  # SIGKILL: nothing of the owner's runs any more
        owner.wait(10)
        # the old zygote only watched its socket, which the forked copy still holds
        assert wait_gone([zygote, child], 10) == []
        assert alive(copy)
    finally:
        owner.kill()
        owner.wait(10)
        if copy is not None and alive(copy):
            os.kill(copy, signal.SIGKILL)


def test_a_call_process_dies_with_its_zygote():
    with SandboxPool(size=1, timeout_s=60, calls_per_process=1) as pool:
        assert pool.wait_ready(timeout_s=120)
        zygote = pool.worker_pids()[0]
        errors: list[BaseException] = []

        def call() -> None:
            try:
                pool.run(SPIN, "spin", np.ones((2, 8, 8)))
            except BaseException as exc:  # noqa: BLE001 - the call must fail, it is checked
                errors.append(exc)

        t = threading.Thread(target=call, daemon=True)
        t.start()
        deadline = time.monotonic() + 60
        while not pool.busy_pids() and time.monotonic() < deadline:
            time.sleep(0.01)
        busy = pool.busy_pids()
        assert busy and zygote not in busy
        os.kill(zygote, signal.SIGKILL)
        # before: the busy loop ran on until its CPU limit (60 s), orphaned
        assert wait_gone(busy, 10) == []
        t.join(70)
        assert not t.is_alive() and errors
        assert "stopped its sandbox process" in str(errors[0]) or "time limit" in str(errors[0])


def test_the_pool_restarts_a_killed_zygote():
    with SandboxPool(size=1, timeout_s=10, calls_per_process=1) as pool:
        assert pool.wait_ready(timeout_s=120)
        first = pool.worker_pids()[0]
        os.kill(first, signal.SIGKILL)
        assert wait_gone([first], 10) == []
        out = pool.run("def f(a):\n    return a + 1\n", "f", np.zeros((2, 4, 4)))
        assert (out == 1).all() and pool.worker_pids() != [first]


def test_a_dead_idle_process_is_not_reused():
    """An idle bound process that died (killed with its zygote, or by anyone) is replaced
    by a fresh one; before, the next call of its function failed ('stopped its sandbox
    process: the process was killed')."""
    double = "def f(a):\n    return a * 2\n"
    img = np.ones((2, 4, 4))
    with SandboxPool(size=1, timeout_s=10, calls_per_process=64, idle_s=60) as pool:
        assert pool.wait_ready(timeout_s=120)
        assert (pool.run(double, "f", img) == 2).all()
        (idle,) = [p.pid for v in pool._idle.values() for p in v]
        os.kill(idle, signal.SIGKILL)
        assert wait_gone([idle], 10) == []
        assert (pool.run(double, "f", img) == 2).all()
        assert [p.pid for v in pool._idle.values() for p in v] not in ([], [idle])
