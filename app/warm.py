"""Tile prefetching: render tiles into the service's cache before the browser asks for them.

One low-priority background thread per process. Sessions submit (chains, tiles) groups; a
newer submission of the same group replaces the pending one (the view moved on), so the
thread never works for a view nobody looks at any more.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence

from engine.errors import EOXError

log = logging.getLogger(__name__)

#: Tiles of each chain rendered in the first pass (nearest the view's centre), so every
#: preset gets its first tiles before any preset gets all of them.
FIRST_PASS = 4
#: Nice value of the prefetch thread (Linux threads have their own): below the requests.
NICE = 10

Job = tuple[str, int, int, int]


def _order(chain_ids: Sequence[str], tiles: Sequence[tuple[int, int, int]]) -> list[Job]:
    first = [(c, *t) for c in chain_ids for t in tiles[:FIRST_PASS]]
    rest = [(c, *t) for c in chain_ids for t in tiles[FIRST_PASS:]]
    return first + rest


class TileWarmer:
    """Renders submitted tiles with ``render(chain_id, z, x, y)`` on a background thread.

    Args:
        render: renders one tile into the cache (``ChainRoutes.warm``); returns whether it
            had to render (False: it was cached).
        max_groups: pending groups kept; the oldest are dropped beyond this.
    """

    def __init__(self, render: Callable[[str, int, int, int], bool], *,
                 max_groups: int = 64) -> None:
        self._render = render
        self._max_groups = max_groups
        self._groups: OrderedDict[str, deque[Job]] = OrderedDict()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False
        self.rendered = 0

    def submit(self, chain_ids: Sequence[str], tiles: Sequence[tuple[int, int, int]],
               group: str) -> None:
        """Queue the tiles of the chains (replacing what ``group`` had pending)."""
        jobs = deque(_order(chain_ids, tiles))
        with self._cv:
            self._groups.pop(group, None)
            if jobs:
                self._groups[group] = jobs
            while len(self._groups) > self._max_groups:
                self._groups.popitem(last=False)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="eox-tile-warmer",
                                                daemon=True)
                self._thread.start()
            self._cv.notify()

    def pending(self) -> int:
        """Tiles waiting to be rendered."""
        with self._cv:
            return sum(len(q) for q in self._groups.values())

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is pending or running (tests, startup warm-up)."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._groups and not self._busy, timeout)

    def _next(self) -> Job:
        with self._cv:
            self._busy = False
            self._cv.notify_all()
            self._cv.wait_for(lambda: bool(self._groups))
            group, jobs = next(iter(self._groups.items()))
            job = jobs.popleft()
            if jobs:
                self._groups.move_to_end(group)  # round robin between sessions
            else:
                del self._groups[group]
            self._busy = True
            return job

    def _run(self) -> None:
        if hasattr(os, "setpriority"):
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
            except OSError as exc:
                log.debug("tile warmer keeps its priority: %s", exc)
        while True:
            chain_id, z, x, y = self._next()
            try:
                if self._render(chain_id, z, x, y):
                    self.rendered += 1
            except EOXError as exc:  # a vanished file, an unknown chain: the browser will say
                log.debug("prefetch %s %s/%s/%s: %s", chain_id, z, x, y, exc)
            except Exception:  # keep the thread alive, but never silently
                log.exception("prefetch %s %s/%s/%s failed", chain_id, z, x, y)
