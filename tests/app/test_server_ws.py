"""bokeh-fastapi websocket writes: two messages sent at once keep their frames together."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from bokeh_fastapi.handler import WSHandler

from app.server import serialize_websocket_writes


class _Socket:
    """A websocket whose every write yields to the event loop (as a real send can)."""

    application_state = SimpleNamespace(name="CONNECTED")

    def __init__(self) -> None:
        self.frames: list[str] = []

    async def send_text(self, text: str) -> None:
        await asyncio.sleep(0)
        self.frames.append(text)


def _message(tag: str) -> SimpleNamespace:
    return SimpleNamespace(header_json=f"{tag}-header", metadata_json=f"{tag}-meta",
                           content_json=f"{tag}-content", _buffers=[])


def _send_two() -> list[str]:
    handler = WSHandler.__new__(WSHandler)  # only send_message and _socket are used
    handler._socket = _Socket()

    async def both() -> None:
        await asyncio.gather(handler.send_message(_message("a")),
                             handler.send_message(_message("b")))

    asyncio.run(both())
    return handler._socket.frames


def test_concurrent_messages_are_not_interleaved():
    serialize_websocket_writes()
    serialize_websocket_writes()  # idempotent: wraps once
    frames = _send_two()
    assert frames in (["a-header", "a-meta", "a-content", "b-header", "b-meta", "b-content"],
                      ["b-header", "b-meta", "b-content", "a-header", "a-meta", "a-content"])


def test_a_socket_request_is_the_pages_url():
    """The request a session made at websocket open is built from: the page's URL, not the
    socket's (scheme, host, path under a prefix, the query the signed token carries)."""
    from app.server import socket_request

    req = socket_request({"scheme": "wss", "path": "/eox/ws",
                          "headers": [(b"host", b"maps.example.org"), (b"cookie", b"a=b")]},
                         {"arguments": {"collection": [b"landsat-sr"], "x": [b"1", b"2"]}})
    assert req.protocol == "https" and req.host == "maps.example.org"
    assert req.uri == "/eox/?collection=landsat-sr&x=1&x=2"
    assert req.full_url() == "https://maps.example.org/eox/?collection=landsat-sr&x=1&x=2"
    assert req.arguments == {"collection": [b"landsat-sr"], "x": [b"1", b"2"]}
    plain = socket_request({"scheme": "ws", "path": "/ws", "headers": []}, {})
    assert plain.protocol == "http" and plain.uri == "/" and plain.arguments == {}
