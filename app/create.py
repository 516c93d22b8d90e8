"""The app factory: ``create_app(settings)`` builds one page per browser session."""

from __future__ import annotations

import logging
from typing import Any

import holoviews as hv
import panel as pn
from panel.io.resources import LOCAL_DIST

from app.settings import Settings
from app.state import resources
from app.urlstate import KEYS, apply_query, bind_location
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
        _extension_loaded = True


def create_state(settings: Settings, *, query: dict[str, Any] | None = None) -> AppState:
    """A session state: restored from URL ``query`` if it names a view, else the newest scene."""
    state = AppState(backend=resources(settings).backend)
    if query and any(key in KEYS for key in query):
        apply_query(state, query)
    else:
        state.open_latest()
    return state


def _flag(value: Any) -> bool:
    return str(value[0] if isinstance(value, list) and value else value).lower() in (
        "true", "1", "yes")


def create_app(settings: Settings, *, view: Any = None) -> pn.viewable.Viewable:
    """One app per session: its own AppState, map and tabs over the process's shared backend.

    ``view`` (``app.config.View``, from ``launch()`` or a campaign file) adds its layers and,
    unless the URL names a view, its centre/zoom; ``?embed=true`` serves the map and legend
    only (for an iframe), without touching the URL.
    """
    load_extensions()
    location = pn.state.location
    query = dict(location.query_params) if location is not None else {}
    linked = any(key in KEYS for key in query)
    custom = view is not None and not view.is_empty
    if custom and not linked:
        state = AppState(backend=resources(settings).backend)
    else:
        state = create_state(settings, query=query)
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
