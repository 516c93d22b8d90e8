"""Vector data: GeoJSON geometries checked at the boundary, and vector files read to WGS84.

:func:`read_vector` reads GeoJSON, GeoPackage, a zipped Shapefile or KML with pyogrio (GDAL)
and reprojects every feature to WGS84 lon/lat, so the map, measurements and extracts all
take the same GeoJSON. Files are refused with a clear message when unreadable, too big,
empty, or in no known CRS (a Shapefile without its ``.prj``).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity, make_valid

from engine.errors import InvalidInput
from engine.vectorfiles import (
    FORMATS,
    MAX_BYTES,
    VectorSource,
    check_vector_name,
    vector_source,
)

#: Most features kept: the map draws every one.
MAX_FEATURES = 20_000
#: Most vertices of one geometry handed to measurements or extracts.
MAX_VERTICES = 100_000

_WGS84 = CRS.from_epsg(4326)


# -- geometries -------------------------------------------------------------------------
def parse_geometry(geometry: dict | BaseGeometry, *, fix: bool = True,
                   max_vertices: int = MAX_VERTICES) -> tuple[BaseGeometry, str | None]:
    """A GeoJSON geometry (or Feature) as a valid shapely geometry in WGS84.

    Args:
        geometry: GeoJSON geometry dict, a Feature, or a shapely geometry (lon/lat).
        fix: repair invalid polygons (self-intersections) with ``make_valid``; when False
            they raise InvalidInput.
        max_vertices: more vertices raise InvalidInput.

    Returns:
        The geometry and a note saying what was repaired (None when nothing was).
    """
    if isinstance(geometry, dict) and geometry.get("type") == "Feature":
        geometry = geometry.get("geometry") or {}
    if isinstance(geometry, BaseGeometry):
        geom = geometry
    else:
        if not isinstance(geometry, dict) or "type" not in geometry:
            raise InvalidInput("expected a GeoJSON geometry {type, coordinates}")
        try:
            geom = shape(geometry)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError,
                shapely.errors.ShapelyError) as exc:
            raise InvalidInput(f"invalid GeoJSON {geometry.get('type')}: {exc}") from None
    if geom.is_empty:
        raise InvalidInput(f"the {geom.geom_type} is empty (no coordinates)")
    n = shapely.get_num_coordinates(geom)
    if n > max_vertices:
        raise InvalidInput(f"the geometry has {n:,} vertices, at most {max_vertices:,}: "
                           "simplify it first")
    coords = shapely.get_coordinates(geom)
    if not np.isfinite(coords).all():
        raise InvalidInput("the geometry has a coordinate that is not a finite number")
    if (np.abs(coords[:, 0]) > 180).any() or (np.abs(coords[:, 1]) > 90).any():
        raise InvalidInput("the geometry is not in WGS84 lon/lat: longitudes must be in "
                           "-180..180 and latitudes in -90..90")
    if geom.is_valid:
        return geom, None
    reason = explain_validity(geom)
    if not fix:
        raise InvalidInput(f"the {geom.geom_type} is invalid ({reason}): fix it, e.g. "
                           "remove the self-intersection")
    fixed = make_valid(geom)
    if fixed.geom_type == "GeometryCollection":  # keep the parts of the original dimension
        dim = shapely.get_dimensions(geom)
        parts = [g for g in fixed.geoms if shapely.get_dimensions(g) == dim]
        fixed = shapely.union_all(parts) if parts else fixed
    if fixed.is_empty or shapely.get_dimensions(fixed) != shapely.get_dimensions(geom):
        raise InvalidInput(f"the {geom.geom_type} is invalid ({reason}) and has no area "
                           "once repaired")
    return fixed, (f"the {geom.geom_type.lower()} was invalid ({reason}); it was repaired "
                   f"into a valid {fixed.geom_type}")


def area_geometry(geometry: dict | BaseGeometry, *, fix: bool = True) -> tuple[BaseGeometry,
                                                                               str | None]:
    """Like :func:`parse_geometry`, but only a Polygon or MultiPolygon is accepted."""
    geom, note = parse_geometry(geometry, fix=fix)
    if geom.geom_type not in ("Polygon", "MultiPolygon") or geom.area <= 0:
        raise InvalidInput(f"an area (Polygon or MultiPolygon) is needed, got a "
                           f"{geom.geom_type}", choices=["Polygon", "MultiPolygon"])
    return geom, note


# -- feature collections -----------------------------------------------------------------
@dataclass(frozen=True)
class VectorLayer:
    """Features read from a file, in WGS84, as a GeoJSON FeatureCollection.

    ``source_crs`` is the file's CRS (what was reprojected from); ``notes`` lists what was
    changed on the way (repaired or skipped features).
    """

    name: str
    features: dict
    source_crs: str
    bounds: tuple[float, float, float, float]
    notes: tuple[str, ...] = field(default=())

    @property
    def count(self) -> int:
        return len(self.features["features"])

    def property_names(self) -> list[str]:
        """Attribute names over every feature, in first-seen order."""
        names: dict[str, None] = {}
        for f in self.features["features"]:
            names.update(dict.fromkeys(f.get("properties") or {}))
        return list(names)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(value)


def read_vector(source: str | Path | bytes, *, filename: str | None = None,
                layer: str | int | None = None, crs: Any = None,
                max_bytes: int = MAX_BYTES, max_features: int = MAX_FEATURES) -> VectorLayer:
    """Read a vector file and reproject its features to WGS84 GeoJSON.

    Args:
        source: a path, or the file's bytes (an upload) with ``filename`` giving its type.
        filename: name of uploaded bytes (its suffix picks the format).
        layer: the layer of a multi-layer file (GeoPackage); the first by default.
        crs: the CRS to assume when the file declares none (e.g. "EPSG:32633").
        max_bytes, max_features: larger files raise InvalidInput.

    Returns:
        A :class:`VectorLayer`; invalid polygons are repaired and said in ``notes``.
    """
    with tempfile.TemporaryDirectory(prefix="eox-vector-") as tmp:
        workdir = Path(tmp)
        if isinstance(source, bytes | bytearray):
            if not filename:
                raise InvalidInput("uploaded bytes need a filename to tell their type",
                                   choices=list(FORMATS))
            if len(source) > max_bytes:
                raise InvalidInput(f"{filename} is {len(source) / 2**20:.1f} MB, more than "
                                   f"the limit of {max_bytes / 2**20:.0f} MB")
            filename = Path(check_vector_name(filename)).name
            # saved under a fixed name: only its suffix (the format) comes from the user
            path = workdir / "upload" / ("upload" + Path(filename).suffix.lower())
            path.parent.mkdir()
            path.write_bytes(bytes(source))
        else:
            path = Path(check_vector_name(str(source))).expanduser()
            if not path.is_file():
                raise InvalidInput(f"no vector file at {path}")
            size = path.stat().st_size
            if size > max_bytes:
                raise InvalidInput(f"{path.name} is {size / 2**20:.1f} MB, more than the "
                                   f"limit of {max_bytes / 2**20:.0f} MB")
        shown = filename or path.name
        src = vector_source(path, workdir, shown=shown)
        return _read(src, name=Path(shown).stem, layer=layer, crs=crs,
                     max_features=max_features)


def _read(src: VectorSource, *, name: str, layer: str | int | None, crs: Any,
          max_features: int) -> VectorLayer:
    import pyogrio
    import pyogrio.raw
    from pyogrio.errors import DataLayerError, DataSourceError

    path, kind = src.gdal_path, src.kind
    try:
        layers = pyogrio.list_layers(path)
        if layer is None and len(layers) > 1:  # KML folders, GeoPackage tables: first non-empty
            for lname, _ in layers:
                if pyogrio.read_info(path, layer=lname)["features"]:
                    layer = lname
                    break
        info = pyogrio.read_info(path, layer=layer)
        if info.get("driver") not in src.drivers:  # the content checks should make this moot
            raise InvalidInput(f"{name} was recognised as {info.get('driver')}, not a {kind} "
                               "file: refused", choices=list(FORMATS))
        if info["features"] > max_features:
            raise InvalidInput(f"{name} has {info['features']:,} features, more than the "
                               f"limit of {max_features:,}: split or simplify it first")
        meta, _, wkb, fields = pyogrio.raw.read(path, layer=layer)
    except (DataSourceError, DataLayerError) as exc:
        raise InvalidInput(f"cannot read {name} as a {kind}: {exc}") from None
    except ValueError as exc:  # pyogrio: bad layer name/index
        raise InvalidInput(f"cannot read {name}: {exc}",
                           choices=[str(n) for n, _ in layers]) from None
    declared = meta.get("crs")
    if declared is None and crs is None:
        raise InvalidInput(f"{name} declares no coordinate reference system (a Shapefile "
                           "needs its .prj file): add it, or say which CRS it is in")
    try:
        src = CRS.from_user_input(declared if declared is not None else crs)
    except CRSError as exc:
        raise InvalidInput(f"{name}: unknown coordinate reference system {declared or crs!r}: "
                           f"{exc}") from None
    geoms = shapely.from_wkb(wkb)
    if not src.equals(_WGS84, ignore_axis_order=True):
        tr = Transformer.from_crs(src, _WGS84, always_xy=True)
        geoms = shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0],
                                                                                xy[:, 1])))
    columns = [str(c) for c in meta.get("fields", ())]
    if kind == "KML":  # LIBKML adds a dozen standard fields; keep those with a value
        keep = [k for k in range(len(columns))
                if any(v is not None and v != -1 for v in fields[k])]
        columns, fields = [columns[k] for k in keep], [fields[k] for k in keep]
    features, notes, skipped = [], [], 0
    for i, geom in enumerate(geoms):
        if geom is None or geom.is_empty:
            skipped += 1
            continue
        try:
            geom, note = parse_geometry(geom)
        except InvalidInput as exc:
            raise InvalidInput(f"{name}, feature {i}: {exc}") from None
        if note:
            notes.append(f"feature {i}: {note}")
        props = {c: _jsonable(fields[k][i]) for k, c in enumerate(columns)}
        features.append({"type": "Feature", "geometry": mapping(geom), "properties": props})
    if skipped:
        notes.append(f"{skipped} feature(s) without geometry were left out")
    if not features:
        raise InvalidInput(f"{name} has no feature with a geometry")
    bounds = tuple(float(v) for v in shapely.total_bounds(
        [shape(f["geometry"]) for f in features]))
    return VectorLayer(name=name, features={"type": "FeatureCollection", "features": features},
                       source_crs=src.to_string(), bounds=bounds, notes=tuple(notes))


def feature_collection(features: Sequence[dict]) -> dict:
    """A GeoJSON FeatureCollection of ``features`` (each checked)."""
    out = []
    for f in features:
        geom, _ = parse_geometry(f.get("geometry") or {} if f.get("type") == "Feature" else f)
        props = f.get("properties") if f.get("type") == "Feature" else {}
        out.append({"type": "Feature", "geometry": mapping(geom), "properties": props or {}})
    return {"type": "FeatureCollection", "features": out}


def parse_geojson(text: str | bytes) -> dict:
    """A GeoJSON FeatureCollection from text (a FeatureCollection, Feature or geometry)."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the GeoJSON is malformed: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput("GeoJSON must be an object (FeatureCollection, Feature or geometry)")
    if data.get("type") == "FeatureCollection":
        feats = data.get("features")
        if not isinstance(feats, list):
            raise InvalidInput("the FeatureCollection has no 'features' list")
        return feature_collection(feats)
    return feature_collection([data])
