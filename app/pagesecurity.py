"""Browser-side defences of the dashboard pages (issue 18): a content security policy with a
per-response script nonce, who may frame the page, and session ids only the server chooses.

:class:`PageGuard` is ASGI middleware in front of the Panel pages served by bokeh-fastapi:

* every HTML page gets ``Content-Security-Policy``: scripts only from this origin or inline
  with the response's nonce (added to the page's own ``<script>`` tags here), so markup a
  user or a catalog smuggles into the page (``<img onerror=...>``, ``<script>``) does not
  run even where an escape was missed; ``'unsafe-eval'`` stays because Bokeh compiles its
  callbacks with ``new Function``; styles may be inline (Bokeh sets them everywhere).
* ``frame-ancestors`` (and ``X-Frame-Options`` where it can say the same): the full
  dashboard only in pages of its own origin by default (``EOX_FRAME_ANCESTORS``), the
  ``embed=true`` page in the sites ``EOX_EMBED_FRAME_ANCESTORS`` lists (any by default).
* a ``bokeh_session_id`` in the URL is refused (400): bokeh-fastapi would open or join the
  session of that id, so a link could fix a victim's session id and the attacker's
  websocket then joined it. Session ids and their tokens are generated and signed by the
  server (:func:`session_secret`), so a forged token's websocket is refused.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.responses import PlainTextResponse

from service.middleware import scope_path

log = logging.getLogger(__name__)

#: Paths that are not dashboard pages (the API has its own JSON error bodies).
EXEMPT = ("/api/", "/healthz", "/docs", "/redoc", "/openapi.json")
_SCRIPT = re.compile(rb"<script(?=[\s>])", re.IGNORECASE)
#: The template's own inline handlers (``onclick="closeNav()"``, ``toggleFullScreen(this)``)
#: would be blocked by the policy: they become data attributes bound by a nonced script.
_HANDLER = re.compile(rb'\sonclick="([A-Za-z_$][\w$]*)\((?:this)?\);?"')
#: (A property, as the template itself swaps it: ``closeNav`` sets ``onclick = openNav``.)
_BIND = (b"<script>document.querySelectorAll('[data-eox-click]').forEach(function(el){"
         b"el.onclick=function(){window[el.dataset.eoxClick](el)}})</script>")
_secret: bytes | None = None


def session_secret(configured: str | None) -> bytes:
    """The key signing session ids and tokens: the configured one (shared by replicas), or
    one generated once per process (sessions never outlive it)."""
    global _secret
    if configured:
        return configured.encode("utf-8")
    if _secret is None:
        _secret = secrets.token_urlsafe(48).encode("ascii")
    return _secret


def _sources(values: Sequence[str]) -> str:
    return " ".join(values) if values else "'none'"


def frame_options(ancestors: Sequence[str]) -> str | None:
    """The ``X-Frame-Options`` saying the same as ``frame-ancestors`` (None: it cannot)."""
    if list(ancestors) in ([], ["'none'"]):
        return "DENY"
    if list(ancestors) == ["'self'"]:
        return "SAMEORIGIN"
    return None


def content_policy(nonce: str, *, ancestors: Sequence[str],
                   image_sources: Sequence[str] = ()) -> str:
    """The page's Content-Security-Policy. ``ancestors`` with ``*``: no ``frame-ancestors``
    at all (CSP's ``*`` would still refuse parents from ``file:`` or ``data:`` pages)."""
    images = " ".join(["'self'", "data:", "blob:", *image_sources])
    framing = [] if "*" in ancestors else [f"frame-ancestors {_sources(ancestors)}"]
    return "; ".join([
        "default-src 'self'",
        f"script-src 'self' 'nonce-{nonce}' 'unsafe-eval'",
        "style-src 'self' 'unsafe-inline'",
        f"img-src {images}",
        "media-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self' data: blob:",  # Bokeh fetches image_url data: URLs (videos)
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        *framing,
    ])


def _is_embed(query: str) -> bool:
    values = parse_qs(query).get("embed", [""])
    return values[-1].lower() in ("true", "1", "yes")


class PageGuard:
    """Security headers, script nonces and the session-id rule for the dashboard's pages.

    Args:
        app: the ASGI app serving the pages (and the API under ``/api/``, left alone).
        frame_ancestors: CSP ``frame-ancestors`` sources of the full dashboard.
        embed_frame_ancestors: the same for ``?embed=true`` pages.
        image_sources: extra image origins (the basemap's).
        secret_key: the key session tokens are signed with: a websocket whose token it did
            not sign is refused at the handshake (403), before bokeh-fastapi sees it.
    """

    def __init__(self, app: Any, *, frame_ancestors: Sequence[str],
                 embed_frame_ancestors: Sequence[str],
                 image_sources: Sequence[str] = (), secret_key: bytes | None = None) -> None:
        self.app = app
        self.secret_key = secret_key
        self.frame_ancestors = list(frame_ancestors)
        self.embed_frame_ancestors = list(embed_frame_ancestors)
        self.image_sources = list(image_sources)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope_path(scope)
        if path.startswith(EXEMPT):
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        if "bokeh_session_id" in parse_qs(query):
            log.warning("refused a URL-chosen bokeh_session_id on %s", path)
            if scope["type"] == "websocket":
                await _refuse_socket(receive, send)
                return
            await PlainTextResponse(
                "bokeh_session_id is not accepted in the URL: the server chooses session "
                "ids. Open the page without it.", status_code=400)(scope, receive, send)
            return
        if scope["type"] == "websocket":
            if self.secret_key is not None and not _signed(scope, self.secret_key):
                log.warning("refused a dashboard websocket with a forged or unsigned token")
                await _refuse_socket(receive, send)
                return
            await self.app(scope, receive, send)
            return
        ancestors = self.embed_frame_ancestors if _is_embed(query) else self.frame_ancestors
        await self.app(scope, receive, _HtmlSend(send, ancestors, self.image_sources))


async def _refuse_socket(receive: Any, send: Any) -> None:
    """Close a websocket before accepting it: the client sees HTTP 403 at the handshake."""
    await receive()  # websocket.connect
    await send({"type": "websocket.close", "code": 1008})


def _signed(scope: dict, secret_key: bytes) -> bool:
    """True when the websocket's Bokeh token (its second subprotocol) carries our signature."""
    from bokeh.util.token import check_token_signature

    protocols = list(scope.get("subprotocols") or ())
    if len(protocols) != 2 or protocols[0] != "bokeh":
        return False
    try:
        return check_token_signature(protocols[1], secret_key=secret_key, signed=True)
    except (ValueError, TypeError):  # not a token at all
        return False


class _HtmlSend:
    """Wraps ``send``: HTML responses get the headers and their ``<script>`` tags the nonce
    (the body is buffered to do so: pages are small); other responses pass untouched."""

    def __init__(self, send: Any, ancestors: list[str], image_sources: list[str]) -> None:
        self.send = send
        self.ancestors = ancestors
        self.image_sources = image_sources
        self.start: dict | None = None
        self.body: list[bytes] = []

    async def __call__(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers") or ())
            if headers.get(b"content-type", b"").startswith(b"text/html"):
                self.start = message
                return
        elif message["type"] == "http.response.body" and self.start is not None:
            self.body.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            await self._send_page(b"".join(self.body))
            return
        await self.send(message)

    async def _send_page(self, body: bytes) -> None:
        nonce = secrets.token_urlsafe(18)
        body, handlers = _HANDLER.subn(rb' data-eox-click="\1"', body)
        if handlers:
            end = body.rfind(b"</body>")
            body = body[:end] + _BIND + body[end:] if end >= 0 else body + _BIND
        body = _SCRIPT.sub(b'<script nonce="' + nonce.encode() + b'"', body)
        assert self.start is not None
        headers = [(k, v) for k, v in self.start.get("headers") or ()
                   if k.lower() not in (b"content-length", b"content-security-policy",
                                        b"x-frame-options", b"x-content-type-options")]
        policy = content_policy(nonce, ancestors=self.ancestors,
                                image_sources=self.image_sources)
        headers += [(b"content-length", str(len(body)).encode()),
                    (b"content-security-policy", policy.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin")]
        xfo = frame_options(self.ancestors)
        if xfo:
            headers.append((b"x-frame-options", xfo.encode()))
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})


def basemap_origin(url: str | None) -> list[str]:
    """The origin of an XYZ basemap URL, for ``img-src`` (empty without a basemap)."""
    if not url:
        return []
    parts = urlsplit(re.sub(r"\{[^}]*\}", "*", url))
    host = parts.netloc
    if not parts.scheme or not host:
        return []
    if "*" in host.partition(".")[2] or "*" in host.partition(".")[0].strip("*"):
        return [f"{parts.scheme}:"]  # a placeholder CSP cannot express: the whole scheme
    return [f"{parts.scheme}://{host}"]


__all__ = ["PageGuard", "basemap_origin", "content_policy", "frame_options", "session_secret"]
