"""Tiles, TileJSON, point and statistics through the real ASGI app, checked against an
independent rasterio/numpy computation of the same window."""

from __future__ import annotations

import io

import morecantile
import numpy as np
import pytest
import rasterio
from PIL import Image
from pyproj import Transformer
from rasterio.transform import from_bounds
from rasterio.warp import Resampling, reproject
from service_data import (
    CRS_UTM,
    ITEM_JUNE,
    ORIGIN,
    RES,
    SIZE,
    TRANSFORM,
    band_array,
    make_app,
    true_colour,
)

TMS = morecantile.tms.get("WebMercatorQuad")
TO_WGS84 = Transformer.from_crs(32633, 4326, always_xy=True)


def utm_to_lonlat(col: float, row: float) -> tuple[float, float]:
    return TO_WGS84.transform(ORIGIN[0] + col * RES, ORIGIN[1] - row * RES)


def expected_tile(tile: morecantile.Tile, names=("B04", "B03", "B02"), vmax=3000.0, size=256):
    """(3, size, size) uint8 and a validity mask, by reprojecting the source arrays with
    rasterio (nearest) onto the tile's Web Mercator grid and scaling 0..vmax to 0..255."""
    bounds = TMS.xy_bounds(tile)
    dst_transform = from_bounds(*bounds, size, size)
    out, valid = [], np.ones((size, size), bool)
    for name in names:
        dst = np.zeros((size, size), np.uint16)
        reproject(band_array(name), dst, src_transform=TRANSFORM, src_crs=CRS_UTM,
                  src_nodata=0, dst_transform=dst_transform, dst_crs="EPSG:3857",
                  dst_nodata=0, resampling=Resampling.nearest)
        valid &= dst != 0
        out.append(np.clip(np.rint(dst.astype(float) / vmax * 255), 0, 255).astype(np.uint8))
    return np.stack(out), valid


def decode(content: bytes) -> np.ndarray:
    """(y, x, 4) RGBA pixels of an encoded tile."""
    return np.asarray(Image.open(io.BytesIO(content)).convert("RGBA"))


def centre_tile(z: int) -> morecantile.Tile:
    return TMS.tile(*utm_to_lonlat(SIZE / 2, SIZE / 2), z)


def test_tile_pixels_match_rasterio(client, chain_id):
    tile = centre_tile(14)
    r = client.get(f"/api/chains/{chain_id}/tiles/{tile.z}/{tile.x}/{tile.y}.png")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    rgba = decode(r.content)
    expected, valid = expected_tile(tile)
    assert valid.mean() > 0.9  # the tile is (almost) inside the scene
    got = np.moveaxis(rgba[..., :3], -1, 0).astype(int)
    alpha = rgba[..., 3]
    both = valid & (alpha == 255)
    assert both.sum() >= 0.98 * valid.sum()
    diff = np.abs(got - expected.astype(int))[:, both]
    # Smooth gradients: a half-pixel difference in sampling moves a value by < 1 step.
    assert diff.max() <= 1
    assert diff.mean() < 0.2
    # The bands are in the chain's order (red = B04 grows eastwards, green = B03 southwards).
    assert got[0, 128, 250] > got[0, 128, 5]
    assert got[1, 250, 128] > got[1, 5, 128]


def test_edge_tile_is_transparent_outside_data(client, chain_id):
    # The tile holding the scene's north-west corner (nodata block + outside the footprint).
    tile = TMS.tile(*utm_to_lonlat(2, 2), 14)
    r = client.get(f"/api/chains/{chain_id}/tiles/{tile.z}/{tile.x}/{tile.y}.png")
    assert r.status_code == 200
    alpha = decode(r.content)[..., 3]
    _, valid = expected_tile(tile)
    assert 0.05 < valid.mean() < 0.95
    agree = (alpha == 255) == valid
    assert agree.mean() > 0.98
    assert set(np.unique(alpha)) <= {0, 255}


@pytest.mark.parametrize("fmt, media, pil", [("webp", "image/webp", "WEBP"),
                                             ("jpg", "image/jpeg", "JPEG")])
def test_other_formats(client, chain_id, fmt, media, pil):
    tile = centre_tile(14)
    r = client.get(f"/api/chains/{chain_id}/tiles/{tile.z}/{tile.x}/{tile.y}.{fmt}")
    assert r.status_code == 200
    assert r.headers["content-type"] == media
    img = Image.open(io.BytesIO(r.content))
    assert img.format == pil and img.size == (256, 256)


def test_tilesize_512(client, chain_id):
    tile = centre_tile(13)
    r = client.get(f"/api/chains/{chain_id}/tiles/{tile.z}/{tile.x}/{tile.y}.png",
                   params={"tilesize": 512})
    assert r.status_code == 200
    rgba = decode(r.content)
    assert rgba.shape == (512, 512, 4)
    expected, valid = expected_tile(tile, size=512)
    both = valid & (rgba[..., 3] == 255)
    diff = np.abs(np.moveaxis(rgba[..., :3], -1, 0).astype(int) - expected)[:, both]
    assert diff.max() <= 1


def test_bad_tilesize_and_format_are_422_with_choices(client, chain_id):
    r = client.get(f"/api/chains/{chain_id}/tiles/14/1/1.png", params={"tilesize": 300})
    assert r.status_code == 422
    assert "tilesize" in r.json()["detail"] and r.json()["choices"] == ["256", "512"]
    r = client.get(f"/api/chains/{chain_id}/tiles/14/1/1.gif")
    assert r.status_code == 422
    assert "fmt" in r.json()["detail"]
    assert r.json()["choices"] == ["png", "webp", "jpg"]


@pytest.mark.parametrize("zxy", ["3/8/0", "3/0/8", "3/-1/0", "31/0/0", "-1/0/0"])
def test_tile_outside_grid_is_400(client, chain_id, zxy):
    r = client.get(f"/api/chains/{chain_id}/tiles/{zxy}.png")
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "InvalidInput"
    assert "outside" in body["detail"]


def test_tile_without_data_is_204(client, chain_id):
    tile = TMS.tile(-60.0, -30.0, 10)  # South America: no scene there
    r = client.get(f"/api/chains/{chain_id}/tiles/{tile.z}/{tile.x}/{tile.y}.png")
    assert r.status_code == 204
    assert r.content == b""
    assert "immutable" in r.headers["cache-control"]


def test_unknown_chain_tile_is_404(client):
    r = client.get("/api/chains/0123456789abcdef/tiles/14/1/1.png")
    assert r.status_code == 404
    assert r.json()["type"] == "NotFound" and "0123456789abcdef" in r.json()["detail"]


def test_etag_and_304(client, chain_id):
    tile = centre_tile(14)
    url = f"/api/chains/{chain_id}/tiles/{tile.z}/{tile.x}/{tile.y}.png"
    first = client.get(url)
    etag = first.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert first.headers["cache-control"] == "public, max-age=31536000, immutable"
    again = client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    assert client.get(url, headers={"If-None-Match": '"other", ' + etag}).status_code == 304
    stale = client.get(url, headers={"If-None-Match": '"something-else"'})
    assert stale.status_code == 200 and stale.content == first.content


def test_cache_is_bounded_and_served(scene):
    from starlette.testclient import TestClient

    app = make_app(scene.db, cache_bytes=20_000)
    with TestClient(app) as c:
        cid = c.post("/api/chains", json=true_colour()).json()["id"]
        centre = centre_tile(15)
        tiles = [morecantile.Tile(centre.x + dx, centre.y + dy, 15)
                 for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
        bodies = {}
        for t in tiles:
            r = c.get(f"/api/chains/{cid}/tiles/{t.z}/{t.x}/{t.y}.png")
            assert r.status_code == 200
            bodies[t] = r.content
        stats = c.get("/healthz").json()["cache"]
        assert sum(len(b) for b in bodies.values()) > 20_000  # more than fits
        assert 0 < stats["bytes"] <= stats["max_bytes"] == 20_000
        assert stats["evictions"] > 0 and stats["misses"] == 9
        # The last tile is cached: served again without rendering, same bytes.
        last = tiles[-1]
        r = c.get(f"/api/chains/{cid}/tiles/{last.z}/{last.x}/{last.y}.png")
        assert r.content == bodies[last]
        assert c.get("/healthz").json()["cache"]["hits"] == 1
        # An evicted one renders again, identically.
        first = tiles[0]
        assert c.get(f"/api/chains/{cid}/tiles/{first.z}/{first.x}/{first.y}.png").content \
            == bodies[first]


def test_tilejson(client, chain_id):
    r = client.get(f"/api/chains/{chain_id}/tilejson.json")
    assert r.status_code == 200
    tj = r.json()
    assert tj["tilejson"] == "3.0.0"
    assert tj["tiles"] == [f"http://testserver/api/chains/{chain_id}/tiles/{{z}}/{{x}}/{{y}}.png"]
    west, south, east, north = tj["bounds"]
    lon0, lat0 = utm_to_lonlat(0, SIZE)
    lon1, lat1 = utm_to_lonlat(SIZE, 0)
    assert west == pytest.approx(min(lon0, lon1), abs=1e-3)
    assert north == pytest.approx(max(lat0, lat1), abs=1e-3)
    assert west < tj["center"][0] < east and south < tj["center"][1] < north
    assert 0 <= tj["minzoom"] <= tj["maxzoom"] <= 24
    assert tj["bands"] == ["B04", "B03", "B02"]
    r = client.get(f"/api/chains/{chain_id}/tilejson.json",
                   params={"tile_format": "webp", "tilesize": 512})
    assert r.json()["tiles"][0].endswith("{y}.webp?tilesize=512")


def test_point_values_are_the_source_pixels(client, chain_id):
    col, row = 300.5, 200.5  # pixel centre of (row 200, col 300)
    lon, lat = utm_to_lonlat(col, row)
    r = client.get(f"/api/chains/{chain_id}/point", params={"lon": lon, "lat": lat})
    assert r.status_code == 200
    body = r.json()
    assert body["bands"] == ["B04", "B03", "B02"]
    expected = [float(band_array(b)[200, 300]) for b in ("B04", "B03", "B02")]
    assert body["values"] == expected


def test_point_errors(client, chain_id):
    r = client.get(f"/api/chains/{chain_id}/point", params={"lon": 200, "lat": 0})
    assert r.status_code == 422 and "lon" in r.json()["detail"]
    r = client.get(f"/api/chains/{chain_id}/point", params={"lon": "east", "lat": 0})
    assert r.status_code == 422
    r = client.get("/api/chains/ffffffffffffffff/point", params={"lon": 0, "lat": 0})
    assert r.status_code == 404


def _square(c0: int, r0: int, c1: int, r1: int) -> dict:
    ring = [utm_to_lonlat(c, r) for c, r in [(c0, r0), (c1, r0), (c1, r1), (c0, r1), (c0, r0)]]
    return {"type": "Polygon", "coordinates": [[list(p) for p in ring]]}


def test_statistics_match_numpy(client, chain_id):
    geom = _square(100, 100, 300, 260)
    r = client.post(f"/api/chains/{chain_id}/statistics", json=geom)
    assert r.status_code == 200, r.text
    stats = r.json()
    for name in ("B04", "B03", "B02"):
        window = band_array(name)[100:260, 100:300].astype(float)
        s = stats[name]
        assert s["mean"] == pytest.approx(window.mean(), rel=0.01)
        assert s["min"] == pytest.approx(window.min(), abs=15)
        assert s["max"] == pytest.approx(window.max(), abs=15)
        assert s["count"] == pytest.approx(window.size, rel=0.05)
        assert s["percentiles"]["50"] == pytest.approx(np.median(window), rel=0.01)
        assert sum(s["histogram"]["counts"]) == s["count"]
    # A Feature wrapping the same geometry gives the same answer.
    feature = {"type": "Feature", "properties": {}, "geometry": geom}
    assert client.post(f"/api/chains/{chain_id}/statistics", json=feature).json() == stats


def test_statistics_errors(client, chain_id):
    url = f"/api/chains/{chain_id}/statistics"
    r = client.post(url, json={"type": "Point", "coordinates": [15.0, 50.0]})
    assert r.status_code == 422 and r.json()["choices"] == ["Polygon", "MultiPolygon", "Feature"]
    r = client.post(url, json={"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]})
    assert r.status_code == 422 and "coordinates" in r.json()["detail"]
    far = {"type": "Polygon", "coordinates": [[[-60, -30], [-59, -30], [-59, -29], [-60, -30]]]}
    r = client.post(url, json=far)
    assert r.status_code == 424 and r.json()["type"] == "DataUnavailable"


def test_source_file_deleted_after_registration(tmp_path):
    from service_data import build_catalog
    from starlette.testclient import TestClient

    scene = build_catalog(tmp_path, items=(ITEM_JUNE,))
    with TestClient(make_app(scene.db)) as c:
        cid = c.post("/api/chains", json=true_colour()).json()["id"]
        tile = centre_tile(14)
        url = f"/api/chains/{cid}/tiles/{tile.z}/{tile.x}/{tile.y}.png"
        assert c.get(url, params={"tilesize": 512}).status_code == 200  # files opened
        missing = scene.folder / f"{ITEM_JUNE}_B03.tif"
        missing.unlink()
        r = c.get(url)
        assert r.status_code == 424
        assert r.json()["type"] == "DataUnavailable"
        assert f".../{missing.name}" in r.json()["detail"]  # its folder hidden (EOX_EXPOSE_PATHS)
        # Corrupt (truncated) file: also a clear 424, and the service keeps serving.
        corrupt = scene.folder / f"{ITEM_JUNE}_B04.tif"
        corrupt.write_bytes(corrupt.read_bytes()[:1000])
        missing.write_bytes(b"not a tiff")
        r = c.get(url.replace(".png", ".webp"))
        assert r.status_code == 424 and r.json()["type"] == "DataUnavailable"
        assert c.get("/healthz").status_code == 200


def test_rendering_matches_direct_rasterio_read(scene):
    # Guard against fixture drift: the COG on disk holds band_array's values.
    with rasterio.open(scene.folder / f"{ITEM_JUNE}_B04.tif") as src:
        np.testing.assert_array_equal(src.read(1), band_array("B04"))
