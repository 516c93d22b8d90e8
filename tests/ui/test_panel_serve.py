"""`panel serve app/dashboard.py`: the same dashboard under Panel's own server and flags,
its tiles fetched cross-origin from a tile service started in the background (no
EOX_SERVICE_URL), also under `--prefix`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from tiles import TileWatch, free_port, serve_app

pytestmark = pytest.mark.ui

ROOT = Path(__file__).resolve().parents[2]


def start_panel_serve(catalog: Path, folder: Path, *, prefix: str = "",
                      env_extra: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start `panel serve app/dashboard.py` over ``catalog`` (without waiting for it);
    return the process and the page's URL."""
    port = free_port()
    log = folder / "panel-serve.log"
    exe = Path(sys.executable).parent / "panel"
    cmd = [str(exe), "serve", str(ROOT / "app" / "dashboard.py"), "--port", str(port),
           "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}"]
    if prefix:
        cmd += ["--prefix", prefix]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EOX_")}
    env.update(EOX_CATALOG=str(catalog), EOX_DATA_DIR=str(catalog.parent / "data"),
               **(env_extra or {}))
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
    return proc, f"http://127.0.0.1:{port}{prefix}/dashboard"


def wait_answering(proc: subprocess.Popen, url: str, log: Path, timeout: float = 90) -> None:
    """Return once the `panel serve` of ``url`` answers (fail if it exits or stays silent)."""
    parts = urlsplit(url)
    liveness = f"{parts.scheme}://{parts.netloc}{parts.path.rsplit('/', 1)[0]}/liveness"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"panel serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(liveness, timeout=2).is_success \
                    or httpx.head(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"panel serve did not answer within {timeout:.0f} s")
        time.sleep(0.3)


def stop(procs: list[subprocess.Popen]) -> None:
    """Terminate ``procs`` together (their shutdowns overlap), kill those that linger."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def open_once(url: str) -> None:
    """GET the page (Panel builds a session for it): its process starts its background tile
    service and imports what a page needs, as a first visitor would make it do."""
    try:
        httpx.get(url, timeout=120)
    except httpx.HTTPError:
        pass  # the test's own visit reports what is wrong


@pytest.fixture(scope="module")
def panel_servers(demo_catalog, tmp_path_factory):
    """The three `panel serve` set-ups of this module, started at once so that their
    start-ups overlap: without a prefix, with ``--prefix /eox`` (both with a background tile
    service), and with EOX_SERVICE_URL naming an `eoexplorer tiles` over the same catalog.
    Yields {"": url, "/eox": url, "service": (url, tiles_url)}."""
    folders = {name: tmp_path_factory.mktemp("panel-serve") for name in ("", "/eox", "service")}
    procs: dict[str, tuple[subprocess.Popen, str]] = {}
    try:
        for prefix in ("", "/eox"):
            procs[prefix] = start_panel_serve(demo_catalog, folders[prefix], prefix=prefix)
        with serve_app(demo_catalog, demo_catalog.parent / "data", folders["service"],
                       command="tiles") as tiles_url:
            procs["service"] = start_panel_serve(demo_catalog, folders["service"],
                                                 env_extra={"EOX_SERVICE_URL": tiles_url})
            for name, (proc, url) in procs.items():
                wait_answering(proc, url, folders[name] / "panel-serve.log")
            # the three first visits overlap too (each starts the page's stack in its process)
            with ThreadPoolExecutor(3) as pool:
                list(pool.map(open_once, [url for _, url in procs.values()]))
            yield {"": procs[""][1], "/eox": procs["/eox"][1],
                   "service": (procs["service"][1], tiles_url)}
    finally:
        stop([proc for proc, _ in procs.values()])


@pytest.mark.parametrize("prefix", ["", "/eox"])
def test_panel_serve_draws_tiles_and_tabs_work(panel_servers, page, prefix):
    tiles: list[tuple[str, str | None]] = []  # (url, Access-Control-Allow-Origin)
    page.on("response", lambda r: tiles.append(
        (r.url, r.headers.get("access-control-allow-origin"))) if "/tiles/" in r.url else None)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    url = panel_servers[prefix]
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


def test_panel_serve_fetches_tiles_from_eox_service_url(panel_servers, page):
    """With EOX_SERVICE_URL (an `eoexplorer tiles` over the same catalog), every tile comes
    from that service: the chains the page registers in-process are in its chain store."""
    url, tiles_url = panel_servers["service"]
    watch = TileWatch().attach(page)
    urls: list[str] = []
    page.on("response", lambda r: urls.append(r.url) if "/tiles/" in r.url else None)
    page.goto(url)
    assert watch.wait(page, lambda: len(watch.with_data()) >= 2, 60), watch.tiles[:5]
    assert urls and all(u.startswith(tiles_url + "/api/chains/") for u in urls), urls[:3]
