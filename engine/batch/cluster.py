"""Dask clients for batch runs: an existing cluster by address, or a bounded LocalCluster."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from engine.errors import InvalidInput

log = logging.getLogger(__name__)


@contextlib.contextmanager
def connect(scheduler: str | None = None, *, workers: int = 2, threads_per_worker: int = 1,
            memory_limit: str | int = "2GiB", timeout: float = 30.0) -> Iterator[Any]:
    """A ``distributed.Client`` for the run, closed afterwards.

    Args:
        scheduler: address of an existing scheduler (``tcp://host:8786``); None starts a
            LocalCluster of ``workers`` processes (nannies restart killed workers, and
            Dask recomputes the tasks they held), each capped at ``memory_limit``.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise InvalidInput(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        try:
            yield client
        finally:
            client.close()
        return
    if workers < 1:
        raise InvalidInput(f"workers must be at least 1, got {workers}")
    cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                           processes=True, memory_limit=memory_limit,
                           dashboard_address=":0", silence_logs=logging.WARNING)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
