"""COGs over HTTP and S3: the same scenes read from local files and from nginx on
127.0.0.1 (``http://`` hrefs, and ``s3://`` hrefs through GDAL's S3 settings pointed at
the same server) give identical tiles, points, statistics, profiles, extracts and batch
outputs, read with range requests; storage that fails or hangs gives StorageUnavailable /
StorageTimeout naming the host, within the request timeout."""

from __future__ import annotations

import shutil
import threading
import time
from datetime import UTC, datetime

import morecantile
import numpy as np
import pyproj
import pytest
import rasterio
import rasterio.env
from rasterio.transform import from_origin
from render_fixtures import make_item, pattern

from engine.catalog import SQLiteCatalog
from engine.collection import Collection
from engine.errors import StorageTimeout, StorageUnavailable
from engine.extract import extract
from engine.ingest.items import build_collection
from engine.render import TileRenderer
from engine.render.handles import HandleCache
from engine.storage import (
    GDAL_OPTIONS,
    configure_gdal,
    gdal_options,
    gdal_path,
    host_of,
    is_remote,
)
from engine.timeseries.profiles import profile
from tests.http_storage import SilentServer, StaticServer, rehost

TMS = morecantile.tms.get("WebMercatorQuad")
needs_nginx = pytest.mark.skipif(shutil.which("nginx") is None,
                                 reason="nginx is not installed (apt-get install nginx-light)")
#: GDAL's S3 driver pointed at the local server: s3://bucket/key -> http://host/bucket/key
S3_ENV = {"AWS_NO_SIGN_REQUEST": "YES", "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE"}


def test_hrefs_become_gdal_network_paths():
    assert gdal_path("https://h.example/a/B04.tif") == "/vsicurl/https://h.example/a/B04.tif"
    assert gdal_path("http://127.0.0.1:9/x.tif") == "/vsicurl/http://127.0.0.1:9/x.tif"
    assert gdal_path("s3://sentinel-cogs/a/B04.tif") == "/vsis3/sentinel-cogs/a/B04.tif"
    assert gdal_path("gs://bucket/k.tif") == "/vsigs/bucket/k.tif"
    assert gdal_path("file:///data/x.tif") == "/data/x.tif"
    assert gdal_path("/data/x.tif") == "/data/x.tif"
    assert [is_remote(h) for h in ("https://a/b", "s3://b/k", "/data/x.tif", "x.tif")] == [
        True, True, False, False]
    assert host_of("https://sentinel-cogs.s3.amazonaws.com/a.tif") == \
        "sentinel-cogs.s3.amazonaws.com"
    assert host_of("/vsis3/bucket/key.tif") == "bucket"
    opts = gdal_options(timeout_s=3, retries=1, cache_mb=64, handle_cache_mb=2)
    assert opts["GDAL_HTTP_TIMEOUT"] == "3" and opts["GDAL_HTTP_MAX_RETRY"] == "1"
    assert opts["CPL_VSIL_CURL_CACHE_SIZE"] == str(64 * 2**20)
    assert opts["VSI_CACHE_SIZE"] == str(2 * 2**20)
    assert opts["GDAL_DISABLE_READDIR_ON_OPEN"] == "TRUE"
    assert opts["GDAL_HTTP_MERGE_CONSECUTIVE_RANGES"] == "YES"


def _catalog(path, items):
    cat = SQLiteCatalog(path)
    cat.add_collection(build_collection("s2", items))
    cat.add_items(items, collection="s2")
    return cat


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    """Two dates of one 512 px scene (B04, B08, SCL) under ``root/bucket``, served by nginx;
    three catalogs of the same items: local paths, http:// and s3:// hrefs."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    tmp = tmp_path_factory.mktemp("remote")
    root = tmp / "root"
    x0, y0 = pyproj.Transformer.from_crs(4326, 32633, always_xy=True).transform(14.0, 50.0)
    transform = from_origin(round(x0, -1), round(y0, -1), 10, 10)
    items = []
    for k in range(2):
        scl = np.full((512, 512), 4, np.uint16)
        scl[100:180, 200:300] = 9
        items.append(make_item(
            root / "bucket" / f"D{k}", f"D{k}", epsg=32633, transform=transform,
            bands={"B04": pattern((512, 512), 70 + k), "B08": pattern((512, 512), 80 + k),
                   "SCL": scl}, date=datetime(2021, 6, 1 + 10 * k, tzinfo=UTC)))
    server = StaticServer(root, tmp / "nginx").start()
    for key, value in {**S3_ENV, "AWS_S3_ENDPOINT": server.host}.items():
        rasterio.env.set_gdal_config(key, value)
    local = _catalog(tmp / "local.sqlite", items)
    http = _catalog(tmp / "http.sqlite", [rehost(i, root, server.url) for i in items])
    s3 = _catalog(tmp / "s3.sqlite", [rehost(i, root / "bucket", "s3://bucket") for i in items])
    yield {"server": server, "local": local, "http": http, "s3": s3, "items": items,
           "tmp": tmp}
    server.stop()
    for key in (*S3_ENV, "AWS_S3_ENDPOINT"):
        rasterio.env.set_gdal_config(key, None)
    for cat in (local, http, s3):
        cat.close()


def _centre(storage):
    bb = storage["items"][0].bbox
    return (bb[0] + bb[2]) / 2, (bb[1] + bb[3]) / 2


def _chains(cat):
    coll = Collection("s2", catalog=cat)
    return {
        "true": coll.ids("D0").process().bands("B04", "B08", "B04").scale(0, 4000),
        "ndvi": coll.process().expression("(B08-B04)/(B08+B04)").mask(cloud=True).scale(-1, 1)
        .colormap("viridis"),
    }


@needs_nginx
@pytest.mark.parametrize("kind", ["http", "s3"])
def test_remote_tiles_points_and_stats_equal_local_reads(storage, kind):
    lon, lat = _centre(storage)
    local, remote = TileRenderer(storage["local"]), TileRenderer(storage[kind])
    for name in ("true", "ndvi"):
        a, b = _chains(storage["local"])[name], _chains(storage[kind])[name]
        for z in (10, 12, 14):  # overviews at 10-12, full resolution at 14
            t = TMS.tile(lon, lat, z)
            got, want = remote.tile(b, t.z, t.x, t.y), local.tile(a, t.z, t.x, t.y)
            np.testing.assert_array_equal(np.ma.getdata(got.array), np.ma.getdata(want.array))
            np.testing.assert_array_equal(np.ma.getmaskarray(got.array),
                                          np.ma.getmaskarray(want.array))
    a, b = _chains(storage["local"])["ndvi"], _chains(storage[kind])["ndvi"]
    assert remote.point(b, lon, lat).values == local.point(a, lon, lat).values
    box = {"type": "Polygon", "coordinates": [[[lon - .005, lat - .005], [lon + .005, lat - .005],
                                               [lon + .005, lat + .005], [lon - .005, lat + .005],
                                               [lon - .005, lat - .005]]]}
    assert remote.statistics(b, box) == local.statistics(a, box)


@needs_nginx
def test_remote_reads_are_range_requests(storage):
    """Every GET of a band file is ranged (206), never the whole file (a HEAD gives the
    size), and no sidecar (.aux.xml, .ovr, directory listing) is asked for."""
    lon, lat = _centre(storage)
    chain = _chains(storage["http"])["true"]
    t = TMS.tile(lon, lat, 13)
    TileRenderer(storage["http"]).tile(chain, t.z, t.x, t.y)
    lines = storage["server"].requests()  # all of this module's reads so far
    assert lines, "no request reached the server"
    gets = [line for line in lines if '"GET ' in line]
    assert gets and all(line.startswith("206 ") and "range=bytes=" in line for line in gets), \
        lines
    assert all('"HEAD ' in line for line in lines if line not in gets)
    # only the band files themselves: no sidecar probe (.aux.xml, .ovr, .msk, .tfw, .wld...)
    # nor directory listing, although local files keep sidecar probing (GDAL settings)
    paths = [line.split('"')[1].split()[1] for line in lines]
    assert all(path.endswith(".tif") for path in paths), sorted(set(paths))


@needs_nginx
def test_remote_profiles_extract_and_batch_equal_local(storage, tmp_path):
    lon, lat = _centre(storage)
    p_local = profile(Collection("s2", catalog=storage["local"]), lon, lat, "(B08-B04)/(B08+B04)")
    p_http = profile(Collection("s2", catalog=storage["http"]), lon, lat, "(B08-B04)/(B08+B04)")
    assert p_http["value"].tolist() == p_local["value"].tolist()
    assert len(p_http) == 2
    box = {"type": "Polygon", "coordinates": [[[lon - .004, lat - .004], [lon + .004, lat - .004],
                                               [lon + .004, lat + .004], [lon - .004, lat + .004],
                                               [lon - .004, lat - .004]]]}
    poly_l = profile(Collection("s2", catalog=storage["local"]), geometry=box)
    poly_h = profile(Collection("s2", catalog=storage["http"]), geometry=box)
    assert poly_h["value"].tolist() == poly_l["value"].tolist()
    outs = {}
    for kind in ("local", "http", "s3"):
        chain = Collection("s2", catalog=storage[kind]).ids("D1").process().expression(
            "(B08-B04)/(B08+B04)")
        extract(chain, box, tmp_path / f"{kind}.tif", catalog=storage[kind])
        chain.to_cog(tmp_path / f"{kind}-batch.tif", bbox=(lon - .004, lat - .004, lon + .004,
                                                            lat + .004), catalog=storage[kind],
                     analytic=True)
        for suffix in ("", "-batch"):
            with rasterio.open(tmp_path / f"{kind}{suffix}.tif") as ds:
                outs[kind + suffix] = ds.read(masked=True)
    for suffix in ("", "-batch"):
        assert np.ma.count(outs["local" + suffix]) > 1000
        for kind in ("http", "s3"):
            np.testing.assert_array_equal(outs[kind + suffix].filled(-9),
                                          outs["local" + suffix].filled(-9))


@needs_nginx
@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is missing")
def test_https_over_http2_equals_local(storage, tmp_path):
    """https:// hrefs (nginx with TLS and HTTP/2): the same tiles as the local files, every
    GET ranged and over HTTP/2. The certificate is self-signed and the GDAL of rasterio's
    wheel ignored CURL_CA_BUNDLE pointing at it, so verification is off for this test."""
    server = StaticServer(storage["tmp"] / "root", tmp_path / "nginx", tls=True).start()
    rasterio.env.set_gdal_config("GDAL_HTTP_UNSAFESSL", "YES")
    try:
        items = [rehost(i, storage["tmp"] / "root", server.url) for i in storage["items"]]
        assert items[0].assets["B04"].href.startswith("https://127.0.0.1:")
        with _catalog(tmp_path / "https.sqlite", items) as cat:
            lon, lat = _centre(storage)
            local, remote = TileRenderer(storage["local"]), TileRenderer(cat)
            a, b = _chains(storage["local"])["ndvi"], _chains(cat)["ndvi"]
            for z in (11, 14):
                t = TMS.tile(lon, lat, z)
                np.testing.assert_array_equal(remote.tile(b, t.z, t.x, t.y).array.filled(0),
                                              local.tile(a, t.z, t.x, t.y).array.filled(0))
        gets = [line for line in server.requests() if '"GET ' in line]
        assert gets and all(line.startswith("206 ") and "protocol=HTTP/2.0" in line
                            for line in gets), gets
    finally:
        rasterio.env.set_gdal_config("GDAL_HTTP_UNSAFESSL", None)
        server.stop()


@pytest.fixture
def short_timeouts():
    """1 s per HTTP request, no retries, for this test only."""
    configure_gdal(gdal_options(timeout_s=1, retries=0))
    yield
    configure_gdal(GDAL_OPTIONS)


def test_hung_storage_times_out_naming_the_host(storage, short_timeouts):
    """A server that accepts and never answers: StorageTimeout naming it, within seconds."""
    silent = SilentServer()
    try:
        items = [rehost(i, storage["tmp"] / "root", silent.url) for i in storage["items"]]
        with _catalog(storage["tmp"] / "silent.sqlite", items) as cat:
            lon, lat = _centre(storage)
            t = TMS.tile(lon, lat, 12)
            started = time.monotonic()
            with pytest.raises(StorageTimeout, match=f"127.0.0.1:{silent.port}"):
                TileRenderer(cat).tile(_chains(cat)["true"], t.z, t.x, t.y)
            assert time.monotonic() - started < 8
    finally:
        silent.stop()


def test_stopped_storage_is_unavailable_naming_the_host(tmp_path, short_timeouts):
    """Storage that goes away mid-run: the tiles already read stay readable (cached), a new
    region fails with StorageUnavailable naming the host, not a hang or a crash."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    root = tmp_path / "root"
    x0, y0 = pyproj.Transformer.from_crs(4326, 32633, always_xy=True).transform(14.0, 50.0)
    item = make_item(root / "F", "F", epsg=32633, transform=from_origin(round(x0, -1),
                                                                         round(y0, -1), 10, 10),
                     bands={"B04": pattern((1024, 1024), 5)}, date=datetime(2021, 1, 1,
                                                                            tzinfo=UTC))
    server = StaticServer(root, tmp_path / "nginx").start()
    try:
        with _catalog(tmp_path / "c.sqlite", [rehost(item, root, server.url)]) as cat:
            r = TileRenderer(cat)
            chain = Collection("s2", catalog=cat).process().bands("B04").scale(0, 4000)
            bb = item.bbox
            first = TMS.tile(bb[0] + 0.002, bb[3] - 0.002, 15)
            assert r.tile(chain, first.z, first.x, first.y) is not None
            server.stop()
            other = TMS.tile(bb[2] - 0.002, bb[1] + 0.002, 15)
            with pytest.raises(StorageUnavailable, match=server.host) as err:
                r.tile(chain, other.z, other.x, other.y)
            assert not isinstance(err.value, StorageTimeout)
    finally:
        server.stop()


@needs_nginx
def test_stac_api_with_earth_search_layout_over_http(storage, tmp_path):
    """The whole path of a user pointing the app at a STAC API: items with Earth Search v1
    keys (red, nir) and baseline-04.00 offsets, hrefs on the HTTP server; the user's B04/B08
    and NDVI give the values computed here from the files with the offset applied."""
    from stacapi_server import make_stacapi_catalog

    items = []
    for item in storage["items"]:
        es = rehost(item, storage["tmp"] / "root", storage["server"].url)
        es.properties.update({"s2:processing_baseline": "04.00",
                              "earthsearch:boa_offset_applied": False})
        for old, new in (("B04", "red"), ("B08", "nir"), ("SCL", "scl")):
            asset = es.assets.pop(old)
            asset.extra_fields["eo:bands"] = [{"name": new, "common_name": new}]
            asset.extra_fields["raster:bands"] = [
                {"data_type": "uint16"} if new == "scl" else
                {"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": -0.1}]
            es.add_asset(new, asset)
        items.append(es)
    cat = make_stacapi_catalog({"sentinel-2-l2a": items},
                               [build_collection("sentinel-2-l2a", items)], tmp_path)
    try:
        lon, lat = _centre(storage)
        coll = Collection("sentinel-2-l2a", catalog=cat).ids("D1")
        r = TileRenderer(cat)
        got = r.point(coll.process().bands("B04", "B08"), lon, lat).values
        nd = r.point(coll.process().expression("(B08-B04)/(B08+B04)"), lon, lat).values[0]
        dn = []
        for band in ("B04", "B08"):
            with rasterio.open(storage["items"][1].assets[band].href) as ds:
                x, y = pyproj.Transformer.from_crs(4326, ds.crs, always_xy=True).transform(
                    lon, lat)
                dn.append(float(ds.read(1)[ds.index(x, y)]))
        assert got == pytest.approx([dn[0] - 1000, dn[1] - 1000])
        red, nir = (v * 1e-4 - 0.1 for v in dn)
        assert nd == pytest.approx((nir - red) / (nir + red), abs=1e-5)
    finally:
        cat.close()


def test_an_open_that_lasted_the_timeout_is_a_timeout_whatever_gdal_said(short_timeouts):
    """GDAL does not always raise its own error when a request times out; rasterio then
    reports the thread's previous GDAL message (CI saw an old TLS error of another host).
    An open that took the configured HTTP timeout is a timeout, named by its host."""
    from rasterio.errors import RasterioIOError

    from engine.storage import read_error
    stale = RasterioIOError("CURL error: OpenSSL SSL_read: unexpected eof while reading")
    href = "http://storage.example:8080/b/x.tif"
    err = read_error(href, stale, what="open", started=time.monotonic() - 1.0)
    assert isinstance(err, StorageTimeout) and "storage.example:8080" in str(err)
    quick = read_error(href, stale, what="open", started=time.monotonic())
    assert isinstance(quick, StorageUnavailable) and not isinstance(quick, StorageTimeout)
    assert isinstance(read_error(href, stale, what="open"), StorageUnavailable)


@needs_nginx
def test_first_open_of_a_remote_file_is_one_flight(storage):
    """Threads opening a remote file no thread opened yet send its HEAD and header GET
    once: the others wait for the first open, then open from GDAL's cache."""
    folder = storage["tmp"] / "root" / "fresh"
    folder.mkdir(exist_ok=True)
    with rasterio.open(folder / "one.tif", "w", driver="COG", width=64, height=64, count=1,
                       dtype="uint16", crs="EPSG:32633",
                       transform=from_origin(500_000, 5_560_000, 10, 10)) as dst:
        dst.write(np.arange(64 * 64, dtype="uint16").reshape(1, 64, 64))
    url = f"{storage['server'].url}/fresh/one.tif"
    configure_gdal()  # as the renderer does on start
    cache = HandleCache(size=8)
    barrier = threading.Barrier(6)
    got: list = []

    def borrow() -> None:
        barrier.wait()
        with cache.lend(url) as ds:
            got.append(int(ds.read(1, window=((0, 1), (0, 2)))[0, 1]))

    threads = [threading.Thread(target=borrow) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert got == [1] * 6
    mine = [line for line in storage["server"].requests() if "/fresh/one.tif " in line]
    assert sum('"HEAD ' in line for line in mine) == 1, "\n".join(mine)
    assert sum("range=bytes=0-" in line for line in mine) == 1, mine
    assert cache.stats()["opened"] >= 1
