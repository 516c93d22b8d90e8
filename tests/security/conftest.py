"""Fixtures of the security tests: those of the browser tests (demo catalog, chromium,
``serve_app``) reused from ``tests/ui``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

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
