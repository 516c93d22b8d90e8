"""STAC items and collections built from local COGs, following the item conventions.

rio-stac reads footprint, projection and raster statistics from the files; this module adds
what the conventions ask on top: one asset per band with ``eo:bands``, ``file:size``,
``proj:shape``/``proj:transform``, roles, and ``proj:code``/``eo:cloud_cover`` properties.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac
import rasterio
from rasterio.enums import MaskFlags
from rio_stac import create_stac_item
from rio_stac.stac import get_raster_info

from engine.errors import IngestError
from engine.ingest.naming import band_sort_key

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
EXTENSIONS = (
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/file/v2.1.0/schema.json",
)
#: Largest side read to compute per-band statistics (keeps ingest fast on big scenes).
STATS_MAX_SIZE = 256


@dataclass
class BandAsset:
    """One single-band COG of an item, with its key and STAC fields."""

    key: str
    href: Path
    eo_band: dict[str, str] | None = None
    roles: list[str] = field(default_factory=lambda: ["data"])
    title: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # fields kept from a source item


def asset_fields(path: Path, *, item_epsg: int | None = None) -> dict[str, Any]:
    """Per-asset fields read from the file: shape, transform, raster:bands, file:size."""
    with rasterio.open(path) as src:
        fields: dict[str, Any] = {
            "proj:shape": [src.height, src.width],
            "proj:transform": list(src.transform)[:6],
            "raster:bands": _json_safe(get_raster_info(src, max_size=STATS_MAX_SIZE)),
            "file:size": path.stat().st_size,
        }
        epsg = src.crs.to_epsg() if src.crs else None
        all_valid = src.nodata is None and all(
            MaskFlags.all_valid in flags for flags in src.mask_flag_enums
        )
        for band in fields["raster:bands"]:
            band["spatial_resolution"] = abs(src.transform.a)
            if all_valid and "statistics" in band:
                # rio-stac counts one valid pixel when the file has no mask (numpy's scalar
                # ``nomask``): every pixel is valid then.
                band["statistics"]["valid_percent"] = 100.0
    if epsg is not None and epsg != item_epsg:
        fields["proj:code"] = f"EPSG:{epsg}"
    return fields


def make_item(
    item_id: str,
    when: datetime,
    assets: list[BandAsset],
    *,
    properties: Mapping[str, Any],
    collection: str,
) -> pystac.Item:
    """Build one item over ``assets``; geometry and proj:* come from the finest band."""
    if not assets:
        raise IngestError(f"item {item_id} has no band")
    fields = {band.key: asset_fields(band.href) for band in assets}
    reference = min(
        assets,
        key=lambda a: (
            fields[a.key]["raster:bands"][0]["spatial_resolution"],
            band_sort_key(a.key),
        ),
    )
    with rasterio.open(reference.href) as ref:
        if ref.crs is None:
            raise IngestError(f"{reference.href}: the raster has no CRS (unknown projection)")
        epsg = ref.crs.to_epsg()
        item = create_stac_item(
            ref,
            input_datetime=when.astimezone(UTC),
            id=item_id,
            collection=collection,
            properties=dict(properties),
            with_proj=True,
            geom_densify_pts=21,
            geom_precision=6,
            asset_name="__reference__",
        )
    item.assets.pop("__reference__", None)  # rio-stac's own asset: ours are added below
    item.stac_extensions = sorted(set(item.stac_extensions) | set(EXTENSIONS))
    if epsg is not None:
        item.properties["proj:epsg"] = epsg
        item.properties["proj:code"] = f"EPSG:{epsg}"
    item.properties["proj:transform"] = item.properties["proj:transform"][:6]
    for band in sorted(assets, key=lambda a: band_sort_key(a.key)):
        extra = dict(band.extra)
        extra.update(fields[band.key])
        if extra.get("proj:code") == f"EPSG:{epsg}":
            del extra["proj:code"]  # same as the item's
        if band.eo_band is not None:
            extra["eo:bands"] = [band.eo_band]
        item.add_asset(
            band.key,
            pystac.Asset(
                href=str(band.href.resolve()),
                media_type=COG_MEDIA_TYPE,
                roles=list(band.roles),
                title=band.title,
                extra_fields=extra,
            ),
        )
    item.properties["created"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return item


def build_collection(
    name: str,
    items: Iterable[pystac.Item],
    *,
    base: pystac.Collection | None = None,
) -> pystac.Collection:
    """A collection whose extent and summaries cover ``base`` (if any) and ``items``."""
    items = list(items)
    bboxes = [list(i.bbox) for i in items if i.bbox]
    times = [i.datetime for i in items if i.datetime]
    bands: dict[str, dict[str, str]] = {}
    values: dict[str, set[Any]] = {
        "platform": set(),
        "constellation": set(),
        "processing:level": set(),
        "proj:code": set(),
    }
    if base is not None:
        bboxes += [list(b) for b in base.extent.spatial.bboxes if b]
        for start, end in base.extent.temporal.intervals:
            times += [t for t in (start, end) if t is not None]
        for band in base.summaries.get_list("eo:bands") or []:
            bands.setdefault(band["name"], band)
        for prop, seen in values.items():
            seen.update(base.summaries.get_list(prop) or [])
    for item in items:
        for key, asset in item.assets.items():
            for band in asset.extra_fields.get("eo:bands", []) or [{"name": key}]:
                if "data" in (asset.roles or []):
                    bands.setdefault(band["name"], dict(band))
        for prop, seen in values.items():
            value = item.properties.get(prop)
            if value is not None:
                seen.add(value)
    if not bboxes or not times:
        raise IngestError(f"collection {name} has no item to compute its extent from")
    bbox = [
        min(b[0] for b in bboxes),
        min(b[1] for b in bboxes),
        max(b[2] for b in bboxes),
        max(b[3] for b in bboxes),
    ]
    extent = pystac.Extent(
        pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[min(times), max(times)]])
    )
    if base is not None:
        collection = base.clone()
        collection.extent = extent
    else:
        collection = pystac.Collection(
            id=name, description=f"Items ingested into {name}", extent=extent, license="other"
        )
    collection.summaries.add(
        "eo:bands", sorted(bands.values(), key=lambda b: band_sort_key(b["name"]))
    )
    for prop, found in values.items():
        if found:
            collection.summaries.add(prop, sorted(found))
    return collection


def _json_safe(value: Any) -> Any:
    """Numpy scalars and NaN statistics made JSON-safe (NaN/inf become None)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
