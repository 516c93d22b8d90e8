"""Low zooms over many remote scenes: previews are built at ingest (local files, recorded
as ``eox:preview``), zoomed-out tiles read only them (nginx on 127.0.0.1 sees no request),
their pixels equal an independent numpy/rasterio computation at the preview resolution,
zoomed-in tiles read the band files, and a tile over more scenes than the cap says so
(tile metadata and the ``X-EOX-Notice`` response header)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import morecantile
import numpy as np
import pyproj
import pytest
import rasterio
from rasterio.transform import from_origin
from render_fixtures import make_item, pattern
from stacapi_server import serve_stac_api
from starlette.testclient import TestClient

from engine.catalog import SQLiteCatalog
from engine.chain.store import ChainStore
from engine.collection import Collection
from engine.errors import InvalidInput
from engine.ingest import ingest_search
from engine.ingest.items import build_collection
from engine.render import TileRenderer
from engine.render.previews import PREVIEW_FIELD, add_previews
from service import create_service
from service.diskcache import DiskKey, DiskTileCache
from tests.http_storage import StaticServer, rehost

TMS = morecantile.tms.get("WebMercatorQuad")
pytestmark = pytest.mark.skipif(shutil.which("nginx") is None,
                                reason="nginx is not installed (apt-get install nginx-light)")
SIZE = 512  # px per scene side, 10 m pixels: previews are 256 px of 20 m
COLS, ROWS = 3, 2
BANDS = ("B04", "B03", "B02")


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """Six adjacent 512 px scenes (3 x 2, no overlap) served by nginx, ingested from STAC
    JSON files whose hrefs are the server's URLs."""
    tmp = tmp_path_factory.mktemp("lowzoom")
    root = tmp / "root"
    x0, y0 = pyproj.Transformer.from_crs(4326, 32633, always_xy=True).transform(14.0, 50.0)
    x0, y0 = round(x0, -3), round(y0, -3)
    items, arrays = [], {}
    for k in range(COLS * ROWS):
        r, c = divmod(k, COLS)
        transform = from_origin(x0 + c * SIZE * 10, y0 - r * SIZE * 10, 10, 10)
        bands = {b: pattern((SIZE, SIZE), 10 * k + i) for i, b in enumerate(BANDS)}
        arrays[f"S{k}"] = (bands, transform)
        items.append(make_item(root / f"S{k}", f"S{k}", epsg=32633, transform=transform,
                               bands=bands, date=datetime(2021, 6, 1, tzinfo=UTC)
                               + timedelta(days=k)))
    server = StaticServer(root, tmp / "nginx").start()
    hosted = [rehost(i, root, server.url) for i in items]
    cat = SQLiteCatalog(tmp / "cat.sqlite")
    with serve_stac_api({"s2": hosted}, [build_collection("s2", hosted)], tmp / "api") as api:
        report = ingest_search(cat, f"{api}/search?collections=s2&limit=4", collection="s2",
                               data_dir=tmp / "data")
    assert sorted(report.added) == sorted(arrays) and not report.warnings
    yield {"server": server, "cat": cat, "arrays": arrays, "tmp": tmp, "items": items,
           "root": root}
    cat.close()
    server.stop()


def _chain(cat):
    return Collection("s2", catalog=cat).process().bands(*BANDS).scale(0, 4000)


def _centre_tile(remote, z):
    b = np.array([i.bbox for i in remote["items"]])
    lon, lat = (b[:, 0].min() + b[:, 2].max()) / 2, (b[:, 1].min() + b[:, 3].max()) / 2
    return TMS.tile(lon, lat, z)


def test_previews_are_built_at_ingest_as_local_files(remote):
    for item in remote["cat"].search(Collection("s2", catalog=remote["cat"]).query):
        for key in BANDS:
            asset = item.assets[key]
            assert asset.href.startswith(remote["server"].url)
            preview = Path(asset.extra_fields[PREVIEW_FIELD])
            assert preview.is_file() and remote["tmp"] / "data" / "previews" in preview.parents
            with rasterio.open(preview) as ds:
                assert (ds.width, ds.height) == (SIZE // 2, SIZE // 2)
                assert ds.res == (20.0, 20.0) and ds.crs.to_epsg() == 32633


def test_low_zoom_reads_no_remote_byte_and_high_zoom_does(remote):
    server, cat = remote["server"], remote["cat"]
    renderer = TileRenderer(cat)  # cold: no open handle, no cached block
    chain = _chain(cat)
    before = len(server.requests())
    for z in (8, 10, 11):
        t = _centre_tile(remote, z)
        assert renderer.tile(chain, t.z, t.x, t.y) is not None
    assert len(server.requests()) == before, server.requests()[before:]
    t = _centre_tile(remote, 14)
    renderer.tile(chain, t.z, t.x, t.y)
    assert len(server.requests()) > before  # zoomed in: the band files themselves


def test_zoomed_out_tiles_read_previews_from_memory(remote):
    cat = remote["cat"]
    renderer = TileRenderer(cat)
    t = _centre_tile(remote, 9)
    first = renderer.tile(_chain(cat), t.z, t.x, t.y)
    loaded = renderer.previews.stats()["misses"]
    assert loaded == COLS * ROWS * len(BANDS) and renderer.handles.stats()["opened"] == 0
    again = renderer.tile(_chain(cat), t.z, t.x, t.y)  # no file opened or read again
    assert renderer.previews.stats()["misses"] == loaded and renderer.handles.stats()[
        "opened"] == 0
    assert np.array_equal(first.array.filled(0), again.array.filled(0))


def _preview_level(a):
    return a[::2, ::2]


def _tiny_level(a):
    """The tiny level: means of 8 x 8 preview pixels (256 -> 32 px, 160 m)."""
    return _preview_level(a).reshape(32, 8, 32, 8).astype(float).mean(axis=(1, 3))


def _expected(remote, tile, tilesize=256, *, res=20.0, level=_preview_level):
    """The tile's values computed here: every tile pixel centre projected exactly (pyproj)
    into the scenes' grid at the preview resolution (the files' own overviews: nearest,
    every 2nd pixel; or ``level`` at ``res``), latest scene first. Also where a centre
    falls within 0.15 level px of a pixel edge (nearest-neighbour picks there depend on
    rounding)."""
    left, _, right, top = TMS.xy_bounds(tile)
    step = (right - left) / tilesize
    xs = left + (np.arange(tilesize) + 0.5) * step
    ys = top - (np.arange(tilesize) + 0.5) * step
    gx, gy = np.meshgrid(xs, ys)
    ux, uy = pyproj.Transformer.from_crs(3857, 32633, always_xy=True).transform(gx, gy)
    out = np.zeros((len(BANDS), tilesize, tilesize))
    filled = np.zeros((tilesize, tilesize), bool)
    edge = np.zeros((tilesize, tilesize), bool)
    for sid in sorted(remote["arrays"], key=lambda s: -int(s[1:])):  # latest first
        bands, transform = remote["arrays"][sid]
        n = round(SIZE * 10 / res)  # level pixels a side
        col = (ux - transform.c) / res
        row = (transform.f - uy) / res
        inside = (col >= 0) & (col < n) & (row >= 0) & (row < n) & ~filled
        c, r = col[inside].astype(int), row[inside].astype(int)
        for i, b in enumerate(BANDS):
            out[i][inside] = level(bands[b])[r, c]
        near = lambda v: np.abs(v - np.round(v)) < 0.15
        edge |= (near(col) | near(row)) & (inside | (
            (col > -1) & (col < n + 1) & (row > -1) & (row < n + 1)))
        filled |= inside
    return out, filled, edge


@pytest.mark.parametrize("z", [10, 11])
def test_low_zoom_mosaic_equals_an_independent_computation(remote, z):
    cat = remote["cat"]
    t = _centre_tile(remote, z)
    bounds = TMS.xy_bounds(t)
    got = TileRenderer(cat).render_bbox(
        Collection("s2", catalog=cat).process().bands(*BANDS), bounds, 256, 256,
        crs="EPSG:3857", bbox_crs="EPSG:3857", analytic=True)
    want, filled, edge = _expected(remote, t)
    valid = ~np.ma.getmaskarray(got.array)[0]
    sure = ~edge
    assert filled.sum() > 1000 and sure.mean() > 0.4
    assert np.array_equal(valid[sure], filled[sure])
    both = valid & filled & sure
    assert np.array_equal(got.array.data[:, both], want[:, both])
    assert (got.array.data[:, valid & filled] == want[:, valid & filled]).mean() > 0.9
    tile = TileRenderer(cat).tile(_chain(cat), t.z, t.x, t.y)  # the 8-bit tile of it
    scaled = np.clip(want / 4000 * 255, 0, 255)
    assert (np.abs(tile.array.data.astype(float) - scaled)[:, both] <= 1).all()


def test_tiny_levels_equal_an_independent_computation(remote):
    """z8 (a tile pixel ~390 m here): every scene is read from its tiny level (32 px of
    160 m, built at ingest), whose pixels are the 8 x 8 means of the preview's (GDAL's
    average rounds to the integer type: within 0.5)."""
    cat = remote["cat"]
    t = _centre_tile(remote, 8)
    renderer = TileRenderer(cat)
    got = renderer.render_bbox(
        Collection("s2", catalog=cat).process().bands(*BANDS), TMS.xy_bounds(t), 256, 256,
        crs="EPSG:3857", bbox_crs="EPSG:3857", analytic=True)
    assert renderer.previews.stats()["entries"] == COLS * ROWS * len(BANDS)  # tiny only
    assert renderer.handles.stats()["opened"] == 0
    want, filled, edge = _expected(remote, t, res=160.0, level=_tiny_level)
    valid = ~np.ma.getmaskarray(got.array)[0]
    sure = ~edge
    assert filled.sum() > 500 and sure.mean() > 0.4
    assert np.array_equal(valid[sure], filled[sure])
    both = valid & filled & sure
    assert np.abs(got.array.data[:, both] - want[:, both]).max() <= 0.5
    preview = _expected(remote, t)[0]  # what the preview would give: not the same pixels
    assert np.abs(preview[:, both] - want[:, both]).mean() > 50


def test_cap_on_scenes_per_tile_is_told(remote):
    cat = remote["cat"]
    t = _centre_tile(remote, 9)
    renderer = TileRenderer(cat, max_preview_items=2)
    img = renderer.tile(_chain(cat), t.z, t.x, t.y)
    assert img.metadata["scenes"] == {"total": COLS * ROWS, "shown": 2}
    assert sorted(s.id for s in img.assets) == ["S4", "S5"]  # the latest two (mosaic order)
    full = TileRenderer(cat).tile(_chain(cat), t.z, t.x, t.y)
    assert "scenes" not in full.metadata
    assert (~np.ma.getmaskarray(full.array)).sum() > (~np.ma.getmaskarray(img.array)).sum()

    app = create_service(cat, chain_store=ChainStore(remote["tmp"] / "chains.sqlite"),
                         renderer=renderer, cache_bytes=2**20)
    with TestClient(app) as client:
        cid = client.post("/api/chains", json=json.loads(_chain(cat).to_json())).json()["id"]
        for _ in range(2):  # rendered, then from the tile cache: the notice stays
            r = client.get(f"/api/chains/{cid}/tiles/{t.z}/{t.x}/{t.y}.png")
            assert r.status_code == 200
            assert r.headers["X-EOX-Notice"].startswith("6 scenes overlap this tile; the "
                                                        "first 2 in mosaic order are shown")
        z14 = _centre_tile(remote, 14)
        r = client.get(f"/api/chains/{cid}/tiles/{z14.z}/{z14.x}/{z14.y}.png")
        assert r.status_code == 200 and "X-EOX-Notice" not in r.headers

    # another worker (its own memory cache) serving the tile from the shared disk cache
    disk = remote["tmp"] / "tile-cache"
    for _ in range(2):  # the first renders and writes it, the second reads it from disk
        app = create_service(cat, chain_store=ChainStore(remote["tmp"] / "chains.sqlite"),
                             renderer=renderer, cache_bytes=2**20,
                             disk_cache=DiskTileCache(disk, 2**24))
        with TestClient(app) as client:
            r = client.get(f"/api/chains/{cid}/tiles/{t.z}/{t.x}/{t.y}.png")
            assert r.status_code == 200 and r.headers["X-EOX-Notice"].startswith(
                "6 scenes overlap this tile; the first 2")
    assert app.state.tile_cache.hits == 0 and DiskTileCache(disk, 2**24).get(
        DiskKey(cid, renderer.fingerprint(_chain(cat)), t.z, t.x, t.y, 256, "png")).notice


def test_missing_preview_falls_back_to_the_band_file(remote, tmp_path):
    items = [rehost(i, remote["root"], remote["server"].url) for i in remote["items"][:1]]
    assert add_previews(items, tmp_path / "previews") == (len(BANDS), [])
    preview = Path(items[0].assets["B04"].extra_fields[PREVIEW_FIELD])
    assert preview.is_file()
    with pytest.raises(InvalidInput, match="at least 16 px"):
        add_previews(items, tmp_path / "previews", size=8)
    cat = SQLiteCatalog(tmp_path / "one.sqlite")
    cat.add_collection(build_collection("s2", items))
    cat.add_items(items, collection="s2")
    preview.unlink()
    server = remote["server"]
    before = len(server.requests())
    b = items[0].bbox
    t = TMS.tile((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, 10)
    assert TileRenderer(cat).tile(_chain(cat), t.z, t.x, t.y) is not None
    assert len(server.requests()) > before  # read from storage instead
    cat.close()
