"""Measure tab: geodesic length and area (WGS84 ellipsoid) of every drawn shape, live.

Measurements come from :mod:`engine.measure` on the shapes' lon/lat vertices, so they are
right at any latitude (the map's Web Mercator metres are never used).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import panel as pn
import param

from components.state import AppState
from engine.errors import EOXError
from engine.measure import AREA_UNITS, LENGTH_UNITS, format_area, format_length, measure

LENGTH_CHOICES = {"auto (m / km)": "auto", "metres": "m", "kilometres": "km", "miles": "mi",
                  "nautical miles": "nmi"}
AREA_CHOICES = {"auto (m² / ha / km²)": "auto", "square metres": "m2", "hectares": "ha",
                "square kilometres": "km2", "acres": "acre"}
assert set(LENGTH_CHOICES.values()) <= {"auto", *LENGTH_UNITS}
assert set(AREA_CHOICES.values()) <= {"auto", *AREA_UNITS}

COLUMNS = ["Name", "Kind", "Length / perimeter", "Area", "Note"]


class MeasurePanel(pn.viewable.Viewer):
    """The Measure tab: one row per drawn shape, with the units chosen here."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")
    length_unit = param.Selector(objects=list(LENGTH_CHOICES), default="auto (m / km)")
    area_unit = param.Selector(objects=list(AREA_CHOICES), default="auto (m² / ha / km²)")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._length = pn.widgets.Select.from_param(self.param.length_unit, name="Lengths in",
                                                    width=200)
        self._area = pn.widgets.Select.from_param(self.param.area_unit, name="Areas in",
                                                  width=200)
        self._table = pn.widgets.Tabulator(self.frame(), show_index=False, disabled=True,
                                           sizing_mode="stretch_width", height=260,
                                           name="measurements", layout="fit_data_stretch")
        self._total = pn.pane.Markdown(self._total_text(), margin=(0, 10))

    def frame(self) -> pd.DataFrame:
        """One row per drawn shape: name, kind, length (or perimeter), area, note."""
        lu, au = LENGTH_CHOICES[self.length_unit], AREA_CHOICES[self.area_unit]
        rows = []
        for f in self.state.drawings:
            props = f.get("properties") or {}
            try:
                m = measure(f["geometry"])
            except EOXError as exc:
                rows.append({"Name": props.get("name", ""), "Kind": props.get("kind", ""),
                             "Length / perimeter": "", "Area": "", "Note": str(exc)})
                continue
            area = m.kind in ("Polygon", "MultiPolygon")
            rows.append({
                "Name": props.get("name", ""), "Kind": props.get("kind", m.kind.lower()),
                "Length / perimeter": "" if m.kind in ("Point", "MultiPoint")
                else format_length(m.length_m, lu),
                "Area": format_area(m.area_m2, au) if area else "",
                "Note": m.note or "",
            })
        return pd.DataFrame(rows, columns=COLUMNS)

    def _total_text(self) -> str:
        if not self.state.drawings:
            return "Draw shapes in the **Draw** tab: their geodesic length and area show here."
        total_len = total_area = 0.0
        for f in self.state.drawings:
            try:
                m = measure(f["geometry"])
            except EOXError:
                continue
            if m.kind in ("Polygon", "MultiPolygon"):
                total_area += m.area_m2
            elif m.kind in ("LineString", "MultiLineString"):
                total_len += m.length_m
        lu, au = LENGTH_CHOICES[self.length_unit], AREA_CHOICES[self.area_unit]
        return (f"**Total** area {format_area(total_area, au)} · line length "
                f"{format_length(total_len, lu)} (WGS84 ellipsoid, geodesic edges)")

    @param.depends("state.drawings", "length_unit", "area_unit", watch=True)
    def _refresh(self) -> None:
        self._table.value = self.frame()
        self._total.object = self._total_text()

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(pn.Row(self._length, self._area), self._total, self._table,
                         sizing_mode="stretch_width")
