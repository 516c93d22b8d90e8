"""Issue #18 item 7 and the service's headers: absolute server paths stay out of answers
unless the operator asks (EOX_EXPOSE_PATHS), and every answer carries the security
headers (nosniff; a CSP with frame-ancestors on the service's own HTML)."""

from __future__ import annotations

import pytest
from service_data import COLLECTION, ITEM_JUNE, true_colour
from starlette.testclient import TestClient

from app.wiring import build_service


def app_client(settings_for, **fields):
    return TestClient(build_service(settings_for(**fields)), base_url="http://localhost",
                      raise_server_exceptions=False)


def test_no_absolute_path_in_health_search_collections_or_errors(settings_for, scene):
    root = str(scene.db.parent)
    with app_client(settings_for) as c:
        health = c.get("/healthz")
        assert health.json()["catalog"]["location"] == ".../catalog.sqlite"
        search = c.get("/api/search", params={"collection": COLLECTION})
        hrefs = [a["href"] for f in search.json()["features"] for a in f["assets"].values()]
        assert hrefs and all(h.startswith(".../") and h.endswith(".tif") for h in hrefs)
        collection = c.get(f"/api/collections/{COLLECTION}")
        cid = c.post("/api/chains", json=true_colour(ids=(ITEM_JUNE,))).json()["id"]
        chain = c.get(f"/api/chains/{cid}")
        for r in (health, search, collection, c.get("/api/collections"), chain):
            assert r.status_code == 200 and root not in r.text, r.url


def test_an_error_about_a_file_names_it_without_its_folder(settings_for, tmp_path):
    import shutil

    from service_data import build_catalog

    scene = build_catalog(tmp_path / "own")
    with app_client(settings_for, catalog=str(scene.db)) as c:
        cid = c.post("/api/chains", json=true_colour()).json()["id"]
        shutil.rmtree(scene.folder)
        r = c.get(f"/api/chains/{cid}/tiles/14/8875/5550.png")
        assert r.status_code == 424
        assert str(tmp_path) not in r.text and f"{ITEM_JUNE}_B0" in r.json()["detail"]


def test_the_operator_may_show_paths(settings_for, scene):
    with app_client(settings_for, expose_paths=True) as c:
        assert c.get("/healthz").json()["catalog"]["location"] == str(scene.db)
        search = c.get("/api/search", params={"collection": COLLECTION}).json()
        assert str(scene.folder) in search["features"][0]["assets"]["B04"]["href"]


def test_show_code_names_the_catalog_without_its_folder(settings_for, scene):
    from engine.security.redact import shown_path

    build_service(settings_for())
    assert shown_path(str(scene.db)) == ".../catalog.sqlite"
    build_service(settings_for(expose_paths=True))
    assert shown_path(str(scene.db)) == str(scene.db)


@pytest.mark.parametrize("path", ["/healthz", "/api/collections", "/openapi.json",
                                  "/api/chains/nope", "/docs"])
def test_every_answer_says_nosniff(settings_for, path):
    with app_client(settings_for) as c:
        r = c.get(path)
        assert r.headers["x-content-type-options"] == "nosniff", path


def test_tiles_say_nosniff(settings_for):
    with app_client(settings_for) as c:
        cid = c.post("/api/chains", json=true_colour()).json()["id"]
        r = c.get(f"/api/chains/{cid}/tiles/14/8875/5550.png")
        assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_services_html_cannot_be_framed_by_other_sites(settings_for, path):
    with app_client(settings_for) as c:
        r = c.get(path)
        assert r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'self'" in csp and "object-src 'none'" in csp
        assert r.headers["x-frame-options"] == "SAMEORIGIN"
