"""`panel serve app/dashboard.py`: the same dashboard under Panel's own server and flags,
its tiles fetched cross-origin from a tile service started in the background (no
EOX_SERVICE_URL), also under `--prefix`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from tiles import TileWatch, free_port, serve_app

pytestmark = pytest.mark.ui

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def panel_serve(catalog: Path, folder: Path, *flags: str, prefix: str = "",
                env_extra: dict[str, str] | None = None):
    """Run `panel serve app/dashboard.py` over ``catalog``; yield the page's URL."""
    port = free_port()
    log = folder / "panel-serve.log"
    exe = Path(sys.executable).parent / "panel"
    cmd = [str(exe), "serve", str(ROOT / "app" / "dashboard.py"), "--port", str(port),
           "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}", *flags]
    if prefix:
        cmd += ["--prefix", prefix]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EOX_")}
    env.update(EOX_CATALOG=str(catalog), EOX_DATA_DIR=str(catalog.parent / "data"),
               **(env_extra or {}))
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
    url = f"http://127.0.0.1:{port}{prefix}/dashboard"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"panel serve exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}{prefix}/liveness", timeout=2).is_success \
                        or httpx.head(url, timeout=2).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("panel serve did not answer within 60 s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.parametrize("prefix", ["", "/eox"])
def test_panel_serve_draws_tiles_and_tabs_work(demo_catalog, page, tmp_path, prefix):
    tiles: list[tuple[str, str | None]] = []  # (url, Access-Control-Allow-Origin)
    page.on("response", lambda r: tiles.append(
        (r.url, r.headers.get("access-control-allow-origin"))) if "/tiles/" in r.url else None)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    with panel_serve(demo_catalog, tmp_path, prefix=prefix) as url:
        watch = TileWatch().attach(page)
        response = page.goto(url)
        assert response is not None and response.status == 200
        # the first open draws the newest demo scene, its tiles from the background service
        assert watch.wait(page, lambda: len(watch.with_data()) >= 2, 60), watch.tiles[:5]
        statuses = {t.status for t in watch.tiles}
        assert statuses <= {200, 204} and 200 in statuses, statuses
        page_port = urlsplit(url).port
        ports = {urlsplit(u).port for u, _ in tiles}
        assert page_port not in ports and len(ports) == 1, (url, ports)
        assert all(origin == "*" for _, origin in tiles), tiles[:3]  # cross-origin GETs
        # a tab works: the Zoom tab shows its buttons, and zooming fetches new tiles
        page.locator(".bk-tab", has_text="Zoom").first.click()
        button = page.get_by_role("button", name="Zoom to the selected scene(s)")
        button.wait_for(timeout=20_000)
        before = len(watch.tiles)
        button.click()
        assert watch.wait(page, lambda: len(watch.tiles) > before, 30)
        assert not errors, errors


def test_panel_serve_fetches_tiles_from_eox_service_url(demo_catalog, page, tmp_path):
    """With EOX_SERVICE_URL (an `eoexplorer tiles` over the same catalog), every tile comes
    from that service: the chains the page registers in-process are in its chain store."""
    with serve_app(demo_catalog, demo_catalog.parent / "data", tmp_path,
                   command="tiles") as tiles_url, \
            panel_serve(demo_catalog, tmp_path, env_extra={"EOX_SERVICE_URL": tiles_url}) as url:
        watch = TileWatch().attach(page)
        urls: list[str] = []
        page.on("response", lambda r: urls.append(r.url) if "/tiles/" in r.url else None)
        page.goto(url)
        assert watch.wait(page, lambda: len(watch.with_data()) >= 2, 60), watch.tiles[:5]
        assert urls and all(u.startswith(tiles_url + "/api/chains/") for u in urls), urls[:3]
