"""Band files of one scene read at the same time when they are remote: each band of a
remote scene costs at least one round trip to storage (20-50 ms to object storage), so a
3-band tile read band after band waits three round trips; read together, about one.
Local files and previews are read in the calling thread (a thread hop costs more than
their read)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

from engine.storage import is_remote

T = TypeVar("T")
R = TypeVar("R")

#: Threads reading remote band files, shared by the process (they mostly wait on I/O).
THREADS = 16
_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(THREADS, thread_name_prefix="eox-bands")
        return _pool


def map_bands(fn: Callable[[T], R], jobs: Sequence[T], hrefs: Sequence[str]) -> list[R]:
    """``[fn(job) for job in jobs]``, run concurrently when two or more of ``hrefs`` (the
    files the jobs read) are remote; the first error is raised after all jobs ended."""
    if sum(1 for h in hrefs if is_remote(h)) < 2:
        return [fn(j) for j in jobs]
    futures = [_executor().submit(fn, j) for j in jobs]
    wait(futures)  # every read ends before an error is raised (datasets given back)
    return [f.result() for f in futures]
