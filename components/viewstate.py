"""The map side of the session state: what the map shows and reports, and what is drawn on it."""

from __future__ import annotations

import math
from typing import Any

import param

from components.statebase import StateBase
from components.tilemath import GUESS_SIZE


class ViewState(StateBase):
    """Viewport, map size, zoom requests, click mode, playing and drawn shapes.

    The map reports ``viewport`` and ``map_size``; everything else asks it to move through
    ``view_request`` (one way: the map never writes ``view_request``)."""

    viewport = param.Tuple(default=None, length=4, allow_None=True,
                           doc="Visible W, S, E, N (WGS84), reported by the map.")
    map_size = param.Tuple(default=GUESS_SIZE, length=2,
                           doc="Inner width, height of the map in pixels, reported by the map.")
    view_request = param.Tuple(default=None, length=4, allow_None=True,
                               doc="W, S, E, N the map should show next (zoom actions); a box "
                                   "of zero height asks for exactly its width at its centre.")
    pick = param.Selector(objects=["off", "point", "box"], default="off",
                          doc="What a click (point) or box-select drag (box) on the map sets.")
    playing = param.Boolean(False, doc="True while the time slider plays its dates (the "
                            "tiles of the next dates go first: no preset prefetch then).")
    drawings = param.List(default=[], item_type=dict,
                          doc="Shapes drawn on the map: GeoJSON Features (WGS84), each with "
                              "properties id, kind (polygon/box/line/point) and name.")

    def show_box(self, box: Any) -> None:
        """Move the map to W, S, E, N, also when it is the box asked for last (the user
        panned away since): a zoom action always zooms, and clears an earlier problem."""
        box = tuple(float(v) for v in box)
        self.resolved()
        if box == self.view_request:
            self.param.trigger("view_request")
        else:
            self.view_request = box

    def zoom_to_coordinates(self, lon: float, lat: float, *, span_km: float = 20.0) -> None:
        """Show a square of ``span_km`` around lon/lat."""
        if not (-180 <= lon <= 180 and -85 <= lat <= 85):
            self.notify(f"Zoom: {lon}, {lat} is not a lon/lat within -180..180, -85..85",
                        "error")
            return
        dlat = span_km / 2 / 111.32
        dlon = dlat / max(math.cos(math.radians(lat)), 0.05)
        self.show_box((lon - dlon, lat - dlat, lon + dlon, lat + dlat))
