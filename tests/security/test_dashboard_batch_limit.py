"""Issue 18: the dashboard's Batch tab is limited like the API when others can reach it.
Visitors of a non-loopback server present no API key, so a run is capped at the API's
keyless limit for the same work (``extract_max_pixels``), not the CLI's 2e9 pixels."""

from __future__ import annotations

import pytest
from rasterio.crs import CRS

from app.auth import dashboard_batch_pixels
from app.settings import Settings
from app.state import resources
from engine.batch.plan import check_size
from engine.errors import InvalidInput
from engine.render import Grid


def _settings(tmp_path, address):
    return Settings(catalog=str(tmp_path / "c.sqlite"), data_dir=tmp_path, address=address,
                    extract_max_pixels=36_000_000)


def test_limit_follows_the_address(tmp_path):
    assert dashboard_batch_pixels(_settings(tmp_path, "127.0.0.1")) == 2_000_000_000
    assert dashboard_batch_pixels(_settings(tmp_path, "0.0.0.0")) == 36_000_000
    assert dashboard_batch_pixels(_settings(tmp_path, "192.0.2.7")) == 36_000_000
    small = _settings(tmp_path, "0.0.0.0").model_copy(update={"batch_max_pixels": 1000})
    assert dashboard_batch_pixels(small) == 1000  # never more than the operator's limit


def test_deployed_dashboard_refuses_a_2e9_pixel_run(tmp_path):
    backend = resources(_settings(tmp_path, "0.0.0.0")).backend
    assert backend.batch_max_pixels == 36_000_000
    huge = Grid(crs=CRS.from_epsg(3857), bounds=(0.0, 0.0, 44_721.0, 44_721.0),
                width=44_721, height=44_721)  # 2e9 px
    with pytest.raises(InvalidInput, match="limit of 36,000,000"):
        check_size(huge, dates=1, max_pixels=backend.batch_max_pixels)
