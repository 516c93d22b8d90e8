"""Data of the service tests: small Sentinel-2-like COGs in a real SQLiteCatalog, and
helpers to build the real ASGI app over them.

Scene: 512x512 px at 10 m in EPSG:32633 near (15.0 E, 50.1 N). Bands are smooth gradients
in different directions (so a band swap or a shifted window shows), uint16, nodata 0, with
a 64x64 nodata block in the north-west corner. Two items share the footprint: one from
2020-06-01 (cloud 10 %) and one from 2020-07-01 (cloud 60 %, values + 500).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from engine.catalog import SQLiteCatalog
from engine.chain.store import ChainStore
from engine.ingest.items import BandAsset, build_collection, make_item
from service import create_service

CRS_UTM = CRS.from_epsg(32633)
ORIGIN = (500_000.0, 5_550_000.0)
RES = 10.0
SIZE = 512
BANDS = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}
COLLECTION = "s2-test"
ITEM_JUNE = "S2A_33UVR_20200601"
ITEM_JULY = "S2B_33UVR_20200701"
TRANSFORM = from_origin(ORIGIN[0], ORIGIN[1], RES, RES)


def band_array(name: str, offset: int = 0) -> np.ndarray:
    """The deterministic pixels of one band (uint16, 0 = nodata)."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    arr = {
        "B02": 400 + 2 * rows + 2 * cols,
        "B03": 300 + 5 * rows,
        "B04": 200 + 5 * cols,
        "B08": 2000 + 3 * cols - 2 * rows,
    }[name] + offset
    arr = arr.astype(np.uint16)
    arr[:64, :64] = 0
    return arr


def write_cog(path: Path, array: np.ndarray) -> Path:
    """One single-band DEFLATE COG with overviews, nodata 0."""
    profile = {
        "driver": "COG", "dtype": "uint16", "count": 1, "width": SIZE, "height": SIZE,
        "crs": CRS_UTM, "transform": TRANSFORM, "nodata": 0, "compress": "DEFLATE",
        "blocksize": 256, "overviews": "AUTO",
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)
    return path


def write_item(folder: Path, item_id: str, when: datetime, cloud: float, offset: int):
    """Write the band COGs of one item and build its STAC item (item conventions)."""
    folder.mkdir(parents=True, exist_ok=True)
    assets = []
    for name, common in BANDS.items():
        path = write_cog(folder / f"{item_id}_{name}.tif", band_array(name, offset))
        assets.append(BandAsset(key=name, href=path, eo_band={"name": name, "common_name": common}))
    props = {
        "platform": "sentinel-2a" if item_id.startswith("S2A") else "sentinel-2b",
        "constellation": "sentinel-2", "eo:cloud_cover": cloud, "processing:level": "L2A",
        "grid:code": "MGRS-33UVR",
    }  # fmt: skip
    return make_item(item_id, when, assets, properties=props, collection=COLLECTION)


@dataclass
class Scene:
    """What the tests need to know about the fixture data."""

    db: Path
    folder: Path


def build_catalog(root: Path, *, items: tuple[str, ...] = (ITEM_JUNE, ITEM_JULY)) -> Scene:
    """A SQLite catalog file under ``root`` with the two items (or a subset)."""
    folder = root / "cogs"
    specs = {
        ITEM_JUNE: (datetime(2020, 6, 1, 10, 0, tzinfo=UTC), 10.0, 0),
        ITEM_JULY: (datetime(2020, 7, 1, 10, 0, tzinfo=UTC), 60.0, 500),
    }
    stac_items = [write_item(folder, i, *specs[i]) for i in items]
    db = root / "catalog.sqlite"
    with SQLiteCatalog(db) as catalog:
        catalog.add_collection(build_collection(COLLECTION, stac_items))
        catalog.add_items(stac_items, collection=COLLECTION)
    return Scene(db=db, folder=folder)


def make_app(db: Path, **options):
    """A fresh service over the catalog file ``db`` (as after a restart)."""
    catalog = SQLiteCatalog(db)
    return create_service(catalog, chain_store=ChainStore(db), **options)


def true_colour(*, ids=(ITEM_JUNE,), vmax: float = 3000) -> dict:
    """The chain JSON of a B04/B03/B02 true-colour image of one item."""
    return {
        "source": {"collection": COLLECTION, "ids": list(ids)},
        "steps": [{"name": "bands", "bands": ["B04", "B03", "B02"]},
                  {"name": "scale", "min": [0], "max": [vmax]}],
    }
