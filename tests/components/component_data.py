"""Data of the component tests: small Sentinel-2- and Landsat-like COGs near Berlin."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from engine.ingest.items import BandAsset, make_item

CRS_UTM = CRS.from_epsg(32633)
ORIGIN = (385_000.0, 5_825_000.0)  # UTM 33N: central Berlin
RES = 20.0
SIZE = 256
S2_BANDS = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir", "B11": "swir16",
            "B12": "swir22"}
LANDSAT_BANDS = {"red": "red", "nir": "nir", "swir1": "swir16"}
S2 = "s2-test"
LANDSAT = "landsat-test"
OLD, NEW = "S2A_33UUU_20200601", "S2B_33UUU_20200701"
LS_ITEM = "LT05_193023_20100501"


def band_array(name: str, offset: int = 0) -> np.ndarray:
    """Deterministic pixels of one band (uint16, 0 = nodata in the north-west corner)."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    base = {"B02": 400 + 2 * rows, "B03": 600 + 3 * cols, "B04": 300 + 4 * rows + 2 * cols,
            "B08": 2500 + 5 * cols, "B11": 1500 + 4 * rows, "B12": 900 + 2 * cols,
            "red": 500 + 3 * rows, "nir": 2000 + 4 * cols, "swir1": 1200 + rows}[name]
    arr = (base + offset).astype(np.uint16)
    arr[:32, :32] = 0
    return arr


def _cog(path: Path, array: np.ndarray) -> Path:
    profile = {"driver": "COG", "dtype": "uint16", "count": 1, "width": SIZE, "height": SIZE,
               "crs": CRS_UTM, "transform": from_origin(*ORIGIN, RES, RES), "nodata": 0,
               "compress": "DEFLATE", "blocksize": 256, "overviews": "AUTO"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)
    return path


def _item(folder: Path, item_id: str, bands: dict, when: datetime, cloud: float, offset: int,
          collection: str):
    folder.mkdir(parents=True, exist_ok=True)
    assets = [BandAsset(key=k, href=_cog(folder / f"{item_id}_{k}.tif", band_array(k, offset)),
                        eo_band={"name": k, "common_name": c}) for k, c in bands.items()]
    props = {"platform": "sentinel-2a" if item_id.startswith("S2A") else "sentinel-2b",
             "constellation": "sentinel-2", "eo:cloud_cover": cloud, "processing:level": "L2A",
             "grid:code": "MGRS-33UUU", "sat:relative_orbit": 22}
    return make_item(item_id, when, assets, properties=props, collection=collection)


