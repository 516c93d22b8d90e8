"""Issue 18: the dashboard's pages carry a Content-Security-Policy (script nonces: injected
markup cannot run) and say who may frame them; the full dashboard only its own origin by
default, the embed page the configured sites. The page still loads and draws tiles under it
(tests/security/test_dashboard_xss.py and test_dashboard_login.py run Chromium on it)."""

from __future__ import annotations

import re

from dashboard_client import get_page
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from app.pagesecurity import PageGuard, basemap_origin


def _directives(policy: str) -> dict[str, str]:
    return dict(part.strip().split(" ", 1) for part in policy.split(";"))


def test_served_page_policy(server):
    r = get_page(server)
    assert r.status_code == 200
    csp = _directives(r.headers["content-security-policy"])
    nonce = re.search(r"'nonce-([^']+)'", csp["script-src"]).group(1)
    assert "'unsafe-inline'" not in csp["script-src"]
    assert csp["frame-ancestors"] == "'self'" and r.headers["x-frame-options"] == "SAMEORIGIN"
    assert csp["object-src"] == "'none'" and csp["base-uri"] == "'self'"
    scripts = re.findall(r"<script\b[^>]*>", r.text)
    assert scripts and all(f'nonce="{nonce}"' in tag for tag in scripts), scripts
    # a fresh nonce per response
    again = get_page(server).headers["content-security-policy"]
    assert f"'nonce-{nonce}'" not in again
    # the embed page may be framed anywhere by default (README: iframes from any site)
    embed = get_page(server, "/?embed=true")
    embed_csp = _directives(embed.headers["content-security-policy"])
    assert "frame-ancestors" not in embed_csp and "x-frame-options" not in embed.headers
    assert "'nonce-" in embed_csp["script-src"]
    # the API is not a page: no page policy, its JSON untouched
    api = get_page(server, "/api/collections")
    assert api.status_code == 200 and "content-security-policy" not in api.headers


def _app() -> Starlette:
    async def page(request):
        return HTMLResponse("<html><head><script>var a=1</script><SCRIPT src='/s.js'>"
                            "</SCRIPT></head><body>map</body></html>")

    async def api(request):
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/", page), Route("/api/x", api)])


def test_frame_ancestors_are_configurable():
    app = PageGuard(_app(), frame_ancestors=["'none'"],
                    embed_frame_ancestors=["https://intranet.example", "'self'"],
                    image_sources=basemap_origin("https://{s}.tile.example.org/{z}/{x}/{y}.png"))
    with TestClient(app) as c:
        full = c.get("/")
        csp = _directives(full.headers["content-security-policy"])
        assert csp["frame-ancestors"] == "'none'" and full.headers["x-frame-options"] == "DENY"
        assert "https://*.tile.example.org" in csp["img-src"].split()  # {s}: any subdomain
        assert full.text.count("nonce=") == 2
        assert int(full.headers["content-length"]) == len(full.content)
        embed = c.get("/?embed=1")
        csp = _directives(embed.headers["content-security-policy"])
        assert csp["frame-ancestors"] == "https://intranet.example 'self'"
        assert "x-frame-options" not in embed.headers
        assert "content-security-policy" not in c.get("/api/x").headers


def test_basemap_origin():
    assert basemap_origin(None) == []
    assert basemap_origin("https://tile.openstreetmap.org/{z}/{x}/{y}.png") == [
        "https://tile.openstreetmap.org"]
    assert basemap_origin("https://tiles.{s}.example/{z}/{x}/{y}.png") == ["https:"]
