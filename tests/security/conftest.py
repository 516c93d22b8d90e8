"""Fixtures of the security suite: the service tests' data (``tests/service/service_data``)
and the service built from Settings exactly as ``eoexplorer tiles``/``serve`` build it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "service"))

from service_data import Scene, build_catalog  # noqa: E402


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
