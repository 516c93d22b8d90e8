"""Issue #18: text that reaches GDAL (chain fields, paths, STAC hrefs at render time) is
refused when GDAL would read it as an instruction: /vsi* file systems, driver and
connection prefixes (CSV:, PG:, NETCDF:...), VRT files, whatever their names say."""

from __future__ import annotations

import http.server
import json
import sqlite3
import threading

import pytest
from service_data import COLLECTION, ITEM_JUNE, true_colour
from starlette.testclient import TestClient

from app.wiring import build_service
from engine.errors import DataUnavailable, InvalidInput
from engine.security.gdal_paths import check_gdal_path, open_raster

REFUSED = [
    "/vsicurl/http://127.0.0.1/x.tif", "/VSIZIP//tmp/a.zip/b.tif", "/vsistdin/",
    "/data//vsimem/x", "vsis3/bucket/x.tif", "CSV:/etc/passwd", "PG:dbname=eox",
    "NETCDF:/data/x.nc:var", "GPKG:/tmp/a.gpkg:t", "WMS:http://x", "HDF5:/a.h5://b",
    "/data/scene.vrt", "/data/scene.VRT?x=1", "https://example.org/a.vrt", "", "a\x00b",
    "ftp://example.org/x.tif", "a\nb",
]
ACCEPTED = ["/data/cogs/B04.tif", "cogs/B04.tif", "https://example.org/x.tif",
            "file:///data/x.tif", "C:\\data\\x.tif", "/data/a:b/x.tif"]


@pytest.mark.parametrize("text", REFUSED)
def test_refused(text):
    with pytest.raises(InvalidInput) as err:
        check_gdal_path(text, what="href")
    assert "href" in str(err.value)


@pytest.mark.parametrize("text", ACCEPTED)
def test_accepted(text):
    assert check_gdal_path(text) == text


def test_urls_can_be_refused_where_only_files_make_sense():
    with pytest.raises(InvalidInput, match="URLs are not accepted"):
        check_gdal_path("https://example.org/x.tif", allow_urls=False)


def test_a_vrt_named_tif_is_not_opened(scene, tmp_path):
    vrt = tmp_path / "innocent.tif"
    vrt.write_text(_vrt_of(scene.folder / f"{ITEM_JUNE}_B04.tif"))
    with pytest.raises(DataUnavailable, match="not a GeoTIFF"):
        open_raster(str(vrt))
    with open_raster(str(scene.folder / f"{ITEM_JUNE}_B04.tif")) as ds:
        assert ds.driver == "GTiff"


def test_raster_layers_refuse_gdal_instructions(tmp_path):
    from engine.batch.largeraster import open_for_screen

    with pytest.raises(InvalidInput, match="virtual file systems"):
        open_for_screen("/vsicurl/http://127.0.0.1:9/x.tif", None, 100, 100)


def _vrt_of(source) -> str:
    return (f'<VRTDataset rasterXSize="512" rasterYSize="512"><VRTRasterBand dataType="UInt16" '
            f'band="1"><SimpleSource><SourceFilename relativeToVRT="0">{source}'
            "</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>"
            "</VRTDataset>")


class _Hits(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):  # http.server's name
        type(self).hits += 1
        self.send_response(404)
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def listener():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hits)
    _Hits.hits = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def _set_href(db, href: str) -> None:
    """Make the June item's B04 asset point at ``href`` (what a hostile remote catalog,
    or an edited one, would answer)."""
    with sqlite3.connect(db) as con:
        (text,) = con.execute("SELECT json FROM items WHERE id = ?", (ITEM_JUNE,)).fetchone()
        item = json.loads(text)
        item["assets"]["B04"]["href"] = href
        con.execute("UPDATE items SET json = ? WHERE id = ?", (json.dumps(item), ITEM_JUNE))


@pytest.mark.parametrize("kind", ["vsicurl", "csv", "vrt"])
def test_catalog_hrefs_are_checked_at_render_time(tmp_path, settings_for, listener, kind):
    from service_data import build_catalog

    scene = build_catalog(tmp_path / "own", items=(ITEM_JUNE,))
    vrt = tmp_path / "looks_like_a_cog.tif"
    vrt.write_text(_vrt_of(scene.folder / f"{ITEM_JUNE}_B02.tif"))
    href = {"vsicurl": f"/vsicurl/{listener}/x.tif", "csv": "CSV:/etc/passwd",
            "vrt": str(vrt)}[kind]
    _set_href(scene.db, href)
    app = build_service(settings_for(catalog=str(scene.db)))
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as c:
        cid = c.post("/api/chains", json=true_colour()).json()["id"]
        for r in (c.get(f"/api/chains/{cid}/tiles/14/8875/5550.png"),
                  c.get(f"/api/chains/{cid}/point?lon=15.02&lat=50.09"),
                  c.get("/api/profile", params={"collection": COLLECTION, "lon": 15.02,
                                                "lat": 50.09, "expression": "B04/1000",
                                                "mask_clouds": False})):
            assert r.status_code == 424, (r.url, r.status_code, r.text[:300])
            assert r.json()["type"] == "DataUnavailable"
            assert "/etc/passwd" not in r.text or "CSV" in r.json()["detail"]
    assert _Hits.hits == 0  # the server never fetched the URL
