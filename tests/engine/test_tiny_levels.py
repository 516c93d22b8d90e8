"""Tiny levels of previews (issue #15): a z6 tile over many scenes loads only their tiny
levels (no preview, no band file opened); previews made before tiny levels existed are
read instead, and a re-ingest adds the tiny levels from them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import morecantile
import numpy as np
import pyproj
import pytest
from rasterio.transform import from_origin
from render_fixtures import make_catalog, make_item, pattern

from engine.collection import Collection
from engine.render import TileRenderer, previewcache
from engine.render.previews import PREVIEW_FIELD, add_previews, tiny_path

TMS = morecantile.tms.get("WebMercatorQuad")
SIDE = 8  # 8 x 8 = 64 overlapping scenes of 300 px, 20 m (6 km), 5 km apart
SIZE = 300


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    x0, y0 = pyproj.Transformer.from_crs(4326, 32633, always_xy=True).transform(14.0, 50.0)
    items = []
    for k in range(SIDE * SIDE):
        r, c = divmod(k, SIDE)
        transform = from_origin(round(x0, -3) + c * 5000, round(y0, -3) - r * 5000, 20, 20)
        items.append(make_item(tmp / f"S{k}", f"S{k}", epsg=32633, transform=transform,
                               bands={"B04": pattern((SIZE, SIZE), k)},
                               date=datetime(2021, 6, 1, tzinfo=UTC) + timedelta(hours=k)))
    assert add_previews(items, tmp / "previews", remote_only=False) == (len(items), [])
    cat = make_catalog(tmp / "cat.sqlite", {"s2": items})
    b = np.array([i.bbox for i in items])
    centre = ((b[:, 0].min() + b[:, 2].max()) / 2, (b[:, 1].min() + b[:, 3].max()) / 2)
    yield {"cat": cat, "items": items, "tmp": tmp, "centre": centre}
    cat.close()


def _loads(monkeypatch) -> list[str]:
    """Every file loaded (a preview, or a tiny level), in order (tries of a missing one
    are not loads)."""
    seen: list[str] = []
    real = previewcache.load

    def load(path: str):
        ds = real(path)
        seen.append(path)
        return ds

    monkeypatch.setattr(previewcache, "load", load)
    return seen


def _tile(cat, centre, z):
    t = TMS.tile(*centre, z)
    renderer = TileRenderer(cat)
    img = renderer.tile(Collection("s2", catalog=cat).process().bands("B04").scale(0, 4000),
                        t.z, t.x, t.y)
    return renderer, img


def test_z6_over_many_scenes_reads_only_tiny_levels(many, monkeypatch):
    seen = _loads(monkeypatch)
    renderer, img = _tile(many["cat"], many["centre"], 6)
    assert img is not None and (~np.ma.getmaskarray(img.array)).sum() > 100
    tinies = {str(tiny_path(i.assets["B04"].extra_fields[PREVIEW_FIELD])) for i in many["items"]}
    assert len(seen) == len(tinies) and set(seen) == tinies  # each tiny level once
    assert renderer.handles.stats()["opened"] == 0  # no preview GeoTIFF, no band file


def test_without_tiny_levels_the_preview_is_read_and_reingest_adds_them(many, monkeypatch):
    cat, items = many["cat"], many["items"]
    tinies = [tiny_path(i.assets["B04"].extra_fields[PREVIEW_FIELD]) for i in items]
    want = _tile(cat, many["centre"], 6)[1].array
    for p in tinies:  # a catalog ingested before tiny levels existed
        p.unlink()
    seen = _loads(monkeypatch)
    renderer, img = _tile(cat, many["centre"], 6)
    previews = {i.assets["B04"].extra_fields[PREVIEW_FIELD] for i in items}
    assert set(seen) == previews and renderer.handles.stats()["opened"] == 0
    assert img is not None and not np.array_equal(img.array.filled(0), want.filled(0))
    assert add_previews(items, many["tmp"] / "previews", remote_only=False) == (len(items), [])
    assert all(Path(p).is_file() for p in tinies)
    seen.clear()
    _, again = _tile(cat, many["centre"], 6)
    assert {str(p) for p in tinies} == set(seen)
    assert np.array_equal(again.array.filled(0), want.filled(0))
