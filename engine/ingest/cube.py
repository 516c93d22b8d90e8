"""netCDF and Zarr cubes with a time dimension: one item per time step, one COG per variable."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pystac
import rasterio
import xarray as xr
from pyproj import CRS as ProjCRS
from rasterio.crs import CRS
from rasterio.transform import Affine

from engine.errors import IngestError
from engine.ingest.cloud import cloud_cover_array
from engine.ingest.items import BandAsset, make_item
from engine.ingest.naming import MASK_BANDS, band_key, eo_band, parse_scene, set_mgrs_tile
from engine.ingest.rasters import constellation, item_properties, roles_for
from engine.ingest.sources import BuildContext, IngestSource, ItemPlan, safe_name

_X_NAMES = ("x", "lon", "longitude", "easting")
_Y_NAMES = ("y", "lat", "latitude", "northing")
_TIME_NAMES = ("time", "t", "timestamp", "date")


def open_cube(path: Path) -> xr.Dataset:
    """Open lazily with raw values (fill values kept, not turned into NaN)."""
    if path.is_dir() or path.suffix.lower() == ".zarr":
        return xr.open_zarr(path, mask_and_scale=False, consolidated=_consolidated(path))
    return xr.open_dataset(path, mask_and_scale=False)


def _consolidated(store: Path) -> bool:
    """Whether a Zarr store has consolidated metadata (v2 ``.zmetadata`` or in v3 zarr.json)."""
    if (store / ".zmetadata").exists():
        return True
    root = store / "zarr.json"
    if root.exists():
        try:
            return bool(json.loads(root.read_text()).get("consolidated_metadata"))
        except ValueError as err:
            raise IngestError(f"{store}: zarr.json is not valid JSON ({err})") from err
    return False


#: A resolution token in a file name (``S2_L2A_10m_...`` / ``S2_L2A_20m_...``).
_RESOLUTION = re.compile(r"_\d{1,4}m(?=_|$)")


def group_key(path: Path) -> str:
    """Cubes whose names differ only by a resolution token are one product split by
    resolution (e.g. WorldCereal's 10 m and 20 m Sentinel-2 netCDFs): same key."""
    return str(path.parent / _RESOLUTION.sub("", path.stem, count=1))


def group_cubes(paths: list[Path]) -> list[list[Path]]:
    """``paths`` grouped by :func:`group_key`, in first-seen order."""
    groups: dict[str, list[Path]] = {}
    for path in paths:
        groups.setdefault(group_key(path), []).append(path)
    return list(groups.values())


@dataclass
class _Part:
    """One opened cube of a group, with its grid and the variables it gives."""

    path: Path
    ds: xr.Dataset
    time_dim: str
    x_dim: str
    y_dim: str
    variables: list[str]
    keys: dict[str, str]
    crs: CRS
    transform: Affine
    flip_y: bool
    index: dict[pd.Timestamp, int]
    scene: Any


def plan_cube(path: Path) -> IngestSource:
    """Plan one item per time step of every (time, y, x) variable of the cube."""
    return plan_cubes([path])


def plan_cubes(paths: list[Path]) -> IngestSource:
    """Plan one item per time step over one or several cubes of the same product (split by
    resolution): each item gets the variables of every cube that has that time step."""
    parts: list[_Part] = []
    label = str(paths[0]) if len(paths) == 1 else (
        f"{paths[0].parent}/{{{','.join(p.name for p in paths)}}}")
    source = IngestSource(path=label)
    closers: list[Any] = []

    def close() -> None:
        for closer in closers:
            closer()

    source.close = close
    try:
        for path in paths:
            try:
                ds = open_cube(path)
            except (OSError, ValueError) as err:
                raise IngestError(
                    f"{path}: not a netCDF/Zarr cube xarray can open ({err})"
                ) from err
            closers.append(ds.close)
            parts.append(_part(path, ds, source, named=len(paths) > 1))
        _plan(paths, parts, source)
    except BaseException:
        source.close()
        raise
    return source


def _part(path: Path, ds: xr.Dataset, source: IngestSource, *, named: bool) -> _Part:
    time_dim = _time_dim(ds)
    if time_dim is None:
        raise IngestError(
            f"{path}: no time dimension (looked for a datetime coordinate or one named "
            f"{', '.join(_TIME_NAMES)})"
        )
    x_dim, y_dim = _dim(ds, _X_NAMES), _dim(ds, _Y_NAMES)
    if x_dim is None or y_dim is None:
        raise IngestError(f"{path}: no x/y dimensions (looked for {_X_NAMES} and {_Y_NAMES})")
    variables = [
        name
        for name, var in ds.data_vars.items()
        if set(var.dims) == {time_dim, y_dim, x_dim} and var.dtype.kind in "iuf"
    ]
    if not variables:
        raise IngestError(f"{path}: no numeric variable with dims ({time_dim}, {y_dim}, {x_dim})")
    ignored = sorted(set(ds.data_vars) - set(variables))
    if ignored:
        source.warnings.append(
            (f"{path.name}: " if named else "")
            + f"variables not on the ({time_dim}, y, x) grid ignored: "
            f"{', '.join(ignored)}"
        )
    crs = cube_crs(ds, variables, x_dim, y_dim, path)
    transform, flip_y = _grid(ds, x_dim, y_dim, path)
    scene = parse_scene(path.stem)
    times = pd.DatetimeIndex(ds[time_dim].values)
    if times.hasnans:
        raise IngestError(f"{path}: the time coordinate has missing values")
    times = times.tz_localize("UTC") if times.tz is None else times.tz_convert("UTC")
    return _Part(
        path=path, ds=ds, time_dim=time_dim, x_dim=x_dim, y_dim=y_dim, variables=variables,
        keys={v: band_key(v, scene) for v in variables}, crs=crs, transform=transform,
        flip_y=flip_y, index={t: i for i, t in enumerate(times)}, scene=scene,
    )


def _plan(paths: list[Path], parts: list[_Part], source: IngestSource) -> None:
    # a band two cubes both give is taken from the first (finest resolution first)
    parts.sort(key=lambda part: abs(part.transform.a))
    seen: dict[str, Path] = {}
    for part in parts:
        for var, key in list(part.keys.items()):
            if key in seen:
                source.warnings.append(
                    f"{part.path.name}: band {key} ignored, {seen[key].name} gives it too"
                )
                part.variables.remove(var)
                del part.keys[var]
            else:
                seen[key] = part.path
    stem = paths[0].stem if len(paths) == 1 else _RESOLUTION.sub("", paths[0].stem, count=1)
    scene = parse_scene(stem)
    tile = parts[0].ds.attrs.get("tile")
    if scene.constellation == "sentinel-2" and isinstance(tile, str):
        set_mgrs_tile(scene, tile.strip().upper())
    times = pd.DatetimeIndex(sorted({t for part in parts for t in part.index}))
    stamp_fmt = "%Y%m%dT%H%M%S" if (times.normalize() != times).any() else "%Y%m%d"
    for stamp in times:
        when = stamp.to_pydatetime()
        item_id = safe_name(f"{stem}_{when.strftime(stamp_fmt)}")
        members = [(part, part.index[stamp]) for part in parts if stamp in part.index]

        def build(
            ctx: BuildContext, members: list = members, when: Any = when, item_id: str = item_id
        ) -> pystac.Item:
            assets, cloud = [], None
            for part, index in members:
                for var in part.variables:
                    data = part.ds[var].isel({part.time_dim: index}).transpose(
                        part.y_dim, part.x_dim).values
                    if part.flip_y:
                        data = data[::-1]
                    data, nodata = _storable(data, _fill_value(part.ds[var]))
                    key = part.keys[var]
                    href = ctx.writer.from_array(
                        np.ascontiguousarray(data),
                        ctx.cog_path(item_id, key),
                        crs=part.crs,
                        transform=part.transform,
                        nodata=nodata,
                        categorical=key in MASK_BANDS,
                        scale=part.ds[var].attrs.get("scale_factor"),
                        offset=part.ds[var].attrs.get("add_offset"),
                    )
                    if key in MASK_BANDS:
                        cloud = cloud_cover_array(data, MASK_BANDS[key])
                    assets.append(
                        BandAsset(
                            key=key,
                            href=href,
                            eo_band=eo_band(key, constellation(scene, ctx)),
                            roles=roles_for(key),
                        )
                    )
            props = item_properties(scene, when, ctx, cloud)
            return make_item(item_id, when, assets, properties=props, collection=ctx.collection)

        source.plans.append(ItemPlan(item_id, build))


def cube_crs(ds: xr.Dataset, variables: list[str], x_dim: str, y_dim: str, path: Path) -> CRS:
    """The cube's CRS from CF grid_mapping, a spatial_ref/crs variable or global attrs."""
    candidates: list[str] = []
    for var in variables:
        gm = ds[var].attrs.get("grid_mapping") or ds[var].encoding.get("grid_mapping")
        if gm:
            candidates.append(str(gm).split(":")[0].split()[0])
    if ds.attrs.get("grid_mapping"):
        candidates.append(str(ds.attrs["grid_mapping"]))
    candidates += ["spatial_ref", "crs"]
    for name in candidates:
        if name in ds.variables:
            crs = _crs_from_attrs(ds[name].attrs)
            if crs is not None:
                return crs
    for key in ("crs_wkt", "spatial_ref", "crs", "epsg", "epsg_code", "proj4"):
        value = ds.attrs.get(key)
        if value is not None and not isinstance(value, dict):
            try:
                return CRS.from_user_input(_epsg_text(value))
            except rasterio.errors.CRSError as err:
                raise IngestError(f"{path}: global attribute {key}={value!r} is not a CRS") from err
    if x_dim in ("lon", "longitude") and y_dim in ("lat", "latitude"):
        return CRS.from_epsg(4326)  # CF: lat/lon axes are geographic WGS84 coordinates
    raise IngestError(
        f"{path}: unknown CRS: no grid_mapping variable with crs_wkt/spatial_ref/epsg attributes, "
        "no 'spatial_ref' or 'crs' variable, no crs/epsg global attribute and no lat/lon axes"
    )


def _crs_from_attrs(attrs: dict[str, Any]) -> CRS | None:
    for key in ("crs_wkt", "spatial_ref", "epsg_code", "epsg"):
        if attrs.get(key) is not None:
            return CRS.from_user_input(_epsg_text(attrs[key]))
    if attrs.get("grid_mapping_name"):
        return CRS.from_wkt(ProjCRS.from_cf(attrs).to_wkt())
    return None


def _epsg_text(value: Any) -> Any:
    if isinstance(value, int | np.integer) or (isinstance(value, str) and value.isdigit()):
        return f"EPSG:{int(value)}"
    return value


def _time_dim(ds: xr.Dataset) -> str | None:
    for dim in ds.dims:
        if dim in ds.coords and np.issubdtype(ds[dim].dtype, np.datetime64):
            return str(dim)
    for dim in ds.dims:
        if str(dim).lower() in _TIME_NAMES:
            return str(dim)
    return None


def _dim(ds: xr.Dataset, names: tuple[str, ...]) -> str | None:
    for dim in ds.dims:
        if str(dim).lower() in names:
            return str(dim)
    return None


def _grid(ds: xr.Dataset, x_dim: str, y_dim: str, path: Path) -> tuple[Affine, bool]:
    """Affine transform of pixel corners from regular x/y centre coordinates."""
    if x_dim not in ds.coords or y_dim not in ds.coords:
        raise IngestError(f"{path}: no coordinate values for {x_dim}/{y_dim}")
    x = np.asarray(ds[x_dim].values, dtype="float64")
    y = np.asarray(ds[y_dim].values, dtype="float64")
    if len(x) < 2 or len(y) < 2:
        raise IngestError(f"{path}: the grid needs at least 2 x 2 pixels")
    dx, dy = np.diff(x), np.diff(y)
    if not (np.allclose(dx, dx[0], rtol=1e-4) and np.allclose(dy, dy[0], rtol=1e-4)):
        raise IngestError(f"{path}: x/y coordinates are not evenly spaced")
    res_x, res_y = float(dx.mean()), float(dy.mean())
    flip = res_y > 0  # south-up storage: write rows north first
    top = y.max() + abs(res_y) / 2
    return Affine(res_x, 0, x[0] - res_x / 2, 0, -abs(res_y), top), flip


def _fill_value(var: xr.DataArray) -> float | None:
    for key in ("_FillValue", "missing_value", "nodata"):
        value = var.attrs.get(key, var.encoding.get(key))
        if value is not None:
            return float(np.asarray(value).ravel()[0])
    return None


def _storable(data: np.ndarray, nodata: float | None) -> tuple[np.ndarray, float | None]:
    """float64 -> float32 and int64 -> int32 (when the values fit) for smaller COGs."""
    if data.dtype == np.float64:
        return data.astype("float32"), nodata
    if data.dtype.kind in "iu" and data.dtype.itemsize == 8:
        info = np.iinfo("int32")
        low, high = (data.min(), data.max()) if data.size else (0, 0)
        if info.min <= low and high <= info.max:
            return data.astype("int32"), nodata
        return data.astype("float64"), nodata
    return data, nodata
