"""Dashboard pages built off the event loop (issue 18 item 6).

Bokeh builds a session's document inside ``ApplicationContext.create_session_if_needed``,
on the event loop: while ``create_app`` ran (a second or more), the server answered
nothing else, so reloading ``/`` from two clients held a cached tile from 3 ms to 1.1 s.
:func:`build_pages_off_loop` makes that method build the document in one worker thread
(one page at a time: Bokeh's ``curdoc`` patching is process-global) while the loop keeps
serving tiles and websockets. The document is new and not yet attached to a session, so
nothing else touches it meanwhile; afterwards Panel is told it belongs to the loop's
thread again, so later updates are scheduled as for any other page.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eox-page-build")
        return _pool


async def _build(application: Any, doc: Any) -> None:
    """``application.initialize_document(doc)`` in the page-build thread; then the document
    belongs to the event loop's thread (Panel decides from that whether to schedule)."""
    from panel.io.state import state

    ctx = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(_executor(), ctx.run, application.initialize_document, doc)
    state._thread_id_[doc] = threading.get_ident()


def build_pages_off_loop() -> None:
    """Patch Bokeh's ``ApplicationContext.create_session_if_needed`` (once per process) to
    build documents with :func:`_build`; otherwise the same steps as Bokeh 3.9's."""
    from bokeh.server import contexts
    from bokeh.util.token import get_token_payload
    from tornado import gen

    cls = contexts.ApplicationContext
    if getattr(cls, "_eox_off_loop", False):
        return

    async def create_session_if_needed(self: Any, session_id: Any, request: Any = None,
                                       token: str | None = None) -> Any:
        if len(session_id) == 0:
            raise contexts.ProtocolError("Session ID must not be empty")
        if session_id not in self._sessions and session_id not in self._pending_sessions:
            future = self._pending_sessions[session_id] = gen.Future()
            doc = contexts.Document()
            session_context = contexts.BokehSessionContext(
                session_id, self.server_context, doc, logout_url=self._logout_url)
            if request is not None:
                payload = get_token_payload(token) if token else {}
                if ("cookies" in payload and "headers" in payload
                        and "Cookie" not in payload["headers"]):
                    payload["headers"]["Cookie"] = "; ".join(
                        f"{k}={v}" for k, v in payload["cookies"].items())
                session_context._request = contexts._RequestProxy(
                    request, arguments=payload.get("arguments"),
                    cookies=payload.get("cookies"), headers=payload.get("headers"))
            session_context._token = token
            doc._session_context = weakref.ref(session_context)
            try:
                await self._application.on_session_created(session_context)
            except Exception:  # as Bokeh: a failing hook is logged, the page opens
                log.exception("Failed to run session creation hooks")
            try:
                await _build(self._application, doc)
            except BaseException as exc:
                del self._pending_sessions[session_id]
                future.set_exception(exc)
                raise
            session = contexts.ServerSession(session_id, doc, io_loop=self._loop, token=token)
            del self._pending_sessions[session_id]
            self._sessions[session_id] = session
            session_context._set_session(session)
            self._session_contexts[session_id] = session_context
            future.set_result(session)
        if session_id in self._pending_sessions:
            return await self._pending_sessions[session_id]
        return self._sessions[session_id]

    cls.create_session_if_needed = create_session_if_needed
    cls._eox_off_loop = True


__all__ = ["build_pages_off_loop"]
