"""eo-learn EOPatch folders: ``bbox.geojson`` + ``timestamps.json`` + ``data/`` and ``mask/``
``.npy`` arrays shaped (time, rows, cols, depth). One item per timestamp, one COG per
feature (per channel when the depth is above 1).

Timeless features (``data_timeless``, ``mask_timeless``) have no date: they are left out with
a warning. ``scalar/CLOUD_COVERAGE.npy`` (0-1 per date), when present, gives
``eo:cloud_cover``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pystac
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.transform import from_bounds

from engine.errors import IngestError
from engine.ingest.items import BandAsset, make_item
from engine.ingest.sources import BuildContext, IngestSource, ItemPlan, safe_name

#: Per-date raster features of an EOPatch (folders of (time, rows, cols, depth) arrays).
TEMPORAL = ("data", "mask")
TIMELESS = ("data_timeless", "mask_timeless")


def is_eopatch(path: Path) -> bool:
    """A folder eo-learn saved: a bbox, timestamps and at least one per-date feature folder."""
    return (
        path.is_dir()
        and (path / "bbox.geojson").is_file()
        and (path / "timestamps.json").is_file()
        and any((path / kind).is_dir() for kind in TEMPORAL)
    )


def _load(path: Path) -> np.ndarray:
    """A ``.npy`` (memory-mapped) or ``.npy.gz`` array; never unpickles."""
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            return np.load(f, allow_pickle=False)
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _feature_name(path: Path) -> str:
    return path.name.removesuffix(".gz").removesuffix(".npy")


def _features(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.npy*") if p.name.endswith((".npy", ".npy.gz")))


def _bbox(folder: Path) -> tuple[CRS, tuple[float, float, float, float]]:
    """CRS and (minx, miny, maxx, maxy) of ``bbox.geojson`` (a polygon with a ``crs`` name)."""
    path = folder / "bbox.geojson"
    try:
        geo = json.loads(path.read_text())
        name = geo.get("crs", {}).get("properties", {}).get("name") or "EPSG:4326"
        crs = CRS.from_user_input(name)
        ring = np.asarray(geo["coordinates"][0], dtype="float64")
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, CRSError) as err:
        raise IngestError(f"{path}: not an EOPatch bbox polygon with a CRS ({err})") from err
    return crs, (ring[:, 0].min(), ring[:, 1].min(), ring[:, 0].max(), ring[:, 1].max())


def _timestamps(folder: Path) -> pd.DatetimeIndex:
    path = folder / "timestamps.json"
    try:
        times = pd.DatetimeIndex(pd.to_datetime(json.loads(path.read_text())))
    except (ValueError, TypeError) as err:
        raise IngestError(f"{path}: not a JSON list of ISO timestamps ({err})") from err
    return times.tz_localize("UTC") if times.tz is None else times.tz_convert("UTC")


def plan_eopatch(folder: Path) -> IngestSource:
    """Plan one item per timestamp of an EOPatch folder."""
    crs, (minx, miny, maxx, maxy) = _bbox(folder)
    times = _timestamps(folder)
    if len(times) == 0:
        raise IngestError(f"{folder}: the EOPatch has no timestamps")
    source = IngestSource(path=str(folder))
    arrays: dict[str, tuple[np.ndarray, int | None]] = {}  # key -> (array, channel)
    shape: tuple[int, int] | None = None
    for kind in TEMPORAL:
        for path in _features(folder / kind):
            name = _feature_name(path)
            try:
                array = _load(path)
            except (OSError, ValueError) as err:
                raise IngestError(f"{path}: not a numpy array file ({err})") from err
            if array.ndim != 4 or array.shape[0] != len(times) or array.dtype.kind not in "biuf":
                source.warnings.append(
                    f"{kind}/{path.name} ignored: not a numeric (time, rows, cols, depth) array "
                    f"with {len(times)} dates (shape {array.shape}, {array.dtype})"
                )
                continue
            if shape is None:
                shape = array.shape[1:3]
            elif array.shape[1:3] != shape:
                source.warnings.append(
                    f"{kind}/{path.name} ignored: {array.shape[1]}x{array.shape[2]} pixels, "
                    f"other features have {shape[0]}x{shape[1]}"
                )
                continue
            depth = array.shape[3]
            for channel in range(depth):
                key = name if depth == 1 else f"{name}_{channel + 1}"
                arrays[key] = (array, channel)
    if shape is None:
        raise IngestError(f"{folder}: the EOPatch has no per-date raster feature in data/ or mask/")
    timeless = [
        f"{kind}/{_feature_name(p)}" for kind in TIMELESS for p in _features(folder / kind)
    ]
    if timeless:
        source.warnings.append(f"timeless features ignored (no date): {', '.join(timeless)}")
    transform = from_bounds(minx, miny, maxx, maxy, shape[1], shape[0])
    cover = _cloud_coverage(folder, len(times), source)
    stamp_fmt = "%Y%m%dT%H%M%S" if (times.normalize() != times).any() else "%Y%m%d"
    for index, stamp in enumerate(times):
        when = stamp.to_pydatetime()
        item_id = safe_name(f"{folder.name}_{when.strftime(stamp_fmt)}")

        def build(
            ctx: BuildContext, index: int = index, when: Any = when, item_id: str = item_id
        ) -> pystac.Item:
            assets = []
            for key, (array, channel) in arrays.items():
                data = np.ascontiguousarray(array[index, :, :, channel])
                if data.dtype == bool:
                    data = data.astype("uint8")
                elif data.dtype == np.float64:
                    data = data.astype("float32")
                elif data.dtype == np.int64:
                    data = data.astype("int32")
                nodata = float("nan") if data.dtype.kind == "f" else None
                href = ctx.writer.from_array(
                    data, ctx.cog_path(item_id, key), crs=crs, transform=transform,
                    nodata=nodata, categorical=data.dtype.kind != "f",
                )
                assets.append(BandAsset(key=key, href=href))
            props = dict(ctx.properties)
            if cover is not None and np.isfinite(cover[index]):
                props.setdefault("eo:cloud_cover", round(float(cover[index]) * 100.0, 2))
            return make_item(item_id, when, assets, properties=props, collection=ctx.collection)

        source.plans.append(ItemPlan(item_id, build))
    return source


def _cloud_coverage(folder: Path, n_times: int, source: IngestSource) -> np.ndarray | None:
    """``scalar/CLOUD_COVERAGE.npy`` as one 0-1 value per date, if it is there and fits."""
    paths = [p for p in _features(folder / "scalar") if _feature_name(p) == "CLOUD_COVERAGE"]
    if not paths:
        return None
    try:
        cover = np.asarray(_load(paths[0]), dtype="float64").reshape(-1)
    except (OSError, ValueError) as err:
        source.warnings.append(f"scalar/CLOUD_COVERAGE ignored: {err}")
        return None
    if cover.size != n_times:
        source.warnings.append(
            f"scalar/CLOUD_COVERAGE ignored: {cover.size} values for {n_times} dates"
        )
        return None
    return cover
