"""Vector import: GeoJSON, GeoPackage, zipped Shapefile and KML to WGS84 GeoJSON; bad files."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import shapely
from shapely.geometry import Point, Polygon, shape

from engine.errors import InvalidInput
from engine.vector import parse_geojson, parse_geometry, read_vector

SQUARE = [[15.0, 50.0], [15.1, 50.0], [15.1, 50.1], [15.0, 50.1], [15.0, 50.0]]


def _write(path: Path, geoms, *, crs: str | None, driver: str, names=("a", "b")) -> Path:
    wkb = np.array([shapely.to_wkb(g) for g in geoms], dtype=object)
    pyogrio.raw.write(str(path), wkb, [np.array(list(names), dtype=object),
                                       np.arange(len(geoms), dtype=np.int32)],
                      ["name", "num"], driver=driver, geometry_type="Unknown"
                      if driver != "ESRI Shapefile" else "Polygon", crs=crs)
    return path


def _utm_squares():
    return [Polygon([(500000, 5550000), (501000, 5550000), (501000, 5551000),
                     (500000, 5551000)]),
            Polygon([(502000, 5550000), (503000, 5550000), (503000, 5551000),
                     (502000, 5551000)])]


def test_geojson_file_and_bytes(tmp_path):
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [SQUARE]},
         "properties": {"name": "field", "crop": "wheat", "ha": 12.5}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [15.05, 50.05]},
         "properties": {"name": "well", "crop": None, "ha": None}}]}
    path = tmp_path / "fields.geojson"
    path.write_text(json.dumps(fc))
    for layer in (read_vector(path), read_vector(path.read_bytes(), filename="x.json")):
        assert layer.count == 2 and layer.source_crs == "EPSG:4326"
        f0 = layer.features["features"][0]
        assert f0["properties"] == {"name": "field", "crop": "wheat", "ha": 12.5}
        assert shape(f0["geometry"]).equals(Polygon(SQUARE))
        assert layer.bounds == pytest.approx((15.0, 50.0, 15.1, 50.1))
        assert layer.property_names() == ["name", "crop", "ha"]
    assert read_vector(path).name == "fields"


def test_geopackage_in_utm_is_reprojected(tmp_path):
    path = _write(tmp_path / "utm.gpkg", _utm_squares(), crs="EPSG:32633", driver="GPKG")
    layer = read_vector(path)
    assert layer.count == 2 and layer.source_crs == "EPSG:32633"
    g = shape(layer.features["features"][0]["geometry"])
    # easting 500 000 is zone 33's central meridian: exactly 15 degrees east
    assert g.bounds[0] == pytest.approx(15.0, abs=1e-9)
    assert 50.0 < g.bounds[1] < 50.2 and g.bounds[3] - g.bounds[1] == pytest.approx(
        1000 / 111_200, rel=0.01)
    assert layer.features["features"][1]["properties"] == {"name": "b", "num": 1}


def _shapefile_zip(tmp_path: Path, *, prj: bool, folder: str = "") -> Path:
    shp_dir = tmp_path / "shp"
    shp_dir.mkdir()
    _write(shp_dir / "plots.shp", _utm_squares(), crs="EPSG:32633", driver="ESRI Shapefile")
    zpath = tmp_path / "plots.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in shp_dir.iterdir():
            if prj or f.suffix != ".prj":
                zf.write(f, folder + f.name)
    return zpath


def test_zipped_shapefile(tmp_path):
    layer = read_vector(_shapefile_zip(tmp_path, prj=True, folder="data/"))
    assert layer.count == 2 and "32633" in layer.source_crs
    assert shape(layer.features["features"][0]["geometry"]).bounds[0] == pytest.approx(15.0)
    assert layer.name == "plots"


def test_shapefile_without_prj_needs_a_crs(tmp_path):
    zpath = _shapefile_zip(tmp_path, prj=False)
    with pytest.raises(InvalidInput, match="declares no coordinate reference system"):
        read_vector(zpath)
    layer = read_vector(zpath, crs="EPSG:32633")
    assert shape(layer.features["features"][1]["geometry"]).bounds[0] == pytest.approx(
        15.0 + 2000 / (111_320 * np.cos(np.radians(50.1))), abs=2e-3)
    with pytest.raises(InvalidInput, match="unknown coordinate reference system"):
        read_vector(zpath, crs="EPSG:999999")


KML = """<?xml version="1.0" encoding="UTF-8"?>
<kml xmlns="http://www.opengis.net/kml/2.2"><Document>
 <Placemark><name>Field A</name><description>winter wheat</description>
  <Polygon><outerBoundaryIs><LinearRing><coordinates>
   15.0,50.0,0 15.1,50.0,0 15.1,50.1,0 15.0,50.1,0 15.0,50.0,0
  </coordinates></LinearRing></outerBoundaryIs></Polygon></Placemark>
 <Placemark><name>Track</name><LineString><coordinates>15.0,50.0 15.2,50.2</coordinates>
  </LineString></Placemark>
</Document></kml>"""


def test_kml(tmp_path):
    layer = read_vector(KML.encode(), filename="fields.kml")
    assert layer.count == 2
    first, second = layer.features["features"]
    assert first["properties"]["Name"] == "Field A"
    assert "altitudeMode" not in first["properties"]  # empty standard KML fields left out
    assert "wheat" in first["properties"]["description"]
    assert shape(first["geometry"]).equals(Polygon(SQUARE))
    assert shape(second["geometry"]).geom_type == "LineString"


def test_self_intersecting_feature_is_repaired_and_noted(tmp_path):
    bow = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [
        [[15, 50], [15.1, 50.1], [15.1, 50], [15, 50.1], [15, 50]]]}}
    layer = read_vector(json.dumps({"type": "FeatureCollection", "features": [bow]}).encode(),
                        filename="bow.geojson")
    assert layer.notes and "repaired" in layer.notes[0]
    assert shape(layer.features["features"][0]["geometry"]).is_valid


def test_bad_files(tmp_path):
    with pytest.raises(InvalidInput, match="broken.gpkg is not a GeoPackage file"):
        read_vector(b"this is not a geopackage" * 10, filename="broken.gpkg")
    with pytest.raises(InvalidInput, match="cannot read"):
        read_vector(b"SQLite format 3\x00" + b"x" * 200, filename="broken.gpkg")
    with pytest.raises(InvalidInput, match="unknown vector file type") as err:
        read_vector(b"x", filename="data.csv")
    assert ".kml" in err.value.choices
    with pytest.raises(InvalidInput, match="more than the limit"):
        read_vector(b"{}" * 100, filename="big.geojson", max_bytes=50)
    big = tmp_path / "big.geojson"
    big.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point",
                                                           "coordinates": [i / 100, 0]}}
        for i in range(30)]}))
    with pytest.raises(InvalidInput, match="30 features, more than the limit of 10"):
        read_vector(big, max_features=10)
    with pytest.raises(InvalidInput, match="no vector file"):
        read_vector(tmp_path / "missing.gpkg")
    with pytest.raises(InvalidInput, match="not a readable zip"):
        read_vector(b"PK nope", filename="x.zip")
    zpath = tmp_path / "nothing.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(InvalidInput, match="holds no .shp"):
        read_vector(zpath)
    with pytest.raises(InvalidInput, match="no feature with a geometry"):
        read_vector(b'{"type": "FeatureCollection", "features": []}', filename="e.geojson")


def test_parse_geojson_and_geometry():
    fc = parse_geojson(json.dumps({"type": "Feature", "properties": {"a": 1},
                                   "geometry": {"type": "Point", "coordinates": [1, 2]}}))
    assert fc["features"][0]["properties"] == {"a": 1}
    with pytest.raises(InvalidInput, match="malformed"):
        parse_geojson("{nope")
    with pytest.raises(InvalidInput, match="no 'features' list"):
        parse_geojson('{"type": "FeatureCollection"}')
    geom, note = parse_geometry(Point(1, 2))
    assert note is None and geom.equals(Point(1, 2))
    with pytest.raises(InvalidInput, match="invalid"):
        parse_geometry({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1],
                                                           [0, 0]]]}, fix=False)
    with pytest.raises(InvalidInput, match="vertices"):
        parse_geometry({"type": "LineString", "coordinates": [[0, 0], [1, 1], [2, 2]]},
                       max_vertices=2)
