"""Pure ASGI middleware: request body limit (413) and a last-resort JSON 500.

Pure ASGI rather than ``BaseHTTPMiddleware`` so tile responses are not re-buffered.
"""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.security.redact import redact_text
from service.errors import BodyTooLarge, error_body, error_response

log = logging.getLogger(__name__)


def scope_path(scope: Scope) -> str:
    """The request's path inside the app (without the ``root_path`` a proxy prefix adds)."""
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


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
                error_body(redact_text(f"internal error: {type(exc).__name__}: {exc}"),
                           "InternalError"),
                status_code=500,
            )
            await response(scope, receive, send)


# -- Host names and security headers -------------------------------------------------------
#: Host names a loopback server always answers to.
LOOPBACK_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")


def host_name(value: str) -> str:
    """The name part of a Host header (``[::1]:8000`` -> ``::1``, ``Example.org.`` ->
    ``example.org``)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _host_allowed(name: str, patterns: tuple[str, ...]) -> bool:
    for pattern in patterns:
        if pattern == "*" or name == pattern:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


class HostGuardMiddleware:
    """Answer only requests whose Host header names one of ``allowed`` (TrustedHost-style).

    A page of another site cannot make the browser talk to this server under that site's
    name (DNS rebinding) and no URL the service builds (TileJSON, registration) carries a
    host name it was not given. Patterns: exact names, ``*.example.org``, or ``*`` (any,
    for a proxy that checks the name itself). Others get 400 naming ``setting``.
    """

    def __init__(self, app: ASGIApp, *, allowed: tuple[str, ...],
                 setting: str = "EOX_ALLOWED_HOSTS") -> None:
        self.app = app
        self.allowed = tuple(host_name(h) if h != "*" else h for h in allowed)
        self.setting = setting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"),
                    "")
        if _host_allowed(host_name(host), self.allowed):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        shown = sorted(self.allowed)[:20]
        body = error_body(f"host {host[:100]!r} is not served here: add it to {self.setting} "
                          f"(now {', '.join(shown)})", "HostNotAllowed", shown)
        await JSONResponse(body, status_code=400)(scope, receive, send)


#: Security headers of every response; HTML ones also get ``HTML_POLICY``.
COMMON_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


def html_policy(frame_ancestors: str = "'self'") -> str:
    """The Content-Security-Policy of HTML pages the service itself returns (the OpenAPI
    docs): scripts and styles from the page and the docs' CDN only, no plugins, framed
    only by ``frame_ancestors``."""
    return ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "img-src 'self' data: https://fastapi.tiangolo.com; object-src 'none'; "
            f"base-uri 'self'; frame-ancestors {frame_ancestors}")


class SecurityHeadersMiddleware:
    """Add ``X-Content-Type-Options: nosniff`` (and a referrer policy) to every response,
    and to HTML responses under ``html_paths`` (the service's own pages: OpenAPI docs)
    a Content-Security-Policy with ``frame-ancestors`` and ``X-Frame-Options``. The
    dashboard's pages (other paths) carry their own policy. Headers a route already set
    are kept."""

    def __init__(self, app: ASGIApp, *, frame_ancestors: str = "'self'",
                 html_paths: tuple[str, ...] = ("/docs", "/redoc", "/api/")) -> None:
        self.app = app
        self.html_paths = html_paths
        self.csp = html_policy(frame_ancestors).encode()
        self.xfo = b"SAMEORIGIN" if frame_ancestors == "'self'" else None
        if frame_ancestors == "'none'":
            self.xfo = b"DENY"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope_path(scope)
        ours = path.startswith(self.html_paths)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in COMMON_HEADERS if k not in present]
                ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if ours and ctype.startswith(b"text/html"):
                    if b"content-security-policy" not in present:
                        headers.append((b"content-security-policy", self.csp))
                    if self.xfo and b"x-frame-options" not in present:
                        headers.append((b"x-frame-options", self.xfo))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
