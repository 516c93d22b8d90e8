"""`app.panelserve.served_app`: under `panel serve`, tiles come from EOX_SERVICE_URL when set
(no background service is started), else from one started once per process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = Path(os.environ.get("EOX_TEST_DEMO_DIR", ROOT / ".cache" / "demo"))
DB = DEMO / "catalog.sqlite"

pytestmark = pytest.mark.skipif(not DB.exists(), reason=f"no demo catalog at {DB}")


@pytest.fixture
def settings(monkeypatch, tmp_path):
    from app.launcher import stop_background
    from app.settings import Settings

    for key in [k for k in os.environ if k.startswith("EOX_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("EOX_CATALOG", str(DB))
    monkeypatch.setenv("EOX_DATA_DIR", str(DEMO / "data"))
    yield Settings
    stop_background()


def test_service_url_setting_is_used_without_starting_a_service(settings, monkeypatch):
    from app import launcher
    from app.panelserve import served_app

    monkeypatch.setenv("EOX_SERVICE_URL", "http://tiles.example.org:8000/")
    served_app()
    (server, backend), = launcher._services.values()
    assert server is None  # nothing started in this process
    assert backend.tile_url("abc") == \
        "http://tiles.example.org:8000/api/chains/abc/tiles/{Z}/{X}/{Y}.png"


def test_without_a_service_url_one_background_service_serves_every_session(settings):
    from app import launcher
    from app.panelserve import served_app
    from engine.config import default_service_url

    served_app()
    served_app()
    running = [server for server, _ in launcher._services.values() if server is not None]
    assert len(running) == 1 and running[0].running
    backend = launcher.background_backend(settings())
    assert backend.tile_url("abc").startswith(running[0].url.rstrip("/") + "/api/chains/abc/")
    assert default_service_url() == running[0].url  # export_html(path) uses it



def _pull_tile_urls(url: str) -> set[str]:
    """The chain tile URL templates of one new session of ``url`` (its document pulled over
    the websocket as a browser's would be, nothing drawn)."""
    import importlib
    import pkgutil

    import panel.models
    from bokeh.client import pull_session

    import components.shell  # noqa: F401 - our own Bokeh models, to deserialise the page

    for module in pkgutil.iter_modules(panel.models.__path__):
        importlib.import_module(f"panel.models.{module.name}")
    with pull_session(url=url) as session:
        return {m.url for m in session.document.models
                if isinstance(getattr(m, "url", None), str) and "/api/chains/" in m.url}


@pytest.mark.timeout(600)
def test_num_procs_sessions_get_tiles_from_their_process_background_service(tmp_path):
    """`panel serve --num-procs 2 --prefix /eox` without EOX_SERVICE_URL: each session's map
    gets absolute tile URLs of a background service, which answers them; sessions
    share their process's service (never more services than processes)."""
    import contextlib
    import signal
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "panel"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EOX_")}
    env.update(EOX_CATALOG=str(DB), EOX_DATA_DIR=str(DEMO / "data"))
    log = tmp_path / "panel-serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(exe), "serve", str(ROOT / "app" / "dashboard.py"), "--port", str(port),
             "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}",
             "--num-procs", "2", "--prefix", "/eox"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
            start_new_session=True)  # its own group: the forked servers stop with it
    page = f"http://127.0.0.1:{port}/eox/dashboard"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                if httpx.head(page, timeout=10).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "panel serve did not answer in 120 s"
            time.sleep(0.3)
        sessions = [_pull_tile_urls(page) for _ in range(3)]
        assert all(len(urls) == 1 for urls in sessions), sessions
        bases = {url.split("/api/chains/")[0] for urls in sessions for url in urls}
        assert 1 <= len(bases) <= 2, bases  # one service per process, not per session
        for urls in sessions:
            (template,) = urls
            assert template.startswith("http://127.0.0.1:")  # absolute: the prefix is Panel's
            tile = httpx.get(template.replace("{Z}/{X}/{Y}", "0/0/0"), timeout=120)
            assert tile.status_code == 200 and tile.headers["content-type"] == "image/png"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError):  # forked servers slow to stop
            os.killpg(proc.pid, signal.SIGKILL)
