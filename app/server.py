"""`eoexplorer serve`: the dashboard and the tile service on one port.

The tile service is a FastAPI app; the Panel dashboard is added to it with
``panel.io.fastapi.add_applications`` (bokeh-fastapi), and uvicorn serves both, so the
browser fetches tiles from the page's own origin (``api/...`` relative URLs).
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from app.settings import Settings

log = logging.getLogger(__name__)


def _write(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def serialize_websocket_writes() -> None:
    """Send each Bokeh message's websocket frames together (once per process).

    bokeh-fastapi's ``WSHandler.send_message`` writes a message as 3+ frames with no lock
    (Bokeh's tornado handler has one); Panel writes patches from its own tasks while the
    receive loop writes replies, so frames of two messages interleave, the browser drops
    them, and later patches refer to models it never got ("reference pXXXX isn't known":
    tabs opened on a fresh page stayed empty).
    """
    import asyncio

    from bokeh_fastapi.handler import WSHandler

    if getattr(WSHandler, "_eox_serialized", False):
        return
    send = WSHandler.send_message

    async def send_message(self: Any, message: Any) -> int:
        lock = self.__dict__.get("_eox_send_lock")
        if lock is None:  # not named write_lock: Panel reads tornado internals of that
            lock = self.__dict__["_eox_send_lock"] = asyncio.Lock()
        async with lock:
            return await send(self, message)

    WSHandler.send_message = send_message
    WSHandler._eox_serialized = True


def socket_request(scope: dict[str, Any], payload: dict[str, Any]) -> Any:
    """The page request a session made at websocket open is built from: the page's URL
    (scheme from ``ws``/``wss``, host from the socket's headers, path without ``/ws``, query
    from the token's arguments), as a tornado request like the one bokeh-fastapi makes for
    the page's GET (Panel's Location reads protocol, host and uri from it)."""
    from urllib.parse import urlencode

    from tornado.httputil import HTTPHeaders, HTTPServerRequest

    headers = HTTPHeaders()
    for name, value in scope.get("headers") or []:
        headers.add(name.decode("latin-1"), value.decode("latin-1"))
    scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    path = str(scope.get("path") or "/")
    path = path[:-len("ws")] if path.endswith("/ws") else path
    pairs = [(k, v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
             for k, values in (payload.get("arguments") or {}).items()
             for v in (values if isinstance(values, list) else [values])]
    query = urlencode(pairs)
    host = headers.get("Host", "localhost")
    request = HTTPServerRequest(method="GET", uri=f"{path}?{query}" if query else path,
                                headers=headers, host=host)
    request.protocol = scheme
    return request


def create_sessions_at_socket_open() -> None:
    """Build a page's session with a real request when its websocket arrives after the
    session made by the page's GET was discarded (once per process).

    Bokeh drops a session nobody connected to after ``unused_session_lifetime`` (a slow
    client, a loaded server, a tab restored later); the socket then makes a new one, and
    bokeh-fastapi passes the ASGI scope dict as its request: Panel's ``Location.from_request``
    read ``request.protocol`` from it and raised, and the page stayed blank with nothing on
    screen (found in CI under load). This builds that session first, from the page's URL.
    """
    from bokeh.util.token import get_session_id, get_token_payload
    from bokeh_fastapi.handler import DocHandler, WSHandler

    if getattr(WSHandler, "_eox_socket_sessions", False):
        return
    open_ = WSHandler._async_open

    async def _async_open(self: Any, socket: Any, token: str) -> None:
        context = self.application_context
        session_id = get_session_id(token)
        if session_id not in context._sessions and session_id not in context._pending_sessions:
            log.warning("session %s: its page's session had expired; made again at websocket "
                     "open", session_id.split(".")[0][:8])
            request = socket_request(socket.scope, get_token_payload(token))
            session = await context.create_session_if_needed(session_id, request, token)
            # what rendering the page does to its session: Panel sets the document's
            # dist_url and points component stylesheets at this server (else they name
            # Panel's CDN: blocked offline and by the CSP, an unstyled page)
            try:
                DocHandler.render_session(
                    session, resources=self.application.resources(),
                    title=session.document.title, template=session.document.template,
                    template_variables=session.document.template_variables)
            except Exception:  # an unstyled page still works: open the socket anyway
                log.exception("session %s: could not prepare it as its page would be",
                              session_id.split(".")[0][:8])
        await open_(self, socket, token)

    WSHandler._async_open = _async_open
    WSHandler._eox_socket_sessions = True


def ignore_patches_after_close() -> None:
    """Answer a model change that arrives after its page's session was closed (a reload or
    "back" while the old page still reports its size) with OK instead of an AssertionError
    traceback in the log: there is no document left to change (once per process)."""
    from bokeh.server.session import ServerSession

    if getattr(ServerSession, "_eox_patch_guard", False):
        return
    patch = ServerSession.patch.__func__

    async def guarded(cls: Any, message: Any, connection: Any) -> Any:
        if getattr(connection, "_session", None) is None:
            return connection.ok(message)
        return await patch(cls, message, connection)

    ServerSession.patch = classmethod(guarded)
    ServerSession._eox_patch_guard = True


def deliver_changes_after_pull() -> None:
    """Send the model changes a session makes after the browser pulled its document, also
    before the page's ``document_ready`` (once per process).

    Issue 5, a tab clicked in the first second or two stayed empty for good. Panel treats a
    server document as unconnected until the browser's ``document_ready`` event, sent once
    the page is idle (``state._connected``, set by ``state._on_load``), and a ``hold`` that ends
    on an unconnected document *drops* the model changes it collected
    (``panel.io.document._drain_unconnected_events``), assuming the whole document is
    serialized later. But the browser pulled the document (PULL-DOC-REPLY) before it drew
    the page, so the tab headers are clickable well before ``document_ready``. Clicking a tab
    then makes ``Tabs(dynamic=True)`` swap the tab's placeholder for its content and the
    Shell fill the tab's slot, both in Panel's layout ``_update_model``, inside such a
    ``hold``: both patches were dropped while the server's models changed. Nothing could
    repair it later: setting the same content again is no change, so no patch (why
    re-building in ``pn.state.onload`` did not help).

    The fix: from the pull reply on (noted while it is serialized, under the document lock),
    a held model change on a not yet "connected" document is dispatched to the browser like
    any other instead of dropped, in order with the rest, when the document lock is held (as
    it is for every Panel update before the page loaded: Panel schedules them all on the
    document). Panel's other pre-load behaviour (``_unblocked`` false, updates scheduled,
    ``onload`` callbacks at ``document_ready``) is unchanged.
    """
    from weakref import WeakSet

    import panel.io.document as pn_document
    from bokeh.document.events import DocumentPatchedEvent, MessageSentEvent
    from bokeh.server import session as bk_session

    cls = bk_session.ServerSession
    if getattr(cls, "_eox_pulled", None) is not None:
        return
    drain = getattr(pn_document, "_drain_unconnected_events", None)
    if drain is None:  # a Panel without the drop: nothing to fix
        log.warning("panel.io.document._drain_unconnected_events is gone: issue 5 fix unused")
        return
    pulled: WeakSet = WeakSet()
    pull = cls._handle_pull.__wrapped__  # the body under @_needs_document_lock

    def _handle_pull(self: Any, message: Any, connection: Any) -> Any:
        reply = pull(self, message, connection)  # the document is serialized here
        pulled.add(self.document)
        return reply

    def _drain(doc: Any, lock: Any) -> list:
        held = list(doc.callbacks._held_events or [])
        dispatch = drain(doc, lock)  # session callbacks; messages deferred; changes dropped
        session = getattr(doc.session_context, "_session", None)
        if doc not in pulled or session is None or session._pending_writes is None:
            return dispatch  # not pulled yet (the pull serializes them), or no lock held
        keep = {id(e) for e in dispatch}
        return [e for e in held if id(e) in keep or (
            isinstance(e, DocumentPatchedEvent) and not isinstance(e, MessageSentEvent))]

    cls._handle_pull = bk_session._needs_document_lock(_handle_pull)
    cls._eox_pulled = pulled
    pn_document._drain_unconnected_events = _drain


def build_asgi(settings: Settings, *, view: Any = None) -> Any:
    """The FastAPI app serving the tile service under /api and the dashboard at /.

    ``view`` (``app.config.View``): layers and centre/zoom every new session opens on.
    """
    from panel.io.fastapi import add_applications

    from app.auth import protect_dashboard
    from app.create import load_extensions, served_page
    from app.origins import WebsocketOriginGuard
    from app.pagebuild import build_pages_off_loop
    from app.pagesecurity import PageGuard, basemap_origin, session_secret
    from app.state import resources, warm_process

    load_extensions()
    serialize_websocket_writes()
    create_sessions_at_socket_open()
    ignore_patches_after_close()
    deliver_changes_after_pull()
    build_pages_off_loop()
    res = resources(settings)
    service = res.service
    threading.Thread(target=warm_process, args=(res,), name="eox-first-view",
                     daemon=True).start()
    origins = [f"{h}:{settings.port}" for h in ("localhost", "127.0.0.1", settings.address)]
    origins += list(settings.allow_websocket_origin)

    def page() -> Any:
        return served_page(settings, view=view)

    # CSP, frame-ancestors, server-chosen signed session ids (inside the origin check)
    service.add_middleware(PageGuard, frame_ancestors=settings.frame_ancestors,
                           embed_frame_ancestors=settings.embed_frame_ancestors,
                           image_sources=basemap_origin(settings.basemap),
                           secret_key=session_secret(settings.session_secret))
    # bokeh-fastapi takes websocket_origin but does not check it: this does
    service.add_middleware(WebsocketOriginGuard, allowed=sorted(set(origins)))

    add_applications(
        {"/": page},
        app=service,
        title="EO Explorer",
        websocket_origin=sorted(set(origins)),
        secret_key=session_secret(settings.session_secret),
        sign_sessions=True,
        unused_session_lifetime_milliseconds=int(settings.session_unused_s * 1000),
        check_unused_sessions_milliseconds=int(min(17.0, settings.session_unused_s / 2) * 1000),
    )
    return protect_dashboard(service, settings)  # outermost: no page or socket before login


def prepare_demo_data(settings: Settings) -> None:
    """Download and ingest the demo collections unless they are there already."""
    from app.wiring import catalog_from
    from engine.demo import prepare_demo

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    reports = prepare_demo(catalog_from(settings), data_dir=settings.data_dir,
                           progress=sys.stderr.isatty())
    for name, report in reports.items():
        for path, reason in report.failed:
            log.warning("demo %s: could not ingest %s: %s", name, path, reason)


def serve(settings: Settings, *, demo: bool = False, view: Any = None) -> int:
    """Prepare (optionally) the demo data, then serve until interrupted (``view``: what
    sessions open on, from a campaign file)."""
    import uvicorn

    if demo:
        prepare_demo_data(settings)
    app = build_asgi(settings, view=view)
    base = f"http://{settings.address}:{settings.port}{settings.prefix}"
    _write(f"EO Explorer is serving on {base}/")
    _write(f"  API: {base}/api/collections   OpenAPI: {base}/openapi.json   health: {base}/healthz")
    # The prefix is the FastAPI app's root_path: paths under it route with it stripped (a
    # proxy that keeps /eox) and paths without it route as they are (one that strips it).
    # Not uvicorn's root_path, which would prepend it to every path.
    uvicorn.run(app, host=settings.address, port=settings.port, log_level="warning")
    return 0
