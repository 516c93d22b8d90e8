"""The app factory: ``create_app(settings)`` builds one page per browser session."""

from __future__ import annotations

import html
import logging
from typing import Any

import holoviews as hv
import panel as pn
from panel.io.resources import LOCAL_DIST

from app.settings import Settings
from app.state import resources
from app.urlstate import KEYS, apply_query, bind_location
from components.backend import Backend
from components.session import exception_handler, on_error
from components.shell import Shell
from components.state import AppState

log = logging.getLogger(__name__)

_extension_loaded = False


def load_extensions() -> None:
    """Panel/HoloViews extensions the page needs (once per process)."""
    global _extension_loaded
    if not _extension_loaded:
        pn.extension("tabulator", "codeeditor", notifications=True)
        hv.extension("bokeh", logo=False)
        # Panel's Divider keeps its stylesheet's CDN address when it is built after the page
        # loaded (a tab shown later): point it at the copy this server serves (offline).
        pn.layout.Divider._stylesheets = [f"{LOCAL_DIST}css/divider.css"]
        # Panel would render an uncaught callback error (and its traceback) as HTML
        pn.config.exception_handler = report_exception
        # Markdown panes (Alert too) show user and catalog text: raw HTML in it is text
        pn.pane.Markdown.param.renderer_options.default = {"html": False}
        _extension_loaded = True


def report_exception(exc: BaseException) -> None:
    """An error no callback handled: logged with its traceback, and told to the user in
    plain words (escaped; never the traceback, which may hold user or catalog text)."""
    log.error("unhandled error in a dashboard callback", exc_info=exc)
    notifications = pn.state.notifications
    if notifications is not None:
        notifications.error(html.escape(f"Something went wrong ({type(exc).__name__}); the "
                                        "server log has the details."), duration=9000)


def page_failed() -> pn.viewable.Viewable:
    """What a visitor sees when the page cannot be built (the traceback goes to the log)."""
    return pn.pane.Alert("EO Explorer could not open this page: an internal error, written "
                         "to the server's log. Reload, or open the address without "
                         "parameters.", alert_type="danger", sizing_mode="stretch_width")


def served_page(settings: Settings, *, view: Any = None,
                backend: Backend | None = None) -> pn.viewable.Viewable:
    """``create_app`` for a served session; a failure gives :func:`page_failed`, because
    Panel would otherwise show the traceback (with the catalog's or the URL's text in it,
    unescaped) to the visitor."""
    try:
        return create_app(settings, view=view, backend=backend)
    except Exception:  # the page boundary: everything is logged, nothing reaches the page
        log.exception("building a dashboard page failed")
        return page_failed()


def create_state(settings: Settings, *, query: dict[str, Any] | None = None,
                 backend: Backend | None = None) -> AppState:
    """A session state: restored from URL ``query`` if it names a view, else the newest scene
    (``backend``: the process's, ``resources(settings).backend``, unless given)."""
    state = AppState(backend=backend or resources(settings).backend)
    if query and any(key in KEYS for key in query):
        apply_query(state, query)
    else:
        state.open_latest()
    return state


def _flag(value: Any) -> bool:
    return str(value[0] if isinstance(value, list) and value else value).lower() in (
        "true", "1", "yes")


def create_app(settings: Settings, *, view: Any = None,
               backend: Backend | None = None) -> pn.viewable.Viewable:
    """One app per session: its own AppState, map and tabs over the process's shared backend.

    ``view`` (``app.config.View``, from ``launch()`` or a campaign file) adds its layers and,
    unless the URL names a view, its centre/zoom; ``?embed=true`` serves the map and legend
    only (for an iframe), without touching the URL. ``backend``: where tiles come from
    (``panel serve`` passes one with the tile service's absolute URL; default: this
    process's service, relative URLs).
    """
    load_extensions()
    location = pn.state.location
    query = dict(location.query_params) if location is not None else {}
    linked = any(key in KEYS for key in query)
    custom = view is not None and not view.is_empty
    if custom and not linked:
        state = AppState(backend=backend or resources(settings).backend)
    else:
        state = create_state(settings, query=query, backend=backend)
    # every exception of a session callback: a log line and a notice for its user (set per
    # session: Panel keeps config set inside a session for that session only)
    pn.config.exception_handler = exception_handler
    on_error(pn.state.curdoc, lambda text, detail: state.notify(text, "error", detail=detail))
    shell = Shell(state=state)
    page: Any = shell
    if custom:
        from app.launcher import apply_view

        page = apply_view(shell, view, move=not linked)
    if _flag(query.get("embed", "")):
        return page.embed()
    if location is not None:
        bind_location(state, location)
    return page.template()
