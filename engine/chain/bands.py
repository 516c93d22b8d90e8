"""Resolve a user's band name to an item's asset key (see the item conventions).

Order: an asset key equal to the name (case-insensitive), else a single-band data asset
whose key or ``eo:bands`` name means the same band in the item's sensor family
(:mod:`engine.chain.aliases`: ``B04`` = ``red`` = ``B04_10m`` on Sentinel-2, ``SR_B4`` =
``red`` on Landsat 8/9), preferring COGs and the finest resolution, else one whose
``eo:bands`` common_name equals it. So on any Sentinel-2 catalog "B08" and "nir" name the
same asset.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pystac

from engine.chain.aliases import REFLECTANCE as _REFLECTANCE
from engine.chain.aliases import aliases, canonical, family, split_resolution, value_transform
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


def raster_band(asset: pystac.Asset) -> dict[str, Any]:
    """The first band's ``nodata``/``scale``/``offset``/... of an asset, from STAC 1.0's
    ``raster:bands`` or STAC 1.1's ``bands`` (``raster:scale``, ``raster:offset``,
    ``nodata``) and asset-level fields."""
    extra = asset.extra_fields
    rb = extra.get("raster:bands") or []
    if rb and isinstance(rb[0], dict):
        return dict(rb[0])
    first = next(iter(_asset_bands(asset)), {})
    out: dict[str, Any] = {}
    for field, names in (("scale", ("raster:scale",)), ("offset", ("raster:offset",)),
                         ("nodata", ("nodata",)), ("data_type", ("data_type",))):
        for source in (first, extra):
            value = next((source[n] for n in names if n in source), None)
            if value is not None:
                out[field] = value
                break
    return out


def item_family(item: pystac.Item) -> str | None:
    """The sensor family of ``item`` (see :func:`engine.chain.aliases.family`)."""
    return family(item.properties, item.collection_id or "")


def _labels(band: dict) -> list[str]:
    """A band's name and common name (STAC 1.0 ``common_name``, 1.1 ``eo:common_name``)."""
    found = (band.get("name"), band.get("common_name") or band.get("eo:common_name"))
    return [str(v) for v in found if v]


def resolve_asset(item: pystac.Item, name: str) -> str:
    """The asset key of ``item`` holding band ``name``; ChainError listing the bands if none."""
    assets = item.assets
    if name in assets:
        return name
    low = name.lower()
    for key in assets:
        if key.lower() == low:
            return key
    fam = item_family(item)
    want = canonical(name, fam)
    found = []
    for key, asset in assets.items():
        bands = _asset_bands(asset)
        roles = asset.roles or []
        if len(bands) > 1 or (roles and "data" not in roles):
            continue  # a true-colour composite is not "the red band"
        names = [key] + [str(b["name"]) for b in bands if b.get("name")]
        if any(n.lower() == low or canonical(n, fam) == want for n in names):
            found.append(key)
    if found:
        return min(found, key=lambda k: _preference(k, assets[k]))
    for key, asset in assets.items():
        for b in _asset_bands(asset):
            v = b.get("common_name") or b.get("eo:common_name")
            if isinstance(v, str) and v.lower() == low:
                return key
    raise ChainError(f"unknown band {name!r} in item {item.id!r}", choices=item_band_names(item))


def _preference(key: str, asset: pystac.Asset) -> tuple[bool, float]:
    """Sort key among assets holding the same band: COGs first, then the finest pixels."""
    res = split_resolution(key)[1]
    if res is None:
        res = raster_band(asset).get("spatial_resolution")
    if res is None:
        res = asset.extra_fields.get("gsd")
    media = asset.media_type or ""
    return ("jp2" in media or key.lower().endswith("-jp2"),
            float(res) if isinstance(res, int | float) else 0.0)


def band_transform(item: pystac.Item, key: str) -> tuple[float, float] | None:
    """``(mul, add)`` bringing the stored numbers of asset ``key`` to engine values, from
    its ``raster:bands`` scale/offset (None: use them as stored); see
    :func:`engine.chain.aliases.value_transform`."""
    asset = item.assets[key]
    names = [key] + [str(b["name"]) for b in _asset_bands(asset) if b.get("name")]
    fam = item_family(item)
    ids = {canonical(n, fam) for n in names}
    reflectance = next((i for i in ids if i in _REFLECTANCE), next(iter(ids)))
    applied = item.properties.get("earthsearch:boa_offset_applied") is True
    return value_transform(raster_band(asset), reflectance, offset_applied=applied)


def item_band_names(item: pystac.Item) -> list[str]:
    """Every name a band of ``item`` can be called by: asset keys, eo:bands names, then
    their aliases in the item's sensor family (``B04`` of a Sentinel-2 item is ``red``
    too, as :func:`resolve_asset` reads it, even when its catalog gives no common name)."""
    names: list[str] = []
    for key, asset in item.assets.items():
        roles = asset.roles or []
        if roles and "data" not in roles:
            continue
        if asset.media_type and "tiff" not in asset.media_type and "jp2" not in asset.media_type:
            continue
        names.append(key)
        for b in _asset_bands(asset):
            names.extend(_labels(b))
    if names:
        names += aliases(names, [item_family(item)])
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


def collection_families(collection: pystac.Collection) -> list[str | None]:
    """The sensor families of a collection's platforms (summaries), at least one entry."""
    summaries = collection.summaries.to_dict() if collection.summaries else {}
    platforms = summaries.get("platform") or [None]
    fams = {family({**summaries, "platform": p}, collection.id) for p in platforms}
    return sorted(fams, key=str)


def collection_band_names(collection: pystac.Collection) -> list[str]:
    """Band names (and common names) from the collection's ``eo:bands`` summary and item
    assets, plus every alias of them in the collection's sensor families."""
    names: list[str] = []
    summaries = collection.summaries.to_dict() if collection.summaries else {}
    for b in summaries.get("eo:bands") or summaries.get("bands") or []:
        if isinstance(b, dict):
            names.extend(_labels(b))
    item_assets = collection.extra_fields.get("item_assets") or {}
    for key, asset in item_assets.items():
        names.append(key)
        for b in _asset_bands(asset):
            names.extend(_labels(b))
    names += aliases(names, collection_families(collection))
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
