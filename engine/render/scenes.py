"""Select scenes: a chain's source resolved to :class:`Scene` records in mosaic order.

``build_scenes`` queries the catalog once per source (the renderer caches the result as a
:class:`SceneSet`); ``limit_scenes`` applies the per-request scene cap.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pystac
from shapely.geometry import shape

from engine.catalog.base import Catalog
from engine.chain.bands import band_transform, cloud_asset, raster_band, resolve_asset
from engine.chain.expression import parse_expression
from engine.chain.model import Chain
from engine.errors import ChainError
from engine.render.previews import PREVIEW_FIELD


@dataclass(frozen=True)
class Scene:
    """One item reduced to what reading needs: band files, nodata, cloud band, sort keys."""

    id: str
    datetime: datetime | None
    cloud_cover: float | None
    bbox: tuple[float, float, float, float]
    hrefs: tuple[str, ...]
    nodata: tuple[float | None, ...]
    cloud_href: str | None = None
    cloud_name: str | None = None
    #: per band, ``(mul, add)`` from ``raster:bands`` scale/offset, or None (as stored)
    transforms: tuple[tuple[float, float] | None, ...] = ()
    #: per band, the local low-resolution preview (``eox:preview``), or None
    previews: tuple[str | None, ...] = ()
    cloud_preview: str | None = None

    @property
    def has_previews(self) -> bool:
        return bool(self.previews) and all(self.previews) and (
            self.cloud_href is None or self.cloud_preview is not None)


@dataclass
class SceneSet:
    """The scenes of a source, in mosaic order, with their WGS84 bboxes as an array."""

    scenes: list[Scene]
    band_names: tuple[str, ...]
    bboxes: np.ndarray = field(init=False)
    created: float = field(default_factory=time.monotonic)
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        self.bboxes = (np.array([s.bbox for s in self.scenes], dtype=float)
                       if self.scenes else np.zeros((0, 4)))
        h = hashlib.sha256(repr(self.band_names).encode())
        for s in self.scenes:  # what an ingest changes: ids, dates, files, in mosaic order
            h.update(repr((s.id, s.datetime, s.hrefs, s.nodata, s.cloud_href, s.transforms,
                           s.previews)).encode())
        self.fingerprint = h.hexdigest()[:16]

    def intersecting(self, bbox: Sequence[float]) -> list[Scene]:
        """Scenes whose bbox overlaps ``bbox`` (WGS84), in order."""
        if not self.scenes:
            return []
        b = self.bboxes
        hit = (b[:, 0] <= bbox[2]) & (b[:, 2] >= bbox[0]) & (b[:, 1] <= bbox[3]) & (
            b[:, 3] >= bbox[1])
        return [self.scenes[i] for i in np.flatnonzero(hit)]


def scene_day(d: datetime | None) -> str:
    """The UTC day a scene is stacked under in a time stack ("unknown" without a date)."""
    return d.date().isoformat() if d else "unknown"


def date_count(chain: Chain, scenes: Sequence[Scene]) -> int:
    """Layers a read stacks: the scenes' dates for a time stack, else one mosaic."""
    return len({scene_day(s.datetime) for s in scenes}) if chain.source.times else 1


def read_names(chain: Chain) -> tuple[str, ...]:
    """The bands a read of the chain needs: its own, then those of a mosaic expression."""
    names = list(chain.read_bands())
    if chain.source.mosaic_expression:
        for n in parse_expression(chain.source.mosaic_expression).band_names:
            if n not in names:
                names.append(n)
    return tuple(names)


def limit_scenes(chain: Chain, scenes: list[Scene], limit: int) -> list[Scene]:
    """The first ``limit`` scenes in mosaic order; a time stack with more scenes is refused
    (its dates cannot be silently dropped)."""
    if len(scenes) <= limit:
        return scenes
    if chain.source.times:
        raise ChainError(f"the time stack has {len(scenes)} scenes here, more than the "
                         f"limit of {limit}: narrow the dates or add filters")
    return scenes[:limit]


def absolute_href(asset: pystac.Asset) -> str:
    """The asset's href made absolute (an absolute path or URL as it is: pystac's parse of
    each of thousands of hrefs costs more than the rest of a scene record)."""
    href = asset.href
    if href.startswith("/") or "://" in href[:16]:
        return href
    return asset.get_absolute_href() or href


def _transform(item: pystac.Item, key: str,
               known: dict[str, tuple[float, float] | None]) -> tuple[float, float] | None:
    """:func:`band_transform`, computed once per distinct input (asset key, its band
    fields, the item's sensor-family fields and offset flag)."""
    extra = item.assets[key].extra_fields
    props = item.properties
    memo = repr((key, extra.get("raster:bands"), extra.get("eo:bands"), extra.get("bands"),
                 extra.get("raster:scale"), extra.get("raster:offset"), extra.get("nodata"),
                 extra.get("data_type"), item.collection_id,
                 *(props.get(k) for k in ("constellation", "platform", "mission", "instruments",
                                          "earthsearch:boa_offset_applied"))))
    if memo not in known:
        known[memo] = band_transform(item, key)
    return known[memo]


def build_scenes(catalog: Catalog, chain: Chain, *, cloud: bool | None = None) -> SceneSet:
    """Query the catalog for the chain's source: its scenes with band files resolved, in
    mosaic order (``cloud``: resolve each scene's cloud-mask band; default: when the chain
    masks clouds)."""
    read = read_names(chain)
    cloud = bool(chain.cloud_masks()) if cloud is None else cloud
    src = chain.source
    collection = catalog.collection(src.collection)  # UnknownCollection
    items = catalog.search(src.to_query())
    constellation = str((collection.summaries.to_dict() if collection.summaries else {})
                        .get("constellation", ""))
    scenes = []
    known: dict[str, tuple[float, float] | None] = {}  # a collection's items share these
    for item in items:
        hrefs, nodata, transforms, previews = [], [], [], []
        for name in read:
            key = resolve_asset(item, name)
            asset = item.assets[key]
            hrefs.append(absolute_href(asset))
            previews.append(asset.extra_fields.get(PREVIEW_FIELD))
            transforms.append(_transform(item, key, known))
            nodata.append(raster_band(asset).get("nodata"))
        cloud_href = cloud_name = cloud_preview = None
        if cloud:
            ckey = cloud_asset(item)
            if ckey is None:
                raise ChainError(f"mask(cloud=True): item {item.id!r} has no cloud-mask "
                                 "band (SCL or fmask)", choices=list(item.assets))
            cloud_href = absolute_href(item.assets[ckey])
            cloud_preview = item.assets[ckey].extra_fields.get(PREVIEW_FIELD)
            is_landsat = ckey.lower() == "fmask" or "landsat" in (
                str(item.properties.get("constellation", "")) + constellation).lower()
            cloud_name = "fmask" if is_landsat else "SCL"
        bbox = item.bbox or shape(item.geometry).bounds
        scenes.append(Scene(
            id=item.id, datetime=item.datetime, cloud_cover=item.properties.get(
                "eo:cloud_cover"), bbox=tuple(bbox), hrefs=tuple(hrefs), nodata=tuple(nodata),
            cloud_href=cloud_href, cloud_name=cloud_name, transforms=tuple(transforms),
            previews=tuple(previews), cloud_preview=cloud_preview))
    if src.times:
        scenes.sort(key=lambda s: (s.datetime is None, s.datetime or datetime.min))
    elif src.mosaic == "latest":
        scenes.sort(key=lambda s: s.datetime.timestamp() if s.datetime else -math.inf,
                    reverse=True)
    elif src.mosaic == "least_cloudy":
        scenes.sort(key=lambda s: (s.cloud_cover is None, s.cloud_cover or 0.0))
    return SceneSet(scenes, read)
