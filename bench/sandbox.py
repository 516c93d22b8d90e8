"""Per-tile cost of a user function through the sandbox vs the same numpy code in-process.

Input: 4 x 256 x 256 uint16 (simulated reflectances). Functions: NDVI, stubble and
a scipy.ndimage clean-up. Reports p50/p95 per call (ms), the sandbox/in-process p50
ratio, the fixed overhead of a round trip (a function returning its input's first
band) and calls/s per worker. Run: ``.venv/bin/python bench/sandbox.py [--n 400]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import algorithms
from engine.sandbox import SandboxPool, simulated_input
from engine.sandbox.check import PRELUDE

IDENTITY = "def first(img):\n    return img[0]\n"


def _in_process(source: str, function: str):
    """The same source as a plain in-process function (benchmark baseline only)."""
    ns: dict = {name: np for name in PRELUDE}
    exec(compile(source, "<bench>", "exec"), ns)  # noqa: S102 - our own shipped sources
    return ns[function]


def _times(fn, n: int) -> list[float]:
    for _ in range(20):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="calls per measurement")
    args = parser.parse_args()
    img = simulated_input((4, 256, 256))
    cases = [("ndvi", *algorithms.load("ndvi")[:2], (2, 3)),
             ("stubble", *algorithms.load("stubble")[:2], ()),
             ("morphclean", *algorithms.load("morphclean")[:2], ()),
             ("identity", IDENTITY, "first", ())]
    print(f"# {platform.node()} {os.cpu_count()} cores, python {platform.python_version()}, "
          f"numpy {np.__version__}, load avg {os.getloadavg()[0]:.1f}, n={args.n}")
    with SandboxPool(1, timeout_s=10) as pool:
        pool.wait_ready(timeout_s=60)
        caps = {k: v for k, v in pool.capabilities().items() if isinstance(v, bool)}
        print(f"# capabilities: {caps}")
        print("| function | in-process p50 / p95 (ms) | sandbox p50 / p95 (ms) | p50 ratio |")
        print("|---|---|---|---|")
        for name, source, function, fargs in cases:
            local = _in_process(source, function)
            t_in = _times(lambda: local(img, *fargs), args.n)  # noqa: B023
            t_sb = _times(lambda: pool.run(source, function, img, args=fargs), args.n)  # noqa: B023
            print(f"| {name} | {_pct(t_in, 50):.3f} / {_pct(t_in, 95):.3f} | "
                  f"{_pct(t_sb, 50):.3f} / {_pct(t_sb, 95):.3f} | "
                  f"{statistics.median(t_sb) / statistics.median(t_in):.2f}x |")
        source, function = algorithms.load("ndvi")[:2]
        t0 = time.perf_counter()
        for _ in range(args.n):
            pool.run(source, function, img, args=(2, 3))
        one = args.n / (time.perf_counter() - t0)
    with SandboxPool(2, timeout_s=10) as pool2:
        pool2.wait_ready(timeout_s=60)

        def worker() -> None:
            for _ in range(args.n // 2):
                pool2.run(source, function, img, args=(2, 3))

        threads = [threading.Thread(target=worker) for _ in range(2)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        two = (args.n // 2) * 2 / (time.perf_counter() - t0)
    print(f"\nNDVI calls/s: 1 worker, 1 thread: {one:.0f}; 2 workers, 2 threads: {two:.0f} "
          f"({two / 2:.0f} per worker)")


if __name__ == "__main__":
    main()
