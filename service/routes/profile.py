"""Time endpoints: an index profile at a point or over a polygon (JSON or CSV) and a
timelapse video export.

``GET /api/profile`` reads one pixel per scene (engine.timeseries.profile), so it answers a
100-date series in well under a second once the files are open. ``POST /api/profile`` takes
a GeoJSON geometry: a polygon's value is the mean over its clear pixels, read in a window of
its bounding box per scene, so the box is bounded (``max_profile_pixels`` per scene,
``max_profile_reads`` over all scenes). ``POST /api/timelapse``
renders one frame per date and answers the MP4 or GIF file; it is bounded by
``max_frames`` / ``max_side`` / ``max_pixels`` so one request cannot run for long.
"""

from __future__ import annotations

import csv
import io
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from shapely.geometry import shape
from starlette.concurrency import run_in_threadpool

from engine.catalog.base import Catalog
from engine.chain import Chain
from engine.collection import Collection
from engine.errors import InvalidInput
from engine.timeseries import (
    DEFAULT_EXPRESSION,
    clear_count,
    collection_of,
    export_video,
    per_date,
)
from engine.timeseries.limits import MAX_PROFILE_PIXELS, MAX_PROFILE_READS, check_polygon_size
from service.models import ProfileGeometry, geometry_of, jsonable
from service.protocols import FrameRenderer

#: Columns of the CSV answer, in order (a polygon adds POLYGON_COLUMNS).
CSV_COLUMNS = ("date", "value", "cloud", "scene_cloud", "id")
#: Extra columns of a polygon profile: clear pixels averaged, cloudy share of valid pixels.
POLYGON_COLUMNS = ("count", "cloud_fraction")
MEDIA = {"mp4": "video/mp4", "gif": "image/gif"}


class TimelapseBody(BaseModel):
    """A timelapse request: a chain template, or a collection with bands or an expression."""

    model_config = ConfigDict(extra="forbid")

    chain: dict[str, Any] | None = Field(
        None, description="Chain JSON used as a template: its steps and mosaic rule are run "
        "on each date (its source query gives the collection and filters)")
    collection: str | None = Field(None, description="Collection id (without a chain)")
    start: str | None = Field(None, description="First date (YYYY, YYYY-MM, YYYY-MM-DD...)")
    end: str | None = Field(None, description="Last date, inclusive")
    bands: list[str] | None = Field(None, min_length=1, max_length=3,
                                    description="1 or 3 bands shown as gray or RGB")
    expression: str | None = Field(None, max_length=2000, description="Band math (one band)")
    vmin: float = Field(0.0, allow_inf_nan=False, description="Value shown black")
    vmax: float = Field(3000.0, allow_inf_nan=False, description="Value shown white")
    colormap: str | None = Field(None, description="Matplotlib colormap for one band")
    mask_clouds: bool = Field(False, description="Mask cloudy pixels (SCL/Fmask)")
    bbox: tuple[float, float, float, float] = Field(description="W, S, E, N in WGS84")
    width: int = Field(512, ge=16, le=4096)
    height: int | None = Field(None, ge=16, le=4096, description="Default: bbox aspect")
    fps: float = Field(2.0, ge=0.1, le=30)
    format: Literal["mp4", "gif"] = "mp4"
    max_cloud: float | None = Field(None, ge=0, le=100, description="Scene cloud cover %")
    label: bool = True


class ProfileBody(BaseModel):
    """A profile request over a GeoJSON geometry: a Polygon/MultiPolygon gives the mean over
    its clear pixels per scene, a Point the pixel's value (as ``GET /api/profile``)."""

    model_config = ConfigDict(extra="forbid")

    collection: str = Field(min_length=1, max_length=200, description="Collection id")
    geometry: ProfileGeometry = Field(description="GeoJSON Polygon, MultiPolygon or Point "
                                      "in WGS84 lon/lat")
    expression: str = Field(DEFAULT_EXPRESSION, min_length=1, max_length=2000,
                            description="Band math with band or common names")
    start: str | None = Field(None, max_length=40, description="First date")
    end: str | None = Field(None, max_length=40, description="Last date (inclusive)")
    max_cloud: float | None = Field(None, ge=0, le=100,
                                    description="Only scenes with cloud cover <= this")
    mask_clouds: bool = Field(True, description="Cloudy pixels give no value")
    format: Literal["json", "csv"] = Field("json", description="Answer format")


@dataclass
class TimeRoutes:
    """``/api/profile`` and ``/api/timelapse`` over a catalog and a renderer."""

    catalog: Catalog
    renderer: FrameRenderer | None  # None: a TileRenderer over the collection's catalog
    max_frames: int = 200
    max_side: int = 2048
    max_pixels: int = 60_000_000
    max_profile_pixels: int = MAX_PROFILE_PIXELS
    max_profile_reads: int = MAX_PROFILE_READS
    router: APIRouter = field(init=False)

    def __post_init__(self) -> None:
        self.router = APIRouter(prefix="/api", tags=["time"])
        self._register()

    # -- the work, run in the thread pool ---------------------------------------------
    def profile(self, collection: str, lon: float, lat: float, expression: str,
                start: str | None, end: str | None, max_cloud: float | None,
                mask_clouds: bool) -> dict[str, Any]:
        """The profile as the JSON answer (``message`` says when no date is clear)."""
        coll = _query(self.catalog, collection, start, end, max_cloud)
        df = coll.profile(lon, lat, expression, mask_clouds=mask_clouds)
        return _answer(collection, df, mask_clouds, geometry=None)

    def profile_geometry(self, body: ProfileBody) -> dict[str, Any]:
        """The profile over ``body.geometry`` as the JSON answer; a polygon is refused when
        its bounding box is over ``max_profile_pixels`` (per scene) or ``max_profile_reads``
        (over all scenes), before any pixel is read."""
        coll = _query(self.catalog, body.collection, body.start, body.end, body.max_cloud)
        geometry = geometry_of(body.geometry)
        if geometry["type"] == "Point":
            lon, lat = geometry["coordinates"][:2]
            df = coll.profile(lon, lat, body.expression, mask_clouds=body.mask_clouds)
            return _answer(body.collection, df, body.mask_clouds, geometry=None)
        self.check_polygon_size(coll, geometry, body.expression)
        df = coll.profile(expression=body.expression, geometry=geometry,
                          mask_clouds=body.mask_clouds)
        return _answer(body.collection, df, body.mask_clouds, geometry=df.attrs["geometry"])

    def check_polygon_size(self, coll: Collection, geometry: dict, expression: str) -> None:
        """InvalidInput naming the size and the limit when the polygon is too large to read
        (``engine.timeseries.limits``, with this service's limits)."""
        check_polygon_size(coll, geometry, expression, max_pixels=self.max_profile_pixels,
                           max_reads=self.max_profile_reads)

    def timelapse(self, body: TimelapseBody) -> tuple[bytes, str]:
        """Render and encode the video; (file bytes, download name)."""
        if body.chain is not None:
            if body.collection or body.bands or body.expression:
                raise InvalidInput("give either a chain template or collection with "
                                   "bands/expression, not both")
            template = Chain.from_json(body.chain)
            coll = collection_of(template.source, self.catalog)
            chain_fn = per_date(template)
        else:
            if not body.collection:
                raise InvalidInput("give a chain template, or a collection with bands or an "
                                   "expression")
            coll = Collection(body.collection, catalog=self.catalog)
            chain_fn = _simple_chain(body)
        if body.start or body.end:
            coll = coll.filter_date(body.start, body.end)
        size = (body.width, body.height) if body.height is not None else None
        with tempfile.TemporaryDirectory(prefix="eox-timelapse-") as tmp:
            out = Path(tmp) / f"timelapse.{body.format}"
            export_video(coll, chain_fn, out, bbox=body.bbox, size=size,
                         width=None if size else body.width, fps=body.fps,
                         max_cloud=body.max_cloud, label=body.label, renderer=self.renderer,
                         max_frames=self.max_frames, max_side=self.max_side,
                         max_pixels=self.max_pixels)
            data = out.read_bytes()
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", coll.name)
        return data, f"timelapse_{name}.{body.format}"

    # -- routes -------------------------------------------------------------------------
    def _register(self) -> None:
        router = self.router

        @router.get(
            "/profile",
            summary="Index value per scene at a point (JSON, or CSV with format=csv)",
            responses={200: {"content": {"application/json": {}, "text/csv": {}}},
                       404: {"description": "Unknown collection, or no scene at the point"},
                       422: {"description": "Bad expression or band"}},
        )
        async def profile(
            collection: str = Query(min_length=1, max_length=200,
                                    description="Collection id"),
            lon: float = Query(ge=-180, le=180, description="Longitude (WGS84)"),
            lat: float = Query(ge=-90, le=90, description="Latitude (WGS84)"),
            expression: str = Query(DEFAULT_EXPRESSION, min_length=1, max_length=2000,
                                    description="Band math with band or common names"),
            start: str | None = Query(None, max_length=40, description="First date"),
            end: str | None = Query(None, max_length=40, description="Last date (inclusive)"),
            max_cloud: float | None = Query(None, ge=0, le=100,
                                            description="Only scenes with cloud cover <= this"),
            mask_clouds: bool = Query(True, description="Cloudy pixels give no value"),
            format: Literal["json", "csv"] = Query("json", description="Answer format"),
        ) -> Response:
            answer = await run_in_threadpool(self.profile, collection, lon, lat, expression,
                                             start, end, max_cloud, mask_clouds)
            if format == "json":
                return JSONResponse(jsonable(answer))
            return Response(_csv(answer["points"]), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": 'attachment; filename="'
                                     + _csv_name(collection, lon, lat) + '"'})

        @router.post(
            "/profile",
            summary="Index value per scene over a polygon (mean of its clear pixels) or at a "
                    "point (JSON, or CSV with format=csv)",
            responses={200: {"content": {"application/json": {}, "text/csv": {}}},
                       400: {"description": "Invalid or empty geometry, polygon too large, "
                                            "bad dates"},
                       404: {"description": "Unknown collection, or no scene in the place"},
                       422: {"description": "Bad body, expression or band"}},
        )
        async def profile_geometry(body: ProfileBody = Body(...)) -> Response:
            answer = await run_in_threadpool(self.profile_geometry, body)
            if body.format == "json":
                return JSONResponse(jsonable(answer))
            name = (_csv_name(body.collection, answer["lon"], answer["lat"])
                    if answer["geometry"] is None else _polygon_csv_name(body.collection,
                                                                         answer["geometry"]))
            return Response(_csv(answer["points"]), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})

        @router.post(
            "/timelapse",
            summary="Timelapse video of a bbox, one frame per date (MP4 or GIF file)",
            response_class=Response,
            responses={200: {"content": {"video/mp4": {}, "image/gif": {}}},
                       400: {"description": "Bad input or over the size/frame limits"},
                       404: {"description": "No scene in the bbox"},
                       422: {"description": "Invalid chain"}},
        )
        async def timelapse(body: TimelapseBody = Body(...)) -> Response:
            data, name = await run_in_threadpool(self.timelapse, body)
            return Response(data, media_type=MEDIA[body.format],
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _simple_chain(body: TimelapseBody):
    """chain_fn from bands/expression + stretch (+ colormap, + cloud mask)."""
    if (body.bands is None) == (body.expression is None):
        raise InvalidInput("give either bands (1 or 3) or an expression")
    if body.bands is not None and len(body.bands) == 2:
        raise InvalidInput("bands: give 1 band (gray) or 3 bands (RGB), not 2")
    if body.vmin == body.vmax:
        raise InvalidInput("vmin and vmax must differ")

    def chain_fn(coll: Collection) -> Chain:
        chain = coll.process()
        chain = (chain.bands(*body.bands) if body.bands is not None
                 else chain.expression(body.expression or ""))
        if body.mask_clouds:
            chain = chain.mask(cloud=True)
        chain = chain.scale(body.vmin, body.vmax)
        return chain.colormap(body.colormap) if body.colormap else chain

    return chain_fn


def _query(catalog: Catalog, collection: str, start: str | None, end: str | None,
           max_cloud: float | None) -> Collection:
    coll = Collection(collection, catalog=catalog)
    if start or end:
        coll = coll.filter_date(start, end)
    if max_cloud is not None:
        coll = coll.filter("eo:cloud_cover", "<=", max_cloud)
    return coll


def _answer(collection: str, df: Any, mask_clouds: bool, *, geometry: dict | None
            ) -> dict[str, Any]:
    """The JSON answer of a profile frame: a point's ``lon``/``lat``, or a polygon's
    ``geometry`` (lon/lat None) and per-point ``count``/``cloud_fraction``."""
    clear = clear_count(df)
    where, other = (("at this point", "pick another point") if geometry is None else
                    ("over this polygon", "draw another polygon"))
    message = None
    if clear == 0:
        message = (f"no clear value {where}: all {len(df)} scenes are cloudy or have no "
                   f"data here; widen the dates, raise max_cloud or {other}")
    polygon = geometry is not None
    points = []
    for r in df.itertuples():
        p = {"date": r.date.isoformat(), "value": _num(r.value), "cloud": bool(r.cloud),
             "scene_cloud": _num(r.scene_cloud), "id": r.id}
        if polygon:
            p.update(count=int(r.count), cloud_fraction=_num(r.cloud_fraction))
        points.append(p)
    return {"collection": collection, "lon": df.attrs["lon"], "lat": df.attrs["lat"],
            "geometry": geometry, "expression": df.attrs["expression"],
            "mask_clouds": mask_clouds, "points": points, "count": len(points),
            "clear": clear, "message": message}


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _csv(points: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = CSV_COLUMNS + (POLYGON_COLUMNS if points and "count" in points[0] else ())
    writer.writerow(columns)
    for p in points:
        writer.writerow(["" if p[c] is None else p[c] for c in columns])
    return buf.getvalue()


def _csv_name(collection: str, lon: float, lat: float) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", collection)
    return f"profile_{safe}_{lon:.5f}_{lat:.5f}.csv"


def _polygon_csv_name(collection: str, geometry: dict) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", collection)
    w, s, e, n = shape(geometry).bounds
    return f"profile_{safe}_polygon_{w:.5f}_{s:.5f}_{e:.5f}_{n:.5f}.csv"
