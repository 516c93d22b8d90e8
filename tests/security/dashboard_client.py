"""A dashboard client without a browser: fetch a page, read its session token, open (or fail
to open) the Bokeh websocket as the page would."""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import websockets
from websockets.exceptions import InvalidStatus

TOKEN = re.compile(r'"token":\s*"([^"]+)"')


def page_token(html: str) -> str:
    """The session token a served page hands its websocket."""
    m = TOKEN.search(html)
    assert m, "no session token in the page"
    return m.group(1)


def token_payload(token: str) -> dict:
    """The (unverified) JSON payload of a Bokeh session token."""
    import base64

    part = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


async def _open(url: str, token: str, headers: dict[str, str]) -> str:
    """'open' when the server accepted the websocket and answered the first message,
    else why not ('refused <status>' or 'closed <code>')."""
    try:
        async with websockets.connect(url, subprotocols=["bokeh", token],
                                      additional_headers=headers, open_timeout=20) as ws:
            try:
                await asyncio.wait_for(ws.recv(), timeout=20)  # the ACK Bokeh sends first
            except websockets.ConnectionClosed as exc:
                return f"closed {exc.rcvd.code if exc.rcvd else None}"
            return "open"
    except InvalidStatus as exc:
        return f"refused {exc.response.status_code}"
    except websockets.ConnectionClosed as exc:
        return f"closed {exc.rcvd.code if exc.rcvd else None}"


def open_websocket(base: str, token: str, headers: dict[str, str] | None = None,
                   query: str = "") -> str:
    """Connect to the dashboard's websocket at ``base`` (http URL) with ``token``."""
    url = base.replace("http://", "ws://").rstrip("/") + "/ws" + (f"?{query}" if query else "")
    # in its own thread: Playwright's sync API keeps an event loop running in this one
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _open(url, token, headers or {})).result()


def get_page(base: str, path: str = "/", **kwargs) -> httpx.Response:
    return httpx.get(base.rstrip("/") + path, timeout=60, **kwargs)
