"""The offline base map's tiles (issue 14 item 2): land, borders and names, no download."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from engine.basemap import LAND, SEA, render_tile


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_world_tile_has_land_sea_and_names():
    img = _pixels(render_tile(0, 0, 0))
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert tuple(LAND[:3]) in colours and tuple(SEA[:3]) in colours
    assert len(colours) > 10  # borders and anti-aliased names, not two flat colours


def test_a_city_is_named_where_it_is():
    # Berlin at zoom 8 lies in tile 137/83: bright text pixels near its position
    img = _pixels(render_tile(8, 137, 83))
    assert (img.sum(axis=2) > 600).sum() > 20
    ocean = _pixels(render_tile(8, 0, 100))  # the middle of the Pacific: all sea
    assert (ocean == SEA[:3]).all()


@pytest.mark.parametrize("path, word", [("/api/basemap/23/0/0.png", "less than or equal"),
                                        ("/api/basemap/2/4/0.png", "0..3"),
                                        ("/api/basemap/x/0/0.png", "integer")])
def test_bad_tiles_are_400s_naming_the_problem(client, path, word):
    r = client.get(path)
    assert r.status_code in (400, 422) and word in r.text


def test_route_serves_png_with_cache_header(client):
    r = client.get("/api/basemap/3/4/2.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert "max-age" in r.headers["cache-control"]
    assert _pixels(r.content).shape == (256, 256, 3)
