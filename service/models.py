"""Request and response models of the tile service (pydantic at the HTTP boundary)."""

from __future__ import annotations

import enum
import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from engine.errors import InvalidInput
from engine.render.results import ChainInfo

#: Deepest zoom level the service accepts (Web Mercator XYZ).
MAX_ZOOM = 30


class ImageFormat(str, enum.Enum):
    """Tile encodings."""

    png = "png"
    webp = "webp"
    jpg = "jpg"

    @property
    def media_type(self) -> str:
        return {"png": "image/png", "webp": "image/webp", "jpg": "image/jpeg"}[self.value]


class TileSize(enum.IntEnum):
    """Tile edge in pixels."""

    s256 = 256
    s512 = 512


def check_tile(z: int, x: int, y: int) -> None:
    """Raise InvalidInput unless z/x/y is a tile of the Web Mercator XYZ grid."""
    if not 0 <= z <= MAX_ZOOM:
        raise InvalidInput(f"zoom {z} is outside 0..{MAX_ZOOM}")
    n = 1 << z
    if not (0 <= x < n and 0 <= y < n):
        raise InvalidInput(f"tile {z}/{x}/{y} is outside the grid: x and y must be in 0..{n - 1}")


class ChainCreated(BaseModel):
    """Answer to POST /api/chains: the chain id and its URL templates."""

    id: str
    tiles: str = Field(description="XYZ URL template, {z}/{x}/{y} left for the client")
    tilejson: str


class TileJSON(BaseModel):
    """A TileJSON 3.0 document of a chain's tiles."""

    tilejson: Literal["3.0.0"] = "3.0.0"
    name: str
    description: str = ""
    tiles: list[str]
    minzoom: int
    maxzoom: int
    bounds: list[float] = Field(description="west, south, east, north (WGS84)")
    center: tuple[float, float, int] = Field(description="lon, lat, zoom")
    scheme: Literal["xyz"] = "xyz"
    tilesize: int
    bands: list[str] = Field(description="Output band names (empty: unknown)")

    @classmethod
    def of(cls, name: str, info: ChainInfo, url: str, *, tilesize: int) -> TileJSON:
        """The document of a chain from its info and tile URL template."""
        west, south, east, north = info.bounds
        return cls(name=name, description=info.description, tiles=[url],
                   minzoom=info.minzoom, maxzoom=info.maxzoom, bounds=list(info.bounds),
                   center=((west + east) / 2, (south + north) / 2, info.minzoom),
                   tilesize=tilesize, bands=list(info.band_names or []))


#: Most vertices a statistics geometry may have (simplify bigger ones first): bounds the
#: work of one request whatever fits in the body limit.
MAX_VERTICES = 20_000


def _lon_lat(position: list[float]) -> list[float]:
    """Refuse positions outside WGS84 (GDAL would fail to reproject them: not a 500)."""
    lon, lat = position[0], position[1]
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise ValueError(f"[{lon}, {lat}] is not a WGS84 lon/lat: lon must be in -180..180, "
                         f"lat in -90..90")
    return position


def _vertex_cap(rings: list[list[Any]]) -> list[list[Any]]:
    count = sum(len(ring) for ring in rings)
    if count > MAX_VERTICES:
        raise ValueError(f"the geometry has {count} vertices, at most {MAX_VERTICES}: "
                         f"simplify it first")
    return rings


def _vertex_cap_multi(polygons: list[list[list[Any]]]) -> list[list[list[Any]]]:
    _vertex_cap([ring for polygon in polygons for ring in polygon])
    return polygons


Coordinate = Annotated[float, Field(allow_inf_nan=False)]
Position = Annotated[list[Coordinate], Field(min_length=2, max_length=3),
                     AfterValidator(_lon_lat)]
Ring = Annotated[list[Position], Field(min_length=4, max_length=MAX_VERTICES)]


class Polygon(BaseModel):
    """A GeoJSON Polygon (WGS84 lon/lat)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["Polygon"]
    coordinates: Annotated[list[Ring], Field(min_length=1), AfterValidator(_vertex_cap)]


class MultiPolygon(BaseModel):
    """A GeoJSON MultiPolygon (WGS84 lon/lat)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["MultiPolygon"]
    coordinates: Annotated[list[Annotated[list[Ring], Field(min_length=1)]], Field(min_length=1),
                           AfterValidator(_vertex_cap_multi)]


Geometry = Annotated[Polygon | MultiPolygon, Field(discriminator="type")]


class Point(BaseModel):
    """A GeoJSON Point (WGS84 lon/lat)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["Point"]
    coordinates: Position


#: A profile's place: an area (mean over its clear pixels) or a point (one pixel).
ProfileGeometry = Annotated[Polygon | MultiPolygon | Point, Field(discriminator="type")]


class Feature(BaseModel):
    """A GeoJSON Feature whose geometry is an area."""

    model_config = ConfigDict(extra="allow")
    type: Literal["Feature"]
    geometry: Geometry
    properties: dict[str, Any] | None = None


StatisticsBody = Annotated[Polygon | MultiPolygon | Feature, Field(discriminator="type")]


def geometry_of(body: Polygon | MultiPolygon | Point | Feature) -> dict:
    """The plain GeoJSON geometry dict of a request (a Feature's geometry)."""
    geom = body.geometry if isinstance(body, Feature) else body
    return {"type": geom.type, "coordinates": geom.coordinates}


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars/arrays to Python, NaN/inf to None (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar or array
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
