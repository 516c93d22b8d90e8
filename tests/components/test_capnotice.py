"""The scene cap reaches the dashboard: a view with a tile over more scenes than the
renderer mosaics gives one notification (not one per pan), none when no tile is cut."""

from __future__ import annotations

from component_data import NEW, OLD, S2

from components.backend import Backend
from components.capnotice import CapNotice
from components.state import AppState
from engine.render import TileRenderer

BERLIN = (13.20, 52.45, 13.45, 52.60)  # around the two fixture scenes
FAR = (2.20, 48.80, 2.45, 48.95)  # Paris: no scene


def _state(backend, max_items):
    capped = Backend(catalog=backend.catalog, chain_store=backend.chain_store,
                     renderer=TileRenderer(backend.catalog, max_items=max_items))
    state = AppState(backend=capped)
    state.collection = S2
    state.selected = [NEW, OLD]
    assert state.chain_id
    return state


def test_a_cut_tile_in_view_is_told_once(backend):
    state = _state(backend, max_items=1)
    watcher = CapNotice(state=state)
    state.viewport = BERLIN
    want = ("Map: 2 scenes overlap a tile of this view; the first 1 in mosaic order are "
            "shown: zoom in or narrow the search to see the others")
    assert state.notice is not None and state.notice.text == want
    assert state.notice.level == "info"
    state.notice = None
    state.viewport = (13.21, 52.45, 13.46, 52.60)  # panned: the same cut, not told again
    assert watcher.check() == want and state.notice is None
    state.viewport = FAR  # no scene there: nothing cut
    assert watcher.check() == "" and state.notice is None
    state.viewport = BERLIN  # back: told again (it had gone from view)
    assert state.notice is not None and state.notice.text == want


def test_no_notice_under_the_cap(backend):
    state = _state(backend, max_items=50)
    watcher = CapNotice(state=state)
    state.viewport = BERLIN
    assert watcher.check() == "" and state.notice is None
