"""Pure ASGI middleware: request body limit (413) and a last-resort JSON 500.

Pure ASGI rather than ``BaseHTTPMiddleware`` so tile responses are not re-buffered.
"""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import BodyTooLarge, error_body, error_response

log = logging.getLogger(__name__)


class GuardMiddleware:
    """Refuse bodies over ``max_body_bytes`` and turn any unexpected exception into JSON.

    The exception is logged with its traceback and the client gets
    ``{"detail": ..., "type": ...}`` with status 500; the server keeps serving.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes

        def too_large() -> BodyTooLarge:
            return BodyTooLarge(f"request body larger than {limit} bytes")

        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    await error_response(too_large())(scope, receive, send)
                    return

        received = 0
        started = False
        refused = False  # the 413 was sent by us; whatever the app does next is dropped

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answer here: FastAPI would turn an exception raised while it reads
                    # the body into a generic 400. The app then sees a disconnect.
                    if not started:
                        await error_response(too_large())(scope, receive, send)
                    refused = True
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception as exc:  # the last resort: never a traceback page
            if refused:
                return
            if started:
                raise
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            response = JSONResponse(
                error_body(f"internal error: {type(exc).__name__}: {exc}", "InternalError"),
                status_code=500,
            )
            await response(scope, receive, send)
