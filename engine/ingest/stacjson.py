"""Existing STAC item JSON files whose asset files sit next to them.

Hrefs are rewritten to the local files (looked up by basename beside the JSON); asset keys
are kept. Assets without a local file are dropped with a warning; per-asset projection and
raster fields are refreshed from the local files, which may be resampled copies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pystac
import rasterio

from engine.errors import IngestError
from engine.ingest.cloud import cloud_cover_file
from engine.ingest.cog import is_cog
from engine.ingest.items import COG_MEDIA_TYPE, asset_fields
from engine.ingest.naming import parse_scene
from engine.ingest.sources import BuildContext, IngestSource, ItemPlan, safe_name

_RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".j2k")
_MAX_JSON_BYTES = 20_000_000
_LEVELS = {"S2MSI1C": "L1C", "S2MSI2A": "L2A"}
#: asset key (or eo:bands name), lower-case -> mask kind for cloud.py
_MASK_KEYS = {"scl": "scl", "fmask": "fmask"}


def looks_like_item(path: Path) -> bool:
    """True if the JSON file is a STAC item (a Feature with assets)."""
    try:
        data = _load(path)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("type") == "Feature" and "assets" in data


def local_files(path: Path) -> set[Path]:
    """The files beside the JSON that its assets name."""
    try:
        data = _load(path)
    except (OSError, ValueError):
        return set()
    found = set()
    for asset in (data.get("assets") or {}).values():
        local = _local(path, asset.get("href", ""))
        if local is not None:
            found.add(local)
    return found


def plan_stac_json(path: Path) -> IngestSource:
    """Plan the item of one STAC JSON file, dropping assets whose file is absent."""
    try:
        data = _load(path)
    except ValueError as err:
        raise IngestError(f"{path}: not valid JSON ({err})") from err
    if not (isinstance(data, dict) and data.get("type") == "Feature"):
        raise IngestError(f'{path}: not a STAC item (no "type": "Feature")')
    try:
        item = pystac.Item.from_dict(data, preserve_dict=False)
    except (KeyError, ValueError, TypeError, pystac.STACError) as err:
        raise IngestError(f"{path}: not a valid STAC item ({type(err).__name__}: {err})") from err
    if item.datetime is None:
        raise IngestError(f"{path}: the item has no datetime")
    source = IngestSource(path=str(path))
    kept: dict[str, tuple[pystac.Asset, Path]] = {}
    dropped: list[str] = []
    for key, asset in item.assets.items():
        local = _local(path, asset.href)
        if local is None:
            dropped.append(f"{key!r} ({Path(unquote(urlparse(asset.href).path)).name})")
        else:
            kept[key] = (asset, local)
    if dropped:  # one line: a full remote item has dozens of assets not copied locally
        source.warnings.append(
            f"{len(dropped)} asset(s) dropped, their files are not beside the JSON: "
            + ", ".join(dropped)
        )
    data_keys = [k for k, (a, p) in kept.items() if _is_data(a, p)]
    if not data_keys:
        raise IngestError(
            f"{path}: no data asset left: none of the files its data assets name is beside it"
        )
    item_id = safe_name(item.id)

    def build(ctx: BuildContext) -> pystac.Item:
        return _build(ctx, item, item_id, kept)

    source.plans.append(ItemPlan(item_id, build))
    return source


def _build(
    ctx: BuildContext, item: pystac.Item, item_id: str, kept: dict[str, tuple[pystac.Asset, Path]]
) -> pystac.Item:
    out = item.clone()
    out.id = item_id
    out.collection_id = ctx.collection
    out.links = [
        link for link in out.links if link.rel not in ("self", "root", "parent", "collection")
    ]
    out.assets = {}
    epsg = out.properties.get("proj:epsg")
    cloud = None
    for key, (asset, local) in kept.items():
        new = asset.clone()
        if local.suffix.lower() in _RASTER_SUFFIXES:
            href = local
            if not is_cog(local):
                href = ctx.writer.from_file(local, ctx.cog_path(item_id, key), band=None)
            fields = asset_fields(href, item_epsg=epsg)
            old_bands = new.extra_fields.get("raster:bands") or []
            defaults = {"scale": 1.0, "offset": 0.0}
            for old, fresh in zip(old_bands, fields["raster:bands"], strict=False):
                for name in ("scale", "offset", "unit", "bits_per_sample"):
                    # the product's scale/offset survive a local copy that lost them
                    if name in old and fresh.get(name, defaults.get(name)) == defaults.get(name):
                        fresh[name] = old[name]
            new.extra_fields.update(fields)
            if "gsd" in new.extra_fields:
                with rasterio.open(href) as src:
                    new.extra_fields["gsd"] = abs(src.transform.a)
            new.media_type = COG_MEDIA_TYPE
            new.href = str(href.resolve())
            kind = _mask_kind(key, new)
            if kind is not None and cloud is None:
                cloud = cloud_cover_file(href, kind)
                new.roles = sorted(set(new.roles or []) | {"data", "cloud", "cloud-mask"})
        else:
            new.href = str(local.resolve())
        out.add_asset(key, new)
    props = out.properties
    scene = parse_scene(item.id)
    for key, value in scene.properties.items():
        props.setdefault(key, value)
    level = _LEVELS.get(str(props.get("s2:product_type", "")))
    if level:
        props.setdefault("processing:level", level)
    if isinstance(epsg, int):
        props.setdefault("proj:code", f"EPSG:{epsg}")
    props.update(ctx.properties)
    if cloud is not None:
        props["eo:cloud_cover"] = cloud
    return out


def _load(path: Path) -> Any:
    if path.stat().st_size > _MAX_JSON_BYTES:
        raise ValueError(f"larger than {_MAX_JSON_BYTES} bytes")
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


def _local(json_path: Path, href: str) -> Path | None:
    name = Path(unquote(urlparse(href).path)).name
    if not name:
        return None
    candidate = json_path.parent / name
    return candidate if candidate.is_file() else None


def _is_data(asset: pystac.Asset, local: Path) -> bool:
    roles = asset.roles or []
    return "data" in roles or (not roles and local.suffix.lower() in _RASTER_SUFFIXES)


def _mask_kind(key: str, asset: pystac.Asset) -> str | None:
    names = [key] + [b.get("name", "") for b in asset.extra_fields.get("eo:bands", []) or []]
    for name in names:
        kind = _MASK_KEYS.get(str(name).lower())
        if kind:
            return kind
    return None
