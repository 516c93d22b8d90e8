"""AppState's pieces: each owns its parameters, they round-trip through the share link, and
a change is applied once (no watcher echoes it back, no chain is built twice)."""

from __future__ import annotations

from collections import Counter
from datetime import date

from component_data import NEW, OLD, S2

from app.urlstate import apply_query, to_query
from components.displaystate import DisplayState
from components.searchstate import SearchState
from components.state import AppState, FunctionState
from components.statebase import StateBase
from components.statsstate import StatisticsState
from components.viewstate import ViewState

PIECES = (ViewState, SearchState, DisplayState, StatisticsState, FunctionState)


def _own(piece: type) -> set[str]:
    return {n for n, p in piece.param.objects("existing").items()
            if p.owner is piece and n not in StateBase.param}


def _events(state: AppState, *names: str) -> Counter:
    """Every set of these parameters, also to the same value (an echo would show)."""
    calls: Counter = Counter()
    state.param.watch(lambda *events: calls.update(e.name for e in events), list(names),
                      onlychanged=False)
    return calls


def test_each_parameter_belongs_to_one_piece():
    owned = [_own(p) for p in PIECES]
    assert all(owned)
    every = set().union(*owned)
    assert sum(len(o) for o in owned) == len(every)  # no parameter in two pieces
    assert {"collection", "selected"} <= _own(SearchState)
    assert {"preset", "vmin", "chain_id"} <= _own(DisplayState)
    assert {"viewport", "view_request", "drawings"} <= _own(ViewState)
    assert {"statistics", "statistics_area"} <= _own(StatisticsState)
    assert {"function_layer"} <= _own(FunctionState)
    assert set(AppState.param) - set(StateBase.param) == every


def test_the_pieces_round_trip_through_the_url(state, backend):
    state.param.update(collection=S2, place="Berlin", start=date(2020, 5, 1),
                       end=date(2020, 7, 31), max_cloud=90.0, sort="Oldest first", limit=20)
    assert state.search() == 2
    state.selected = [NEW]
    state.choose_preset("ndvi")
    state.param.update(vmin=[-0.5], vmax=[0.9], viewport=(13.30, 52.50, 13.40, 52.56))
    state.function_layer = state.chain_id  # any stored chain is a valid function layer
    query = to_query(state)
    assert set(query) == {"center", "zoom", "collection", "place", "start", "end", "cloud",
                          "sort", "limit", "items", "chain", "fn"}
    other = AppState(backend=backend)
    assert apply_query(other, query)
    again = to_query(other)
    assert {k: v for k, v in again.items() if k not in ("center", "zoom")} == \
        {k: v for k, v in query.items() if k not in ("center", "zoom")}
    for name in ("collection", "place", "start", "end", "max_cloud", "sort", "limit",
                 "selected", "preset", "expression", "colormap", "vmin", "vmax", "chain_id",
                 "function_layer"):
        assert getattr(other, name) == getattr(state, name), name
    assert other.notice is None or other.notice.level not in ("warning", "error")
    w, _, e, _ = other.view_request
    assert abs((w + e) / 2 - 13.35) < 1e-4


def test_a_preset_change_is_applied_once(state):
    state.open_latest()
    calls = _events(state, "preset", "expression", "vmin", "vmax", "chain", "chain_id",
                    "tile_url", "selected")
    state.choose_preset("ndvi")
    assert calls == Counter({"preset": 1, "expression": 1, "vmin": 1, "vmax": 1, "chain": 1,
                             "chain_id": 1, "tile_url": 1})
    calls.clear()
    state.choose_preset("ndvi")  # the same again: set once, the chain is not rebuilt
    assert calls["chain"] == 0 and calls["preset"] == 1


def test_a_selection_change_draws_once_and_switching_collections_clears_once(state):
    state.open_latest()
    calls = _events(state, "chain", "selected", "results")
    state.selected = [OLD]
    assert calls == Counter({"selected": 1, "chain": 1})
    assert OLD in state.chain.to_json()
    calls.clear()
    state.collection = "landsat-test"
    assert calls == Counter({"selected": 1, "results": 1, "chain": 1})
    assert state.chain is None and state.selected == []
