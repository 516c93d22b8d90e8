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
