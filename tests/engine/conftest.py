"""Shared fixtures of the engine tests: a deterministic synthetic STAC item set and the
``loaded_catalog`` fixture that serves it through EVERY catalog backend in ``BACKENDS``.

To run the query suite (tests/engine/test_catalog_queries.py) against another backend, add
``BACKENDS["name"] = make_xxx_catalog`` below, where ``make_xxx_catalog(items, collections,
tmp_path) -> Catalog`` serves exactly these items: ``items`` maps a collection id to its
list of ``pystac.Item``, ``collections`` is a list of ``pystac.Collection``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pystac
import pytest
from stacapi_server import make_stacapi_catalog  # tests/engine is on sys.path (rootdir conftest)

from engine.catalog import Catalog, SQLiteCatalog


def make_sqlite_catalog(
    items: dict[str, list[pystac.Item]], collections: list[pystac.Collection], tmp_path: Path
) -> Catalog:
    """The embedded backend loaded with the synthetic items."""
    cat = SQLiteCatalog(tmp_path / "catalog.sqlite")
    for coll in collections:
        cat.add_collection(coll)
        cat.add_items(items[coll.id], collection=coll.id)
    return cat


#: Every backend the shared query suite runs on: name -> (items, collections, tmp_path) -> Catalog.
BACKENDS: dict[
    str, Callable[[dict[str, list[pystac.Item]], list[pystac.Collection], Path], Catalog]
] = {
    "sqlite": make_sqlite_catalog,
    "stacapi": make_stacapi_catalog,  # a real STAC API server (stac-fastapi-geoparquet)
}

# -- the synthetic item set -------------------------------------------------------------

S2_BANDS = [
    ("B01", "coastal"), ("B02", "blue"), ("B03", "green"), ("B04", "red"), ("B05", "rededge"),
    ("B06", "rededge"), ("B07", "rededge"), ("B08", "nir"), ("B8A", "nir08"), ("B09", "nir09"),
    ("B11", "swir16"), ("B12", "swir22"),
]
LANDSAT_BANDS = [("red", "red"), ("nir", "nir"), ("swir1", "swir16"), ("fmask", None)]

# Tile footprints (lon/lat rings). Some are axis-aligned boxes, some skewed quads whose
# bbox is larger than the footprint (as real UTM tiles are in lon/lat), one a triangle.
TILES: dict[str, list[tuple[float, float]]] = {
    "MGRS-32UPU": [(10.0, 48.0), (11.0, 48.0), (11.0, 49.0), (10.0, 49.0)],
    "MGRS-32UQU": [(11.0, 48.0), (12.0, 48.0), (12.0, 49.0), (11.0, 49.0)],
    "MGRS-33UUP": [(11.5, 47.6), (12.9, 47.8), (12.7, 48.8), (11.3, 48.6)],
    "MGRS-31TCJ": [(1.0, 43.0), (2.3, 43.1), (2.2, 44.0), (0.9, 43.9)],
    "MGRS-33TUG": [(12.0, 41.5), (13.5, 41.5), (13.0, 42.5)],
    "MGRS-30TWM": [(-3.0, 42.0), (-2.0, 42.0), (-2.0, 43.0), (-3.0, 43.0)],
}
WRS2: dict[str, list[tuple[float, float]]] = {
    "WRS2-193026": [(10.2, 47.5), (12.6, 47.1), (13.1, 48.9), (10.7, 49.3)],
    "WRS2-196030": [(0.5, 42.5), (3.0, 42.2), (3.4, 44.1), (0.9, 44.4)],
}
ORBITS = {"MGRS-32UPU": 65, "MGRS-32UQU": 65, "MGRS-33UUP": 22, "MGRS-31TCJ": 51,
          "MGRS-33TUG": 79, "MGRS-30TWM": 94, "WRS2-193026": 193, "WRS2-196030": 196}

START = datetime(2017, 1, 1, tzinfo=UTC)
SPAN_SECONDS = 4 * 365 * 86400


def _ring(points: list[tuple[float, float]], rng: random.Random) -> list[list[float]]:
    # A small per-item jitter keeps footprints varied; boxes stay boxes.
    dx, dy = rng.choice([0.0, 0.0, 0.01, -0.02]), rng.choice([0.0, 0.0, 0.015])
    ring = [[round(x + dx, 6), round(y + dy, 6)] for x, y in points]
    return [*ring, ring[0]]


def _bands(names: list[tuple[str, str | None]]) -> list[dict]:
    return [{"name": n, **({"common_name": c} if c else {})} for n, c in names]


def _item(rng: random.Random, collection: str, n: int, when: datetime) -> pystac.Item:
    landsat = collection.startswith("landsat")
    tiles = WRS2 if landsat else TILES
    grid = rng.choice(sorted(tiles))
    ring = _ring(tiles[grid], rng)
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    props: dict = {
        "platform": rng.choice(["landsat-8", "landsat-9"] if landsat else ["sentinel-2a", "sentinel-2b"]),
        "constellation": "landsat" if landsat else "sentinel-2",
        "processing:level": {"sentinel-2-l2a": "L2A", "sentinel-2-l1c": "L1C"}.get(collection, "L2SP"),
        "grid:code": grid,
        "sat:relative_orbit": ORBITS[grid],
        "sat:orbit_state": rng.choice(["ascending", "descending"]),
        "view:sun_elevation": round(rng.uniform(10, 65), 3),
        "proj:epsg": 32632,
        "proj:code": "EPSG:32632",
    }
    if rng.random() > 0.15:
        props["eo:cloud_cover"] = round(rng.uniform(0, 100), 2)
    if rng.random() < 0.5:
        props["created"] = (when + timedelta(days=rng.randint(1, 30))).strftime("%Y-%m-%dT%H:%M:%SZ")
    if not landsat:
        props["s2:nodata_pixel_percentage"] = round(rng.uniform(0, 60), 2)
    item = pystac.Item(
        id=f"{collection}-{n:04d}",
        geometry={"type": "Polygon", "coordinates": [ring]},
        bbox=[min(xs), min(ys), max(xs), max(ys)],
        datetime=when,
        properties=props,
        collection=None,
    )
    for name, common in LANDSAT_BANDS if landsat else S2_BANDS:
        roles = ["data", "cloud", "cloud-mask"] if name == "fmask" else ["data"]
        item.add_asset(
            name,
            pystac.Asset(
                href=f"/data/{collection}/{item.id}/{name}.tif",
                media_type=pystac.MediaType.COG,
                roles=roles,
                extra_fields={
                    "eo:bands": _bands([(name, common)]),
                    "file:size": rng.randint(1_000_000, 90_000_000),
                },
            ),
        )
    return item


COLLECTION_SIZES = {"sentinel-2-l2a": 150, "sentinel-2-l1c": 90, "landsat-c2-l2": 60}


def build_synthetic() -> tuple[dict[str, list[pystac.Item]], list[pystac.Collection]]:
    """The deterministic synthetic item set (300 items over 3 collections)."""
    rng = random.Random(20261123)
    seconds = rng.sample(range(SPAN_SECONDS), sum(COLLECTION_SIZES.values()))  # unique instants
    items: dict[str, list[pystac.Item]] = {}
    k = 0
    for name, size in COLLECTION_SIZES.items():
        items[name] = []
        for n in range(size):
            items[name].append(_item(rng, name, n, START + timedelta(seconds=seconds[k])))
            k += 1
    collections = []
    for name, found in items.items():
        bands = LANDSAT_BANDS if name.startswith("landsat") else S2_BANDS
        collections.append(
            pystac.Collection(
                id=name,
                description=f"synthetic {name}",
                extent=pystac.Extent(
                    pystac.SpatialExtent([[-3.1, 41.4, 13.5, 49.5]]),
                    pystac.TemporalExtent([[min(i.datetime for i in found), max(i.datetime for i in found)]]),
                ),
                license="CC-BY-4.0",
                summaries=pystac.Summaries({"eo:bands": _bands(bands)}),
            )
        )
    return items, collections


@pytest.fixture(scope="session")
def synthetic() -> tuple[dict[str, list[pystac.Item]], list[pystac.Collection]]:
    """(items by collection id, collections) — treat as read-only."""
    return build_synthetic()


@pytest.fixture(scope="session")
def synthetic_items(synthetic) -> dict[str, list[pystac.Item]]:
    return synthetic[0]


@pytest.fixture(scope="session", params=sorted(BACKENDS))
def loaded_catalog(request, synthetic, tmp_path_factory) -> Catalog:
    """The synthetic items served by each backend in BACKENDS in turn."""
    items, collections = synthetic
    cat = BACKENDS[request.param](items, collections, tmp_path_factory.mktemp(request.param))
    yield cat
    cat.close()
