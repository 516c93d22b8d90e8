"""A display whose scenes are all outside the map's view is told (issue 14: the monkey's walk
ending on a consistent display whose tiles were all transparent): one notification saying
where the scenes are and how to get there, not one per pan, none while a scene is in view."""

from __future__ import annotations

from component_data import NEW, OLD, S2

from components.state import AppState
from components.statebase import overlaps
from components.viewnotice import ViewNotice

BERLIN = (13.20, 52.45, 13.45, 52.60)  # around the two fixture scenes
FAR = (2.20, 48.80, 2.45, 48.95)  # Paris: no scene


def _state(backend, selected):
    state = AppState(backend=backend)
    state.collection = S2
    state.selected = selected
    assert state.chain_id
    return state


def test_display_out_of_view_is_told_once_per_display(backend):
    state = _state(backend, [NEW])
    watcher = ViewNotice(state=state)
    state.viewport = BERLIN
    assert state.notice is None and watcher.check() == ""
    state.viewport = FAR  # a place zoom elsewhere: the scene layer draws nothing here
    assert state.notice is not None and state.notice.level == "info"
    text = state.notice.text
    assert text.startswith("Map: the displayed scene") and "outside this view" in text
    assert "Zoom to the selected scene(s)" in text
    state.notice = None
    state.viewport = (2.21, 48.80, 2.46, 48.95)  # panned, still away: not told again
    assert watcher.check() == text and state.notice is None
    state.selected = [OLD]  # another display, still away: told
    assert state.notice is not None and "outside this view" in state.notice.text
    state.notice = None
    state.viewport = BERLIN  # back over it: nothing to tell
    assert watcher.check() == "" and state.notice is None
    state.viewport = FAR  # away again: told again
    assert state.notice is not None and "outside this view" in state.notice.text


def test_nothing_displayed_nothing_told(backend):
    state = AppState(backend=backend)
    state.collection = S2
    watcher = ViewNotice(state=state)
    state.viewport = FAR
    assert watcher.check() == "" and state.notice is None


def test_overlaps():
    assert overlaps(BERLIN, (13.4, 52.5, 14.0, 53.0))
    assert not overlaps(BERLIN, FAR)
