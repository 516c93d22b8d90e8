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


async def _pull(url: str, token: str) -> dict:
    """Open the websocket, ask for the session's document as BokehJS does (PULL-DOC-REQ),
    return the reply's content."""
    async with websockets.connect(url, subprotocols=["bokeh", token], open_timeout=60,
                                  max_size=None) as ws:
        ack = json.loads(await asyncio.wait_for(ws.recv(), timeout=60))
        assert ack["msgtype"] == "ACK", ack
        await asyncio.wait_for(ws.recv(), timeout=10)  # its metadata
        await asyncio.wait_for(ws.recv(), timeout=10)  # and content
        await ws.send(json.dumps({"msgid": "pull-1", "msgtype": "PULL-DOC-REQ"}))
        await ws.send("{}")
        await ws.send("{}")
        while True:  # skip anything else the session sends first
            header = json.loads(await asyncio.wait_for(ws.recv(), timeout=60))
            await ws.recv()
            content = await ws.recv()
            for _ in range(header.get("num_buffers", 0)):
                await ws.recv()
            if header["msgtype"] == "PULL-DOC-REPLY":
                return json.loads(content)


def pull_document(base: str, token: str) -> dict:
    """The document of the session ``token`` opens (``{"doc": ...}``)."""
    url = base.replace("http://", "ws://").rstrip("/") + "/ws"
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _pull(url, token)).result()
