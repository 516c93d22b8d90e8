"""Wait until a served dashboard page is idle instead of sleeping a fixed time.

Idle = the Bokeh websocket has been quiet for a moment (no patch sent or received) and no
HTTP request of the page (tiles, basemap, downloads) is open. A server callback that works
for longer than the quiet window without sending anything looks idle: callers that need a
callback's result wait for that result itself.
"""

from __future__ import annotations

import time

#: A request open longer than this is not waited for (a stalled tile does not block a test).
STALE = 10.0


class Activity:
    """The network activity of one page: open requests and the last websocket frame."""

    def __init__(self, page) -> None:
        self.page = page
        self.open: dict[object, float] = {}  # request -> when it started
        self.last_frame = time.monotonic()
        page.on("request", self._started)
        page.on("requestfinished", self._ended)
        page.on("requestfailed", self._ended)
        page.on("websocket", self._socket)

    def _started(self, request) -> None:
        self.open[request] = time.monotonic()

    def _ended(self, request) -> None:
        self.open.pop(request, None)

    def _socket(self, ws) -> None:
        ws.on("framesent", self._frame)
        ws.on("framereceived", self._frame)

    def _frame(self, _payload) -> None:
        self.last_frame = time.monotonic()

    def forget(self) -> None:
        """Drop the open requests (after a navigation they never finish)."""
        self.open.clear()
        self.last_frame = time.monotonic()

    def busy(self, quiet: float) -> bool:
        now = time.monotonic()
        pending = any(now - t < STALE for t in self.open.values())
        return pending or now - self.last_frame < quiet

    def wait(self, quiet: float = 0.15, timeout: float = 10.0) -> bool:
        """Let the page run until it is idle (True) or ``timeout`` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        while self.busy(quiet):
            if time.monotonic() > deadline:
                return False
            self.page.wait_for_timeout(25)
        return True
