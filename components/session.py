"""The one path for Bokeh model edits and callback errors of a served session.

Panel runs widget callbacks (priority changes such as a Select's value), ``asyncio`` tasks and
worker threads without the session's document lock under bokeh-fastapi, and Bokeh refuses a
model change there (``RuntimeError: _pending_writes should be non-None...``): the change is
lost and the session silently diverges from the page. Every edit of a raw Bokeh model (the
map's figure, its sources and tile renderers) therefore goes through :func:`run_locked` or
a method decorated with :func:`locked`: it runs at once when the lock is held (or there is
no served session: tests, notebooks), else on the session's next tick, which holds the lock.

Every exception of a session callback ends in :func:`report`: a log line with the traceback
and a notice the user sees (plain words, the technical detail on demand); the session stays
usable.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import traceback
import weakref
from collections.abc import Callable
from typing import Any

from panel.io.state import set_curdoc

from engine.security.redact import redact_text

log = logging.getLogger(__name__)

#: Document -> callable telling that session's user about an error (text, detail).
_reporters: weakref.WeakKeyDictionary[Any, Callable[[str, str], None]] = (
    weakref.WeakKeyDictionary())


def on_error(doc: Any, tell: Callable[[str, str], None]) -> None:
    """Make ``tell(text, detail)`` the way errors of ``doc``'s callbacks reach its user."""
    if doc is not None:
        _reporters[doc] = tell


def report(exc: BaseException, doc: Any = None, *, action: str = "") -> None:
    """Log a callback's exception and tell the session's user (``doc``, else the current
    document) in plain words, with the traceback as detail."""
    if doc is None:
        from panel.io.state import state

        doc = state.curdoc
    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    shown = redact_text(detail)  # the server's paths stay in the log (EOX_EXPOSE_PATHS)
    log.error("session callback failed%s: %s\n%s", f" ({action})" if action else "",
              exc, detail)
    tell = _reporters.get(doc) if doc is not None else None
    if tell is not None:
        what = f" while {action}" if action else ""
        try:
            tell(f"Something went wrong{what}. The page is still usable: try again, or "
                 "pick another option.", shown)
        except Exception:  # telling must never raise into Bokeh/Panel
            log.exception("could not show a callback error to the user")


def _holds_lock(doc: Any) -> bool:
    """True when model changes of ``doc`` may be made now: no served session, or this is
    the event loop's thread inside a callback that holds the document lock."""
    context = getattr(doc, "session_context", None)
    session = getattr(context, "session", None)
    if session is None:
        return context is None
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # a worker thread
        return False
    return getattr(session, "_pending_writes", None) is not None


def run_locked(doc: Any, fn: Callable[[], Any], *, action: str = "") -> None:
    """Run ``fn`` (which edits Bokeh models of ``doc``) with the document lock: at once when
    it is held or ``doc`` is not served (None: tests, notebooks), else on the session's
    next tick. An exception of ``fn`` is reported to the user and the log."""
    if doc is None or _holds_lock(doc):
        fn()
        return

    def locked_call() -> None:
        with set_curdoc(doc):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - every callback error reaches the user
                report(exc, doc, action=action)

    doc.add_next_tick_callback(locked_call)


def locked(models: Callable[[Any], Any]) -> Callable:
    """Decorate a method that edits Bokeh models: it runs through :func:`run_locked` on the
    document of ``models(self)`` (a model, or None before the page exists)."""

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
            model = models(self)
            doc = getattr(model, "document", None)
            run_locked(doc, lambda: method(self, *args, **kwargs),
                       action=method.__name__.strip("_").replace("_", " "))

        return wrapper

    return decorate


def exception_handler(exc: BaseException) -> None:
    """Panel's ``config.exception_handler``: every exception of a session callback that
    Panel catches (widget changes, events, periodic and ``onload`` callbacks)."""
    report(exc)
