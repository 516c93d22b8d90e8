"""Issue 18 item 2: the Overlay tab opens a file only with the driver its name declares.

The attack: an OGR VRT uploaded as ``fields.json`` whose source is ``CSV:/etc/passwd`` put
the server's password file on the map; with a ``/vsicurl/`` source the server fetched a URL.
Both, under every accepted suffix, must be refused without reading anything outside the
upload, and names carrying GDAL prefixes must be refused before GDAL sees them.
"""

from __future__ import annotations

import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from components.backend import Backend
from components.overlay import OverlayPanel
from components.state import AppState
from engine.catalog import SQLiteCatalog
from engine.chain.store import ChainStore
from engine.errors import InvalidInput
from engine.render import TileRenderer
from engine.vector import read_vector


def vrt(source: str) -> bytes:
    """The attack file: an OGR VRT turning ``source`` (a CSV) into point features."""
    return f"""<OGRVRTDataSource>
  <OGRVRTLayer name="stolen">
    <SrcDataSource>{source}</SrcDataSource>
    <SrcSQL dialect="sqlite">SELECT 'POINT(1 2)' AS WKT, * FROM passwd</SrcSQL>
    <GeometryField encoding="WKT" field="WKT"/>
    <LayerSRS>EPSG:4326</LayerSRS>
  </OGRVRTLayer>
</OGRVRTDataSource>""".encode()


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def overlay(tmp_path):
    db = tmp_path / "catalog.sqlite"
    catalog = SQLiteCatalog(db)
    backend = Backend(catalog=catalog, chain_store=ChainStore(db),
                      renderer=TileRenderer(catalog), raster_dirs=(tmp_path,))
    return OverlayPanel(state=AppState(backend=backend))


@pytest.fixture
def web():
    """A local HTTP server counting the requests it gets (a /vsicurl/ fetch would be one)."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            body = b"name,x\nsecret,1\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", hits
    srv.shutdown()


SUFFIXES = ("fields.json", "fields.geojson", "fields.kml", "fields.gpkg", "fields.shp")


@pytest.mark.parametrize("name", SUFFIXES)
def test_vrt_reading_etc_passwd_is_refused(overlay, name):
    assert overlay.load_bytes(vrt("CSV:/etc/passwd"), name) is None
    notice = overlay.state.notice
    assert notice.level == "error" and "is not a" in notice.text, notice.text
    assert not overlay.overlays and "root:" not in notice.text
    with pytest.raises(InvalidInput, match="is not a"):
        read_vector(vrt("/etc/passwd"), filename=name)


def test_vrt_inside_a_zipped_shapefile_is_refused(overlay):
    assert overlay.load_bytes(_zip("fields.shp", vrt("CSV:/etc/passwd")), "fields.zip") is None
    assert "is not a zipped Shapefile" in overlay.state.notice.text


@pytest.mark.parametrize("name", ("fields.json", "fields.kml", "fields.shp"))
def test_vsicurl_source_is_never_fetched(overlay, web, name):
    url, hits = web
    assert overlay.load_bytes(vrt(f"/vsicurl/{url}/passwd.csv"), name) is None
    assert overlay.state.notice.level == "error"
    assert hits == []


@pytest.mark.parametrize("name", ("/vsicurl/http://127.0.0.1:9/x.geojson",
                                  "CSV:/etc/passwd.json", "/vsizip//tmp/a.zip/x.shp",
                                  "PG:dbname=eox.gpkg"))
def test_gdal_names_are_refused(overlay, tmp_path, name):
    ok = json.dumps({"type": "Point", "coordinates": [1, 2]}).encode()
    with pytest.raises(InvalidInput) as err:
        read_vector(ok, filename=name)
    assert "not accepted" in str(err.value) and ".geojson" in err.value.choices
    assert overlay.load_path(name) is None
    assert overlay.state.notice.level == "error" and "not accepted" in overlay.state.notice.text


def test_real_files_still_load(overlay, tmp_path):
    fc = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"a": 1},
          "geometry": {"type": "Point", "coordinates": [13.4, 52.5]}}]}
    ov = overlay.load_bytes(b"\xef\xbb\xbf  " + json.dumps(fc).encode(), "Fields v2.json")
    assert ov is not None and ov.layer.count == 1 and ov.layer.name == "Fields v2"
    kml = (b'<?xml version="1.0" encoding="UTF-8"?>\n<!-- exported -->\n'
           b'<kml xmlns="http://www.opengis.net/kml/2.2"><Document><Placemark><name>p</name>'
           b"<Point><coordinates>13.4,52.5</coordinates></Point></Placemark></Document></kml>")
    assert overlay.load_bytes(kml, "p.kml") is not None, overlay.state.notice
    (tmp_path / "f.geojson").write_text(json.dumps(fc))
    assert overlay.load_path("f.geojson") is not None
