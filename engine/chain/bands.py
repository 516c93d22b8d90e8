"""Resolve a user's band name to an item's asset key (see the item conventions).

Order: an asset key equal to the name, else an asset whose ``eo:bands`` name equals it,
else one whose ``eo:bands`` common_name equals it (case-insensitive). So on Sentinel-2
"B08" and "nir" name the same asset.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pystac

from engine.errors import ChainError

#: Sentinel-2 band -> common name, used when an item or collection lacks eo:bands.
S2_COMMON_NAMES: dict[str, str] = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge",
    "B06": "rededge", "B07": "rededge", "B08": "nir", "B8A": "nir08", "B09": "nir09",
    "B10": "cirrus", "B11": "swir16", "B12": "swir22",
}

#: Cloud-mask asset keys (lower-case) used by ``mask(cloud=True)``.
CLOUD_ASSET_KEYS: tuple[str, ...] = ("scl", "fmask")


def _asset_bands(asset: pystac.Asset | Mapping[str, Any]) -> list[dict]:
    extra = asset.extra_fields if isinstance(asset, pystac.Asset) else asset
    bands = extra.get("eo:bands") or extra.get("bands") or []
    return [b for b in bands if isinstance(b, dict)]


def resolve_asset(item: pystac.Item, name: str) -> str:
    """The asset key of ``item`` holding band ``name``; ChainError listing the bands if none."""
    assets = item.assets
    if name in assets:
        return name
    low = name.lower()
    for key in assets:
        if key.lower() == low:
            return key
    for field in ("name", "common_name"):
        for key, asset in assets.items():
            for b in _asset_bands(asset):
                v = b.get(field)
                if isinstance(v, str) and v.lower() == low:
                    return key
    raise ChainError(f"unknown band {name!r} in item {item.id!r}", choices=item_band_names(item))


def item_band_names(item: pystac.Item) -> list[str]:
    """Every name a band of ``item`` can be called by (asset keys, eo:bands names)."""
    names: list[str] = []
    for key, asset in item.assets.items():
        roles = asset.roles or []
        if roles and "data" not in roles:
            continue
        if asset.media_type and "tiff" not in asset.media_type and "jp2" not in asset.media_type:
            continue
        names.append(key)
        for b in _asset_bands(asset):
            names.extend(str(b[f]) for f in ("name", "common_name") if b.get(f))
    return list(dict.fromkeys(names))


def common_band_names(items: Iterable[pystac.Item]) -> list[str]:
    """Band names every one of ``items`` has (case-insensitive; in the first item's order).
    Items whose bands are not described are skipped; empty when none is described."""
    names: list[str] | None = None
    for item in items:
        found = item_band_names(item)
        if not found:
            continue
        low = {b.lower() for b in found}
        names = found if names is None else [b for b in names if b.lower() in low]
    return names or []


def collection_band_names(collection: pystac.Collection) -> list[str]:
    """Band names (and common names) from the collection's ``eo:bands`` summary."""
    names: list[str] = []
    summaries = collection.summaries.to_dict() if collection.summaries else {}
    for b in summaries.get("eo:bands") or summaries.get("bands") or []:
        if isinstance(b, dict):
            names.extend(str(b[f]) for f in ("name", "common_name") if b.get(f))
    item_assets = collection.extra_fields.get("item_assets") or {}
    for key, asset in item_assets.items():
        names.append(key)
        for b in _asset_bands(asset):
            names.extend(str(b[f]) for f in ("name", "common_name") if b.get(f))
    return list(dict.fromkeys(names))


def check_bands(names: Iterable[str], known: Iterable[str], *, collection: str) -> None:
    """ChainError for the first of ``names`` not in ``known`` (case-insensitive)."""
    known = list(known)
    low = {k.lower() for k in known}
    for n in names:
        if n.lower() not in low:
            raise ChainError(f"unknown band {n!r} in collection {collection!r}", choices=known)


def cloud_asset(item: pystac.Item) -> str | None:
    """The asset key of the item's cloud-mask band (role cloud-mask, or SCL/fmask)."""
    for key, asset in item.assets.items():
        if "cloud-mask" in (asset.roles or []):
            return key
    for key in item.assets:
        if key.lower() in CLOUD_ASSET_KEYS:
            return key
    return None
