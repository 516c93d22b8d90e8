"""The tile service over a catalog whose hrefs are http:// URLs of nginx on 127.0.0.1:
tiles equal the service's over local files; when the storage stops mid-run, requests that
need files not read yet get 502 naming the host (what was read stays served), and when it
hangs 504 within the request timeout (never a 500, never a hang)."""

from __future__ import annotations

import shutil
import time

import morecantile
import pytest
from service_data import COLLECTION, ITEM_JULY, ITEM_JUNE, build_catalog, make_app, true_colour
from starlette.testclient import TestClient

from app.settings import Settings
from app.wiring import gdal_settings
from engine.catalog import Query, SQLiteCatalog
from engine.chain.store import ChainStore
from engine.ingest.items import build_collection
from engine.storage import GDAL_OPTIONS, configure_gdal, gdal_options
from service import create_service
from tests.http_storage import SilentServer, StaticServer, rehost

TMS = morecantile.tms.get("WebMercatorQuad")
pytestmark = pytest.mark.skipif(shutil.which("nginx") is None,
                                reason="nginx is not installed (apt-get install nginx-light)")


def _remote_app(local_db, root, base, db):
    with SQLiteCatalog(local_db) as local:
        items = [rehost(i, root, base) for i in local.search(Query(COLLECTION))]
    cat = SQLiteCatalog(db)
    cat.add_collection(build_collection(COLLECTION, items))
    cat.add_items(items, collection=COLLECTION)
    return create_service(cat, chain_store=ChainStore(db), cache_bytes=0)


@pytest.fixture
def short_timeouts():
    """1 s per HTTP request and no retries, as EOX_REMOTE_TIMEOUT_S=1 EOX_REMOTE_RETRIES=0."""
    configure_gdal(gdal_settings(Settings(remote_timeout_s=1, remote_retries=0)))
    yield
    configure_gdal(GDAL_OPTIONS)


def test_settings_reach_gdal():
    opts = gdal_settings(Settings(remote_timeout_s=7, remote_retries=4, remote_cache_mb=32,
                                  remote_file_cache_mb=1))
    assert opts == gdal_options(timeout_s=7, retries=4, cache_mb=32, handle_cache_mb=1)
    assert opts["GDAL_HTTP_TIMEOUT"] == "7" and opts["VSI_CACHE_SIZE"] == str(2**20)


def _tile_url(chain_id, lon, lat, z):
    t = TMS.tile(lon, lat, z)
    return f"/api/chains/{chain_id}/tiles/{t.z}/{t.x}/{t.y}.png"


def test_remote_service_then_storage_stops(tmp_path, short_timeouts):
    scene = build_catalog(tmp_path / "data")
    root = scene.folder
    server = StaticServer(root, tmp_path / "nginx").start()
    try:
        local = make_app(scene.db)
        remote = _remote_app(scene.db, root, server.url, tmp_path / "remote.sqlite")
        with TestClient(local) as lc, TestClient(remote) as rc:
            ids = [c.post("/api/chains", json=true_colour()).json()["id"] for c in (lc, rc)]
            with SQLiteCatalog(scene.db) as cat:
                w, s, e, n = cat.get_item(COLLECTION, ITEM_JUNE).bbox
            ne = (e - 0.1 * (e - w), n - 0.1 * (n - s))
            for z in (12, 15):
                got = rc.get(_tile_url(ids[1], *ne, z))
                want = lc.get(_tile_url(ids[0], *ne, z))
                assert got.status_code == want.status_code == 200, got.text
                assert got.content == want.content
            server.stop()  # the storage goes away mid-run
            july = rc.post("/api/chains", json=true_colour(ids=(ITEM_JULY,))).json()["id"]
            started = time.monotonic()
            r = rc.get(_tile_url(july, *ne, 12))  # files never read before
            assert r.status_code == 502, r.text
            body = r.json()
            assert body["type"] == "StorageUnavailable" and server.host in body["detail"]
            r = rc.get("/api/profile", params={"collection": COLLECTION, "lon": ne[0],
                                               "lat": ne[1], "mask_clouds": "false"})
            assert r.status_code == 502 and server.host in r.json()["detail"], r.text
            assert rc.get(_tile_url(ids[1], *ne, 15)).status_code == 200  # cached: still served
            assert time.monotonic() - started < 10
    finally:
        server.stop()


def test_hung_storage_is_a_504_naming_the_host(tmp_path, short_timeouts):
    scene = build_catalog(tmp_path / "data")
    silent = SilentServer()
    try:
        app = _remote_app(scene.db, scene.folder, silent.url, tmp_path / "remote.sqlite")
        with TestClient(app) as client, SQLiteCatalog(scene.db) as cat:
            w, s, e, n = cat.get_item(COLLECTION, ITEM_JUNE).bbox
            chain_id = client.post("/api/chains", json=true_colour()).json()["id"]
            started = time.monotonic()
            r = client.get(_tile_url(chain_id, (w + e) / 2, (s + n) / 2, 13))
            assert r.status_code == 504, r.text
            assert r.json()["type"] == "StorageTimeout"
            assert f"127.0.0.1:{silent.port}" in r.json()["detail"]
            assert time.monotonic() - started < 10
    finally:
        silent.stop()
