"""The app factory: ``create_app(settings)`` builds one page per browser session."""

from __future__ import annotations

import logging
from typing import Any

import holoviews as hv
import panel as pn

from app.settings import Settings
from app.state import resources
from app.urlstate import KEYS, apply_query, bind_location
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
        _extension_loaded = True


def create_state(settings: Settings, *, query: dict[str, Any] | None = None) -> AppState:
    """A session state: restored from URL ``query`` if it names a view, else the newest scene."""
    state = AppState(backend=resources(settings).backend)
    if query and any(key in KEYS for key in query):
        apply_query(state, query)
    else:
        state.open_latest()
    return state


def create_app(settings: Settings) -> pn.viewable.Viewable:
    """One app per session: its own AppState, map and tabs over the process's shared backend."""
    load_extensions()
    location = pn.state.location
    query = dict(location.query_params) if location is not None else {}
    state = create_state(settings, query=query)
    shell = Shell(state=state)
    if location is not None:
        bind_location(state, location)
    return shell.template()
