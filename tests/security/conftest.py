"""Fixtures of the security suite: the service tests' data (``tests/service/service_data``)
and the service built from Settings exactly as ``eoexplorer tiles``/``serve`` build it; and
for the dashboard tests those of the browser tests (demo catalog, chromium, ``serve_app``)
reused from ``tests/ui``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "service"))

from service_data import Scene, build_catalog

UI = Path(__file__).resolve().parents[1] / "ui"
if str(UI) not in sys.path:
    sys.path.insert(0, str(UI))
_spec = importlib.util.spec_from_file_location("eox_ui_fixtures", UI / "conftest.py")
_ui = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ui)

demo_catalog = _ui.demo_catalog
page = _ui.page
artifacts = _ui.artifacts
server = _ui.server


@pytest.fixture(scope="module")
def browser():
    """Chromium per module: Playwright's event loop must not outlive these tests (later
    test folders run asyncio.run in the main thread)."""
    yield from _ui.chromium()


@pytest.fixture(scope="session")
def scene(tmp_path_factory) -> Scene:
    return build_catalog(tmp_path_factory.mktemp("security-scene"))


@pytest.fixture
def settings_for(scene, tmp_path):
    """``Settings`` over the scene's catalog, sandbox off, plus any field given."""
    from app.settings import Settings

    def make(**fields):
        base = {"catalog": str(scene.db), "data_dir": tmp_path, "functions_enabled": False,
                "tile_disk_cache_mb": 0}
        return Settings(**{**base, **fields})

    return make
