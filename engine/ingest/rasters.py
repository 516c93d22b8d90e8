"""GDAL-readable rasters: a single file, a multi-date stack, or a folder of per-band files."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac
import rasterio
from rasterio.windows import Window

from engine.errors import IngestError
from engine.ingest.cloud import cloud_cover_file
from engine.ingest.cog import is_cog
from engine.ingest.items import BandAsset, make_item
from engine.ingest.naming import (
    MASK_BANDS,
    S2_BAND_ORDER,
    SceneName,
    band_key,
    eo_band,
    parse_date,
    parse_scene,
    split_band,
)
from engine.ingest.sources import BuildContext, IngestSource, ItemPlan, safe_name

#: Sentinel-2 launched S2B on 2017-03-07: earlier Sentinel-2 scenes can only be S2A.
S2B_LAUNCH = datetime(2017, 3, 7, tzinfo=UTC)


def scene_for(name: str, path: Path) -> SceneName:
    """Scene metadata from a name, completed from the names of its nearest folders
    (e.g. ``S2A_MSIL1C_...SAFE/GRANULE/<granule>/IMG_DATA``), not the whole absolute path."""
    scene = parse_scene(name)
    folder = parse_scene("/".join(path.parent.parts[-4:]))
    if scene.constellation is None and folder.constellation is not None:
        scene.constellation = folder.constellation
        scene.landsat_family = folder.landsat_family
    for key, value in folder.properties.items():
        scene.properties.setdefault(key, value)
    if scene.datetime is None:
        scene.datetime = folder.datetime
    return scene


def item_properties(
    scene: SceneName, when: datetime, ctx: BuildContext, cloud: float | None
) -> dict[str, Any]:
    """Item properties: from the name, then the caller's overrides, then cloud cover."""
    props = dict(scene.properties)
    props.update(ctx.properties)
    if props.get("constellation") == "sentinel-2" and "platform" not in props and when < S2B_LAUNCH:
        props["platform"] = "sentinel-2a"
    if cloud is not None:
        props["eo:cloud_cover"] = cloud
    return props


def default_nodata(key: str, scene: SceneName) -> float | None:
    """Product-defined nodata for bands whose files do not declare it."""
    if key == "fmask":
        return 255
    if scene.constellation == "sentinel-2" and key in S2_BAND_ORDER:
        return 0
    return None


def roles_for(key: str) -> list[str]:
    """Asset roles: cloud masks are ``data``, ``cloud`` and ``cloud-mask`` (conventions)."""
    return ["data", "cloud", "cloud-mask"] if key in MASK_BANDS else ["data"]


def band_asset(
    ctx: BuildContext,
    item_id: str,
    key: str,
    info: RasterInfo,
    scene: SceneName,
    *,
    band: int = 1,
) -> BandAsset:
    """A band as a single-band COG: referenced in place if it is one, else converted."""
    nodata = default_nodata(key, scene)
    src_nodata = info.nodatavals[band - 1]
    in_place = (
        info.count == 1
        and info.tiled
        and (src_nodata is not None or nodata is None)
        and is_cog(info.path)
    )
    if in_place:
        href = info.path
    else:
        href = ctx.writer.from_file(
            info.path,
            ctx.cog_path(item_id, key),
            band=band,
            nodata=nodata,
            categorical=key in MASK_BANDS or key == "qa_pixel",
            src_count=info.count,
            src_nodata=src_nodata,
        )
    return BandAsset(
        key=key, href=href, eo_band=eo_band(key, constellation(scene, ctx)), roles=roles_for(key)
    )


def constellation(scene: SceneName, ctx: BuildContext) -> str | None:
    """The constellation given by the caller, else read from the names."""
    return ctx.properties.get("constellation") or scene.constellation


def mask_cloud(assets: list[BandAsset]) -> float | None:
    """Cloud cover from the item's mask band (SCL or Fmask), if it has one."""
    for asset in assets:
        if asset.key in MASK_BANDS:
            return cloud_cover_file(asset.href, MASK_BANDS[asset.key])
    return None


# -- a folder of per-band files -------------------------------------------------------


def plan_band_files(scene_key: str, members: list[tuple[Path, str]]) -> IngestSource:
    """One item from files that are the bands of one scene (``<scene>_<band>.<ext>``)."""
    folder = members[0][0].parent
    scene = scene_for(scene_key, members[0][0])
    when = scene.datetime
    if when is None:
        raise IngestError(f"{folder}: no acquisition date in the name {scene_key!r} or its folders")
    chosen: dict[str, tuple[float, Path]] = {}
    for path, raw in members:
        key = band_key(raw, scene)
        res_match = re.search(r"_(\d{2})m$", path.stem)
        res = float(res_match.group(1)) if res_match else 0.0
        if key not in chosen or res < chosen[key][0]:  # several resolutions: keep the finest
            chosen[key] = (res, path)
    if scene.constellation == "sentinel-2" and "processing:level" not in scene.properties:
        if "SCL" in chosen:
            scene.properties["processing:level"] = "L2A"
        elif "B10" in chosen:  # the cirrus band exists only in L1C products
            scene.properties["processing:level"] = "L1C"
    item_id = safe_name(scene_key)
    source = IngestSource(path=str(folder))

    def build(ctx: BuildContext) -> pystac.Item:
        assets = [
            band_asset(ctx, item_id, key, inspect(path), scene)
            for key, (_res, path) in chosen.items()
        ]
        props = item_properties(scene, when, ctx, mask_cloud(assets))
        return make_item(item_id, when, assets, properties=props, collection=ctx.collection)

    source.plans.append(ItemPlan(item_id, build))
    return source


# -- one file (optionally a stack of dates) ---------------------------------------------


def plan_raster(
    path: Path, *, dates: list[datetime] | None, band_names: Sequence[str] | None
) -> IngestSource:
    """One raster file: one item, or one item per date when ``dates`` are given."""
    info = inspect(path)
    count, descriptions = info.count, info.descriptions
    if dates:
        return _plan_stack(info, dates=dates, band_names=band_names)
    split = split_band(path.stem)
    scene = scene_for(split[0] if split and split[0] else path.stem, path)
    # Names from the caller, the file name or band descriptions follow the sensor's naming;
    # "b1".."bn" (band numbers of the file, not of the sensor) are kept as they are.
    if band_names:
        if len(band_names) != count:
            raise IngestError(f"{path}: {count} bands but {len(band_names)} band names were given")
        keys = [band_key(k, scene) for k in band_names]
    elif count == 1 and split:
        keys = [band_key(split[1], scene)]
    elif all(descriptions) and len(set(descriptions)) == count:
        keys = [band_key(k, scene) for k in descriptions]
    else:
        keys = [f"b{i}" for i in range(1, count + 1)]
    when = scene.datetime or info.tag_date
    if when is None:
        raise IngestError(
            f"{path}: no acquisition date in the file name or its metadata "
            "(put a date in the file name, or give it: --band-dates YYYY-MM-DD on the "
            "command line, band_dates=[...] in Python)"
        )
    item_id = safe_name(split[0] if count == 1 and split and split[0] else path.stem)
    source = IngestSource(path=str(path))

    def build(ctx: BuildContext) -> pystac.Item:
        assets = [
            band_asset(ctx, item_id, key, info, scene, band=i + 1) for i, key in enumerate(keys)
        ]
        props = item_properties(scene, when, ctx, mask_cloud(assets))
        return make_item(item_id, when, assets, properties=props, collection=ctx.collection)

    source.plans.append(ItemPlan(item_id, build))
    return source


def _plan_stack(
    info: RasterInfo, *, dates: list[datetime], band_names: Sequence[str] | None
) -> IngestSource:
    """Bands ordered date-major (date0: b0..bk, date1: ...) -> one item per date."""
    path, count = info.path, info.count
    if band_names:
        per_date = len(band_names)
        if per_date * len(dates) != count:
            raise IngestError(
                f"{path}: {count} bands, but {len(dates)} dates x {per_date} band names "
                f"= {len(dates) * per_date}"
            )
    else:
        if count % len(dates):
            raise IngestError(f"{path}: {count} bands cannot be split into {len(dates)} dates")
        per_date = count // len(dates)
    scene = scene_for(path.stem, path)
    if band_names:
        keys = [band_key(k, scene) for k in band_names]
    else:
        keys = [f"b{i}" for i in range(1, per_date + 1)]
    if len(set(keys)) != len(keys):
        raise IngestError(f"{path}: band names are not unique: {', '.join(keys)}")
    with_time = any(d.hour or d.minute or d.second for d in dates) or len(
        {d.date() for d in dates}
    ) < len(dates)
    source = IngestSource(path=str(path))
    for d_index, when in enumerate(dates):
        stamp = when.strftime("%Y%m%dT%H%M%S" if with_time else "%Y%m%d")
        item_id = safe_name(f"{path.stem}_{stamp}")

        def build(
            ctx: BuildContext, d_index: int = d_index, when: datetime = when, item_id: str = item_id
        ) -> pystac.Item:
            assets = [
                band_asset(ctx, item_id, key, info, scene, band=d_index * per_date + j + 1)
                for j, key in enumerate(keys)
            ]
            props = item_properties(scene, when, ctx, mask_cloud(assets))
            return make_item(item_id, when, assets, properties=props, collection=ctx.collection)

        source.plans.append(ItemPlan(item_id, build))
    return source


@dataclass(frozen=True)
class RasterInfo:
    """What one look at a raster file tells (read once, used to plan and to convert)."""

    path: Path
    count: int
    descriptions: list[str]
    nodatavals: tuple[float | None, ...]
    tiled: bool
    tag_date: datetime | None


def inspect(path: Path) -> RasterInfo:
    """Open a raster once; raise IngestError naming what is wrong (unreadable, corrupt, no CRS)."""
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as err:
        raise IngestError(f"{path}: not a raster GDAL can read ({err})") from err
    with src:
        try:  # a truncated or damaged file opens, but its first/last blocks do not read
            src.read(1, window=Window(0, 0, 1, 1))
            src.read(src.count, window=Window(src.width - 1, src.height - 1, 1, 1))
        except rasterio.errors.RasterioError as err:
            raise IngestError(f"{path}: corrupt or truncated raster ({err})") from err
        if src.crs is None and not src.gcps[0]:
            raise IngestError(f"{path}: the raster has no CRS (unknown projection)")
        tag = src.tags().get("TIFFTAG_DATETIME") or src.tags(ns="IMAGERY").get(
            "ACQUISITIONDATETIME"
        )
        layout = src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")
        return RasterInfo(
            path=path,
            count=src.count,
            descriptions=_band_descriptions(src),
            nodatavals=tuple(src.nodatavals),
            tiled=bool(src.profile.get("tiled")) or layout == "COG",
            tag_date=_tiff_date(tag) if tag else None,
        )


def _band_descriptions(src: rasterio.DatasetReader) -> list[str]:
    """Band names the file carries: GDAL band descriptions, else a per-band ``DESCRIPTION``
    metadata item (openEO and other writers put e.g. ``B04`` there, not in the description)."""
    out = []
    for index, desc in enumerate(src.descriptions, start=1):
        out.append((desc or src.tags(index).get("DESCRIPTION") or "").strip())
    return out


def _tiff_date(text: str) -> datetime | None:
    """TIFF's ``YYYY:MM:DD HH:MM:SS`` or an ISO date."""
    try:
        return datetime.strptime(text.strip(), "%Y:%m:%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:  # not TIFF's format: ISO or a date inside the text
        return parse_date(text)
