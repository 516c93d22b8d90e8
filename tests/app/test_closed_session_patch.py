"""A model change arriving after its page's session was closed (reload, back) is answered
OK instead of raising inside Bokeh's protocol handler (a traceback in the server log that
the monkey test of issue 14 found)."""

from __future__ import annotations

import asyncio

from bokeh.document import Document
from bokeh.document.events import ModelChangedEvent
from bokeh.models import Range1d
from bokeh.protocol import Protocol
from bokeh.server.connection import ServerConnection
from bokeh.server.protocol_handler import ProtocolHandler

from app.server import ignore_patches_after_close


def test_patch_after_close_is_answered_ok():
    ignore_patches_after_close()
    ignore_patches_after_close()  # once per process: a second call changes nothing
    protocol = Protocol()
    connection = object.__new__(ServerConnection)  # as after detach_session() on close
    connection._protocol, connection._session = protocol, None
    doc, rng = Document(), Range1d()
    doc.add_root(rng)  # what a closing page reports: a size change of one of its models
    message = protocol.create("PATCH-DOC", [ModelChangedEvent(doc, rng, "start", 0.0)])
    reply = asyncio.run(ProtocolHandler().handle(message, connection))
    assert reply.msgtype == "OK"
