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
