"""The dashboard's websocket origin check (``--allow-websocket-origin``).

Bokeh's Tornado server refuses a websocket whose ``Origin`` is not allowed; bokeh-fastapi
0.1.8 takes the same ``websocket_origins`` list but never calls its ``check_origin``. This
ASGI middleware applies Bokeh's own rule (``bokeh.server.util.check_allowlist``: host:port
patterns, ``*`` wildcards, port 80 implied) before the websocket is accepted, so another
site's page cannot drive a session. An embedding iframe is not affected: its websocket
comes from the iframe's own page, on this server's origin.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from bokeh.server.util import check_allowlist

log = logging.getLogger(__name__)


def origin_allowed(origin: str, allowed: Sequence[str]) -> bool:
    """True if the ``Origin`` header value names an allowed host[:port]."""
    host = urlsplit(origin).netloc.lower()
    return bool(host) and check_allowlist(host, list(allowed))


class WebsocketOriginGuard:
    """Refuse (HTTP 403 at the handshake) websockets from origins not in ``allowed``.

    Requests without an ``Origin`` header (not from a browser) pass, as in Tornado.
    """

    def __init__(self, app: Any, *, allowed: Sequence[str]) -> None:
        self.app = app
        self.allowed = [a.lower() for a in allowed]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            origin = dict(scope.get("headers") or ()).get(b"origin")
            if origin is not None:
                text = origin.decode("latin-1")
                if not origin_allowed(text, self.allowed):
                    log.warning("refused a websocket from origin %r; allowed: %s (add it "
                                "with --allow-websocket-origin)", text, self.allowed)
                    await receive()  # websocket.connect
                    await send({"type": "websocket.close", "code": 1008})
                    return
        await self.app(scope, receive, send)


__all__ = ["WebsocketOriginGuard", "origin_allowed"]
