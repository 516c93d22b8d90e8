"""A loaded overlay appears in the layer list (issue #14 item 9): its checkbox shows and hides
it (and the Overlay tab's Visible follows), its row removes it from the map and the Overlay
tab; removed in the Overlay tab, its row goes too. Built-in layers cannot be removed."""

from __future__ import annotations

import json

import panel as pn

from components.layers import LayerList
from components.map import MapView
from components.overlay import OverlayPanel, overlay_layer

FIELDS = {"type": "FeatureCollection", "features": [
    {"type": "Feature", "properties": {"crop": "wheat"},
     "geometry": {"type": "Polygon", "coordinates": [[[13.3, 52.5], [13.4, 52.5],
                                                      [13.4, 52.6], [13.3, 52.5]]]}},
    {"type": "Feature", "properties": {"crop": "lane"},
     "geometry": {"type": "LineString", "coordinates": [[13.3, 52.5], [13.5, 52.7]]}}]}


def _rows(layers: LayerList) -> dict[str, pn.Row]:
    """Layer list rows by their checkbox label."""
    return {row[0].name: row for row in layers._column.objects[1:]}


def _buttons(row: pn.Row) -> list[str]:
    return [w.name for w in row if isinstance(w, pn.widgets.Button)]


def test_overlay_in_the_layer_list_toggle_and_remove(state):
    state.open_latest()
    mapview = MapView(state=state)
    pn.Column(mapview).get_root()
    layers = LayerList(map=mapview)
    overlay = OverlayPanel(state=state, map=mapview)
    ov = overlay.load_bytes(json.dumps(FIELDS).encode(), "fields.geojson")
    assert ov is not None
    name = overlay_layer("fields")
    rows = _rows(layers)
    assert name in rows and next(iter(rows)) == name  # on top, listed first
    assert "✕" in _buttons(rows[name])
    assert all("✕" not in _buttons(r) for n, r in rows.items() if n != name)
    # its renderers are on top of the map's layers and follow the checkbox
    rends = list(ov.renderers.values())
    assert all(r in mapview.figure.renderers for r in rends)
    rows[name][0].value = False
    assert not any(r.visible for r in rends)
    assert overlay._visible.value is False and ov.visible is False
    overlay._visible.value = True  # and the other way round
    assert all(r.visible for r in rends)
    assert next(s for s in mapview.layers if s.name == name).visible
    # the row's remove button: gone from the map, the list and the Overlay tab
    next(w for w in _rows(layers)[name] if getattr(w, "name", "") == "✕").clicks += 1
    assert name not in _rows(layers) and "fields" not in overlay.overlays
    assert not any(r in mapview.figure.renderers for r in rends)
    assert ov.hover not in mapview.figure.tools
    assert list(overlay._which.options) == []
    # removed in the Overlay tab: the row goes too
    ov2 = overlay.load_bytes(json.dumps(FIELDS).encode(), "fields.geojson")
    assert ov2 is not None and name in _rows(layers)
    overlay.remove("fields")
    assert name not in _rows(layers)
    assert not any(r in mapview.figure.renderers for r in ov2.renderers.values())


def test_style_widgets_follow_the_chosen_overlay_without_restyling_it(state):
    """Choosing another overlay fills the style widgets one by one from it: neither overlay
    takes the other's colour, width or opacity on the way."""
    mapview = MapView(state=state)
    pn.Column(mapview).get_root()
    overlay = OverlayPanel(state=state, map=mapview)
    a = overlay.load_bytes(json.dumps(FIELDS).encode(), "a.geojson")
    overlay._colour.value, overlay._width.value, overlay._alpha.value = "#ff0000", 5.0, 0.8
    b = overlay.load_bytes(json.dumps(FIELDS).encode(), "b.geojson")
    assert overlay._which.value == "b" and b.colour != "#ff0000"
    b_style = (b.colour, b.line_width, b.fill_alpha)
    overlay._which.value = "a"
    assert (a.colour, a.line_width, a.fill_alpha) == ("#ff0000", 5.0, 0.8)
    assert (b.colour, b.line_width, b.fill_alpha) == b_style
    assert a.renderers["polygons"].glyph.line_width == 5.0
    assert (overlay._colour.value, overlay._width.value) == ("#ff0000", 5.0)
