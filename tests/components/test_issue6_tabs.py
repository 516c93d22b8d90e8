"""Split, Draw, Measure, Overlay and Extract tabs, driven by setting values (no browser)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import zipfile

import numpy as np
import param
import pytest
import rasterio
from component_data import NEW, OLD, S2
from rasterio.warp import transform

from components.draw import DrawPanel, features_from_sources, sources_from_features
from components.extract import ExtractPanel
from components.map import MapView, to_mercator
from components.measure import MeasurePanel
from components.overlay import OverlayPanel
from components.shell import Shell
from components.split import CURRENT, SplitPanel, SplitView, layer_chain
from components.tilemath import to_lonlat
from engine.measure import area, length

# a box inside the fixture scenes (UTM 33N, origin 385000/5825000, 256 px at 20 m)
UTM_BOX = (386_000.0, 5_821_000.0, 388_000.0, 5_823_500.0)


def _lonlat_box():
    xs, ys = transform("EPSG:32633", "EPSG:4326", [UTM_BOX[0], UTM_BOX[2]],
                       [UTM_BOX[1], UTM_BOX[3]])
    return xs[0], ys[0], xs[1], ys[1]


def _draw_polygon(panel: DrawPanel, lonlat: list[tuple[float, float]]) -> None:
    """What PolyDrawTool does in the browser: append a Mercator ring to the source."""
    arr = np.asarray(lonlat, dtype=float)
    x, y = to_mercator(arr[:, 0], arr[:, 1])
    src = panel.sources["polygon"]
    src.data = {"xs": [*src.data["xs"], list(x)], "ys": [*src.data["ys"], list(y)]}


@pytest.fixture
def shown(state):
    state.open_latest()
    return state


def test_drawing_in_the_sources_becomes_features_and_measures(shown):
    draw = DrawPanel(state=shown)
    measure = MeasurePanel(state=shown)
    ring = [(13.0, 60.0), (13.1, 60.0), (13.1, 60.1), (13.0, 60.1)]
    _draw_polygon(draw, ring)
    assert len(shown.drawings) == 1
    f = shown.drawings[0]
    assert f["properties"] == {"id": "polygon-1", "kind": "polygon", "name": "Polygon 1"}
    assert np.allclose(f["geometry"]["coordinates"][0], [*ring, ring[0]], atol=1e-6)
    row = measure.frame().iloc[0]
    expected = area(f["geometry"])
    assert 6.1e7 < expected < 6.3e7  # ~ 5.6 km x 11.1 km at 60 N, not Mercator's 4x
    assert row["Area"] == f"{expected / 1e6:.1f} km²"
    measure.area_unit = "hectares"
    assert measure.frame().iloc[0]["Area"] == f"{round(expected / 1e4):,} ha"
    assert draw._table.value["Name"].tolist() == ["Polygon 1"]


def test_lines_points_boxes_round_trip_and_export(shown):
    draw = DrawPanel(state=shown)
    x, y = to_mercator(np.array([10.0, 10.0, 11.0]), np.array([50.0, 51.0, 51.0]))
    draw.sources["line"].data = {"xs": [list(x)], "ys": [list(y)]}
    draw.sources["point"].data = {"x": [x[0]], "y": [y[0]]}
    draw.sources["box"].data = {"x": [(x[0] + x[2]) / 2], "y": [(y[0] + y[1]) / 2],
                                "width": [x[2] - x[0]], "height": [y[1] - y[0]]}
    kinds = [f["properties"]["kind"] for f in shown.drawings]
    assert kinds == ["box", "line", "point"]
    box = shown.drawings[0]["geometry"]["coordinates"][0]
    assert np.allclose(box[0], (10.0, 50.0), atol=1e-6) and np.allclose(box[2], (11.0, 51.0),
                                                                         atol=1e-6)
    line = shown.drawings[1]["geometry"]
    assert MeasurePanel(state=shown).frame().iloc[1]["Length / perimeter"] == (
        f"{length(line) / 1000:.0f} km")
    exported = json.loads(draw._export_file().getvalue())
    assert exported["type"] == "FeatureCollection" and len(exported["features"]) == 3
    # round trip through the sources
    data, notes = sources_from_features(exported["features"])
    assert not notes
    again = features_from_sources(data)
    assert [f["geometry"]["type"] for f in again] == ["Polygon", "LineString", "Point"]
    assert np.allclose(again[0]["geometry"]["coordinates"], box, atol=1e-6)


def test_import_geojson_and_bad_import(shown):
    draw = DrawPanel(state=shown)
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "x"},
         "geometry": {"type": "MultiPolygon", "coordinates": [
             [[[0, 0], [1, 0], [1, 1], [0, 0]]], [[[2, 0], [3, 0], [3, 1], [2, 0]]]]}}]}
    assert draw.import_geojson(json.dumps(fc)) == 2
    assert [f["properties"]["name"] for f in shown.drawings] == ["Polygon 1", "Polygon 2"]
    assert "split into 2 shapes" in shown.notice.text or "Imported 2" in shown.notice.text
    assert draw.import_geojson("{not json") == 0
    assert shown.notice.level == "error" and "malformed" in shown.notice.text
    draw._table.selection = [0]
    draw.delete(draw._selected_ids())
    assert [f["id"] for f in shown.drawings] == ["polygon-1"]
    draw.clear()
    assert shown.drawings == [] and draw.sources["polygon"].data["xs"] == []


def test_self_intersecting_drawing_is_measured_repaired(shown):
    draw = DrawPanel(state=shown)
    _draw_polygon(draw, [(0, 0), (1, 1), (1, 0), (0, 1)])
    row = MeasurePanel(state=shown).frame().iloc[0]
    assert "repaired" in row["Note"] and row["Area"].endswith("km²")


def test_draw_tools_on_the_map(shown):
    mapview = MapView(state=shown)
    draw = DrawPanel(state=shown, map=mapview)
    names = {t.name for t in mapview.figure.tools}
    assert {"eox-draw-polygon", "eox-draw-line", "eox-draw-point", "eox-draw-box",
            "eox-draw-edit"} <= names
    draw.mode = "Polygon"
    assert mapview.figure.toolbar.active_multi.name == "eox-draw-polygon"
    draw.mode = "Pan / zoom"
    assert mapview.figure.toolbar.active_multi is None


def test_overlay_geojson_upload_and_shapefile_zip(shown, tmp_path):
    mapview = MapView(state=shown)
    overlay = OverlayPanel(state=shown, map=mapview)
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"crop": "wheat", "area ha": 3},
         "geometry": {"type": "Polygon", "coordinates": [[[13.3, 52.5], [13.4, 52.5],
                                                          [13.4, 52.6], [13.3, 52.5]]]}},
        {"type": "Feature", "properties": {"crop": None, "area ha": None},
         "geometry": {"type": "LineString", "coordinates": [[13.3, 52.5], [13.5, 52.7]]}}]}
    ov = overlay.load_bytes(json.dumps(fc).encode(), "fields.geojson")
    assert ov is not None and set(ov.renderers) == {"polygons", "lines"}
    poly = ov.renderers["polygons"].data_source.data
    x, y = to_mercator(np.array([13.3]), np.array([52.5]))
    assert np.isclose(poly["xs"][0][0][0][0], x[0]) and poly["p0"] == ["wheat"]
    assert ("area ha", "@p1") in ov.hover.tooltips
    assert shown.view_request[0] < 13.3 and shown.view_request[2] > 13.5
    overlay._colour.value = "#123456"
    assert ov.renderers["polygons"].glyph.fill_color == "#123456"
    overlay.remove("fields")
    assert ov.renderers["polygons"] not in mapview.figure.renderers
    assert ov.hover not in mapview.figure.tools
    # a zipped shapefile by path
    import pyogrio.raw
    import shapely
    from shapely.geometry import Point

    shp = tmp_path / "wells.shp"
    pyogrio.raw.write(str(shp), np.array([shapely.to_wkb(Point(386000, 5821000))], object),
                      [np.array(["w1"], object)], ["name"], driver="ESRI Shapefile",
                      geometry_type="Point", crs="EPSG:32633")
    zpath = tmp_path / "wells.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in tmp_path.glob("wells.*"):
            if f.suffix != ".zip":
                zf.write(f, f.name)
    with _folders(shown, tmp_path):
        ov2 = overlay.load_path(str(zpath))
    lon, lat = transform("EPSG:32633", "EPSG:4326", [386000], [5821000])
    x, y = to_mercator(np.array(lon), np.array(lat))
    pts = ov2.renderers["points"].data_source.data
    assert np.isclose(pts["x"][0], x[0]) and np.isclose(pts["y"][0], y[0], atol=1e-3)


@contextlib.contextmanager
def _folders(state, *folders):
    """Allow server paths inside ``folders`` for the duration (the backend is shared)."""
    before = state.backend
    with param.edit_constant(state):
        state.backend = dataclasses.replace(before, raster_dirs=tuple(folders))
    try:
        yield
    finally:
        with param.edit_constant(state):
            state.backend = before


def test_overlay_bad_files_give_messages(shown, tmp_path):
    overlay = OverlayPanel(state=shown)
    assert overlay.load_bytes(b"garbage", "x.gpkg") is None
    assert shown.notice.level == "error" and "not a GeoPackage" in shown.notice.text
    assert overlay.load_bytes(b"x", "x.csv") is None and "unknown vector" in shown.notice.text
    assert overlay.load_path("/nonexistent/file.gpkg") is None
    assert "disabled" in shown.notice.text  # no folders configured: no server paths at all
    # server paths only inside the configured folders, never arbitrary files
    with _folders(shown, tmp_path):
        assert overlay.load_path("/etc/passwd") is None
        assert shown.notice.level == "error" and "outside the folders" in shown.notice.text
        assert overlay.load_path("../../etc/passwd") is None and "'..'" in shown.notice.text
        assert overlay.load_path("absent.gpkg") is None and "no vector file" in shown.notice.text
    overlay.allow_paths = False
    assert overlay.load_path("/etc/passwd") is None and "disabled" in shown.notice.text


def test_extract_panel_writes_a_cog_of_the_drawn_box(shown):
    draw, panel = DrawPanel(state=shown), ExtractPanel(state=shown)
    assert "Draw a box" in panel._info.object
    w, s, e, n = _lonlat_box()
    _draw_polygon(draw, [(w, s), (e, s), (e, n), (w, n)])
    assert panel.shape == "polygon-1"
    panel.what = "Original band values"
    result = panel.extract()
    assert result is not None and panel._download.visible and panel._progress.value == 100
    with rasterio.open(result.path) as ds:
        assert ds.crs.to_epsg() == 32633 and ds.res == (20.0, 20.0)
        assert ds.count == 3 and ds.dtypes[0] == "uint16"
    panel.max_pixels = 100
    assert panel.extract() is None
    assert "too large" in shown.notice.text and not panel._download.visible
    panel._cleanup()
    assert not result.path.exists()


def test_extract_panel_needs_a_polygon(shown):
    panel = ExtractPanel(state=shown)
    assert panel.extract() is None
    assert "draw a box or a polygon first" in shown.notice.text


def test_split_panel_builds_two_chains_on_linked_ranges(shown):
    shown.search()
    panel = SplitPanel(state=shown)
    assert panel.left_scene == shown.selected[0] and panel.right_scene != panel.left_scene
    panel.right_display = "false-colour" if "false-colour" in shown.presets else CURRENT
    panel.show = True
    view = panel.view
    assert view.left is not None and view.right is not None and view.left != view.right
    assert view.left.source.ids == (panel.left_scene,)
    assert view.right.source.ids == (panel.right_scene,)
    left, right = view.figures["left"], view.figures["right"]
    assert left.x_range is right.x_range and left.y_range is right.y_range
    urls = {view._tiles[n].tile_source.url for n in ("left", "right")}
    assert len(urls) == 2 and all("/tiles/" in u for u in urls)
    assert panel.main_view().visible
    view.mode = "Swipe"
    view.swipe = 0.3
    assert view._over.styles["clip-path"] == "inset(0 0 0 30.0%)"
    assert view.figures["under"].x_range is left.x_range


def test_split_view_python_api(backend):
    from engine.chain import Chain

    a = Chain.from_json({"source": {"collection": S2, "ids": [OLD]}, "steps": [
        {"name": "bands", "bands": ["B04", "B03", "B02"]}, {"name": "scale", "min": [0],
                                                            "max": [3000]}]})
    b = Chain.from_json({"source": {"collection": S2, "ids": [NEW]}, "steps": [
        {"name": "bands", "bands": ["B04", "B03", "B02"]}, {"name": "scale", "min": [0],
                                                            "max": [3000]}]})
    view = SplitView(backend=backend, left=a, right=b, view=(13.0, 52.3, 13.6, 52.7))
    assert a.id in view.url("left") and b.id in view.url("right")
    assert backend.chain_store.get(b.id) == b


def test_layer_chain_presets(shown):
    chain = layer_chain(shown, [OLD], "ndvi")
    assert chain.source.ids == (OLD,) and "RdYlGn" in chain.to_json()
    same = layer_chain(shown, [NEW], CURRENT)
    assert same.steps == shown.chain.steps and same.source.ids == (NEW,)


def test_shell_registers_the_tabs(shown):
    shell = Shell(state=shown)
    assert {"Split", "Draw", "Measure", "Overlay", "Extract"} <= set(shell.panels)
    assert shell.panels["Draw"].map is shell.map
    assert shell.panels["Split"].main_view() in shell.main().objects


def test_overlay_feature_becomes_the_extract_and_profile_area(shown):
    """Issue 14 item 9: a polygon of a loaded vector file is offered as an area."""
    from components.profile import ProfilePanel

    overlay, extract = OverlayPanel(state=shown), ExtractPanel(state=shown)
    profile = ProfilePanel(state=shown)
    w, s, e, n = _lonlat_box()
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"note": None},
         "geometry": {"type": "LineString", "coordinates": [[w, s], [e, n]]}},
        {"type": "Feature", "properties": {"field": "North field"},
         "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n],
                                                          [w, s]]]}}]}
    assert overlay.load_bytes(json.dumps(fc).encode(), "fields.geojson") is not None
    assert list(overlay._feature.options) == ["2: North field"]  # polygons only
    assert overlay.use_as_area("fields", 0) is None and "polygon" in shown.notice.text
    fid = overlay.use_as_area("fields", overlay._feature.value)
    assert fid == "overlay-1" and shown.drawings[-1]["properties"]["name"] == \
        "fields: North field"
    assert extract.shape == fid and "fields: North field" in extract._shape.options
    assert profile.shape == fid and profile._shape.options["fields: North field"] == fid
    extract.what = "Original band values"
    result = extract.extract()
    assert result is not None and result.path.exists()
    with rasterio.open(result.path) as ds:
        assert ds.count == 3
    extract._cleanup()


def _split_view_box(view) -> tuple[float, float, float, float]:
    (w, e), (s, n) = to_lonlat([view.x_range.start, view.x_range.end],
                               [view.y_range.start, view.y_range.end])
    return float(w), float(s), float(e), float(n)


def test_split_view_opens_where_the_main_map_is_and_follows_its_scenes(shown):
    """Shown again after the main map went elsewhere, the split maps show the main map's
    view (not the place they were last open at); a scene picked outside the split maps'
    view brings them to it (the monkey's dark split panels)."""
    shown.search()
    panel = SplitPanel(state=shown)
    shown.viewport = first = tuple(shown.bounds[panel.left_scene])  # the map reports it
    panel.show = True
    assert np.allclose(_split_view_box(panel.view), first, atol=1e-6)
    panel.show = False
    w, s, e, n = first
    far = (w + 40.0, s - 20.0, e + 40.0, n - 20.0)  # the main map moved elsewhere
    shown.viewport = far
    panel.show = True
    assert np.allclose(_split_view_box(panel.view), far, atol=1e-6)
    # a scene of the results picked for one side while the maps show nothing of them
    panel.left_scene = next(i for i in shown.bounds if i != panel.left_scene)
    got = _split_view_box(panel.view)
    boxes = [shown.bounds[i] for i in (panel.left_scene, panel.right_scene)]
    eps = 1e-6
    assert all(got[0] <= b[0] + eps and got[2] >= b[2] - eps and got[1] <= b[1] + eps
               and got[3] >= b[3] - eps for b in boxes), (got, boxes)
    # a display change with the scenes in view leaves the maps where the user put them
    panel.view.show((got[0] + 0.001, got[1], got[2], got[3]))
    before = _split_view_box(panel.view)
    other = next(k for k in panel.param.left_display.objects.values()
                 if k not in (panel.left_display, CURRENT, "true-colour"))  # another look
    chain = panel.view.left
    panel.left_display = other
    assert panel.view.left != chain  # the display did change
    assert np.allclose(_split_view_box(panel.view), before)


def test_split_sides_keep_two_scenes_when_the_results_change_in_a_served_page(shown):
    """Rendered (as in a served page), a side's widget picks its first option itself when
    its value is not among new options; that must not make both sides the same scene
    while the right widget names another (found by hand: switch collection, search, show)."""
    import pandas as pd
    from bokeh.document import Document

    shown.search()
    panel = SplitPanel(state=shown)
    panel.__panel__().get_root(Document())
    panel.show = True
    panel.show = False
    shown.param.update(results=pd.DataFrame(), selected=[])  # what a collection switch does
    assert panel.left_scene is None and panel.right_scene is None
    shown.search()
    assert len(shown.results) > 1
    assert panel.left_scene != panel.right_scene, (panel.left_scene, panel.right_scene)
    for side in ("left", "right"):
        assert getattr(panel, f"{side}_scene") == panel._widgets[f"{side}_scene"].value
    panel.show = True
    assert panel.view.left.source.ids != panel.view.right.source.ids
