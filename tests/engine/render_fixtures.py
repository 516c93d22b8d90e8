"""Fixture helpers for chain/render tests: small COGs written to tmp_path, STAC items that
follow the item conventions (one single-band COG per band), and a real SQLiteCatalog."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import numpy as np
import pystac
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.transform import Affine, array_bounds
from rasterio.warp import reproject, transform_bounds

from engine.catalog import SQLiteCatalog

S2_COMMON = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir", "B11": "swir16"}


def write_cog(path: Path, array: np.ndarray, *, crs: CRS, transform: Affine,
              nodata: float | None = 0) -> None:
    """A tiled GeoTIFF with internal overviews (a small COG) holding one band."""
    profile = {
        "driver": "GTiff", "width": array.shape[1], "height": array.shape[0], "count": 1,
        "dtype": array.dtype, "crs": crs, "transform": transform, "nodata": nodata,
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)
        dst.build_overviews([2, 4], Resampling.nearest)


def pattern(shape: tuple[int, int], seed: int, *, lo: int = 100, hi: int = 4000) -> np.ndarray:
    """Deterministic uint16 texture (gradient + noise) with no zeros (0 is nodata)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    base = lo + (hi - lo) * ((xx + 2 * yy) % 97) / 97.0
    noise = rng.integers(0, 200, size=shape)
    return np.clip(base + noise, lo, hi).astype(np.uint16)


def make_item(folder: Path, item_id: str, *, epsg: int, transform: Affine,
              bands: Mapping[str, np.ndarray], date: datetime, cloud_cover: float = 0.0,
              nodata: float | None = 0, constellation: str = "sentinel-2") -> pystac.Item:
    """Write one COG per band and return the STAC item describing them."""
    folder.mkdir(parents=True, exist_ok=True)
    crs = CRS.from_epsg(epsg)
    shape = next(iter(bands.values())).shape
    ub = array_bounds(shape[0], shape[1], transform)  # (west, south, east, north)
    bbox = transform_bounds(crs, "EPSG:4326", *ub, densify_pts=21)
    geom = {"type": "Polygon", "coordinates": [[
        [bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]], [bbox[0], bbox[3]],
        [bbox[0], bbox[1]]]]}
    item = pystac.Item(item_id, geom, list(bbox), date, properties={
        "platform": "sentinel-2a" if constellation == "sentinel-2" else "landsat-8",
        "constellation": constellation, "eo:cloud_cover": cloud_cover,
        "proj:epsg": epsg, "proj:code": f"EPSG:{epsg}"})
    for name, arr in bands.items():
        path = folder / f"{item_id}_{name}.tif"
        cloud = name.upper() in ("SCL",) or name.lower() == "fmask"
        write_cog(path, arr, crs=crs, transform=transform, nodata=None if cloud else nodata)
        eo = {"name": name}
        if name in S2_COMMON:
            eo["common_name"] = S2_COMMON[name]
        roles = ["data", "cloud-mask"] if cloud else ["data"]
        item.add_asset(name, pystac.Asset(
            str(path), media_type=pystac.MediaType.COG, roles=roles,
            extra_fields={"eo:bands": [eo], "proj:shape": list(arr.shape),
                          "proj:transform": list(transform)[:6],
                          "raster:bands": [{"nodata": nodata}] if not cloud else [{}]}))
    return item


def make_catalog(path: Path, collections: Mapping[str, list[pystac.Item]]) -> SQLiteCatalog:
    """A real SQLiteCatalog with one collection per key holding its items."""
    cat = SQLiteCatalog(path)
    for collection, items in collections.items():
        bbox = [min(i.bbox[0] for i in items), min(i.bbox[1] for i in items),
                max(i.bbox[2] for i in items), max(i.bbox[3] for i in items)]
        dates = sorted(i.datetime for i in items)
        eo = [{"name": k, "common_name": v} for k, v in S2_COMMON.items()] + [{"name": "SCL"}]
        coll = pystac.Collection(
            collection, "test collection",
            pystac.Extent(pystac.SpatialExtent([bbox]),
                          pystac.TemporalExtent([[dates[0], dates[-1]]])),
            summaries=pystac.Summaries({"eo:bands": eo, "constellation": ["sentinel-2"]}))
        cat.add_collection(coll)
        cat.add_items(items, collection=collection)
    return cat


def expected_tile(path: str, bounds: tuple[float, float, float, float], *, size: int = 256,
                  resampling: Resampling = Resampling.nearest) -> np.ma.MaskedArray:
    """Independent reference: reproject a band file to a Web-Mercator tile grid."""
    with rasterio.open(path) as src:
        data = src.read(1)
        dst = np.zeros((size, size), dtype=np.float64)
        reproject(data, dst, src_transform=src.transform, src_crs=src.crs,
                  src_nodata=src.nodata if src.nodata is not None else None,
                  dst_transform=rasterio.transform.from_bounds(*bounds, size, size),
                  dst_crs="EPSG:3857", dst_nodata=np.nan, resampling=resampling)
    return np.ma.masked_invalid(dst)
