"""Multi-temporal composites as chain sources (median, least-cloudy, max-NDVI), with clouds
masked per pixel from SCL, against numpy computed here over a 4-date synthetic collection
of real COGs in a real SQLiteCatalog. Rendered on the COGs' own grid (no resampling)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from rasterio.transform import from_origin
from render_fixtures import make_catalog, make_item

from engine.collection import Collection
from engine.render import TileRenderer

EPSG = 32633
SIZE = 32
ORIGIN = (500_000.0, 5_550_000.0)
BOUNDS = (ORIGIN[0], ORIGIN[1] - 10 * SIZE, ORIGIN[0] + 10 * SIZE, ORIGIN[1])
CLOUD_COVER = (40.0, 10.0, 70.0, 25.0)
CLOUDY = (3, 8, 9, 10)


def build_series(folder, *, name="series", dates=None, cloud_cover=CLOUD_COVER, seed=7,
                 constant=False):
    """A collection of len(cloud_cover) dates: B04, B08 (uint16, nodata 0) and SCL.

    Returns (catalog, arrays) with arrays["B04"|"B08"|"SCL"] of shape (t, y, x), in date order.
    Cloudy pixels get a high NDVI, so a composite that ignored the mask would pick them.
    ``constant``: B04 = 1000 * (t + 1) everywhere and no clouds (for video frame checks).
    """
    rng = np.random.default_rng(seed)
    n = len(cloud_cover)
    dates = dates or [datetime(2021, 5, 1 + 7 * t, 10, tzinfo=UTC) for t in range(n)]
    b04 = rng.integers(300, 3000, size=(n, SIZE, SIZE)).astype(np.uint16)
    b08 = rng.integers(300, 5000, size=(n, SIZE, SIZE)).astype(np.uint16)
    scl = rng.choice(np.array([4, 5, 6, 7, 3, 8, 9, 10], np.uint8), size=(n, SIZE, SIZE),
                     p=[0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    cloudy = np.isin(scl, CLOUDY)
    b08[cloudy] = 6000  # bright and "green": the highest NDVI, if clouds were not masked
    b04[cloudy] = 500
    b04[0, :4, :4] = b08[0, :4, :4] = 0  # a nodata corner on the first date
    if constant:
        b04 = np.stack([np.full((SIZE, SIZE), 1000 * (t + 1), np.uint16) for t in range(n)])
        b08 = b04 + 1000
        scl = np.full_like(scl, 4)
    transform = from_origin(*ORIGIN, 10, 10)
    items = [make_item(folder / f"d{t}", f"{name}-{t}", epsg=EPSG, transform=transform,
                       bands={"B04": b04[t], "B08": b08[t], "SCL": scl[t]}, date=dates[t],
                       cloud_cover=cloud_cover[t]) for t in range(n)]
    catalog = make_catalog(folder / "catalog.sqlite", {name: items})
    return catalog, {"B04": b04, "B08": b08, "SCL": scl}


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    catalog, arrays = build_series(tmp_path_factory.mktemp("series"))
    yield catalog, arrays, TileRenderer(catalog)
    catalog.close()


def render(renderer, chain):
    img = renderer.render_bbox(chain, BOUNDS, SIZE, SIZE, crs=f"EPSG:{EPSG}",
                               bbox_crs=f"EPSG:{EPSG}", analytic=True)
    assert img is not None
    return img.array


def clear(arrays):
    """(t, y, x): the pixel is valid (not nodata) and not cloudy."""
    return (arrays["B04"] > 0) & (arrays["B08"] > 0) & ~np.isin(arrays["SCL"], CLOUDY)


def test_native_grid_render_is_identity(series):
    catalog, arrays, r = series
    coll = Collection("series", catalog=catalog).ids("series-1")
    out = render(r, coll.process().bands("B04"))
    assert np.array_equal(out[0].data, arrays["B04"][1])


def test_median_with_clouds_masked(series):
    catalog, arrays, r = series
    chain = Collection("series", catalog=catalog).process(mosaic="median").bands(
        "B04", "B08").mask(cloud=True)
    out = render(r, chain)
    ok = clear(arrays)
    for i, band in enumerate(("B04", "B08")):
        exp = np.ma.median(np.ma.MaskedArray(arrays[band].astype(float), mask=~ok), axis=0)
        got = out[i]
        assert np.array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(exp))
        assert np.allclose(got.compressed(), exp.compressed())  # exact halves, not truncated
    assert (~ok).any(axis=0).any()


def test_least_cloudy_with_clouds_masked(series):
    catalog, arrays, r = series
    chain = Collection("series", catalog=catalog).process(mosaic="least_cloudy").bands(
        "B04").mask(cloud=True)
    out = render(r, chain)[0]
    ok = clear(arrays)
    exp = np.ma.masked_all((SIZE, SIZE), dtype=np.uint16)
    for t in np.argsort(CLOUD_COVER):  # least cloudy scene first, gaps from the next
        take = ok[t] & np.ma.getmaskarray(exp)
        exp[take] = arrays["B04"][t][take]
    assert np.array_equal(np.ma.getmaskarray(out), np.ma.getmaskarray(exp))
    assert np.array_equal(out.compressed(), exp.compressed())
    # pixels the least cloudy scene lacks really come from other dates
    best = int(np.argmin(CLOUD_COVER))
    assert (~ok[best] & ~np.ma.getmaskarray(exp)).sum() > 50


def test_max_ndvi_with_clouds_masked(series):
    catalog, arrays, r = series
    coll = Collection("series", catalog=catalog)
    ndvi_expr = "(B08-B04)/(B08+B04)"
    chain = coll.process(mosaic="max", mosaic_expression=ndvi_expr).bands(
        "B04", "B08").mask(cloud=True)
    out = render(r, chain)
    ok = clear(arrays)
    b04, b08 = arrays["B04"].astype(np.float32), arrays["B08"].astype(np.float32)
    with np.errstate(all="ignore"):
        ndvi = np.where(ok, (b08 - b04) / (b08 + b04), -np.inf)
    best = np.argmax(ndvi, axis=0)
    none = ~ok.any(axis=0)
    top2 = np.sort(ndvi, axis=0)[-2:]
    with np.errstate(invalid="ignore"):  # -inf - -inf where no date is clear
        clear_winner = (top2[1] - top2[0] > 1e-5) & ~none  # skip float32 near-ties
    assert clear_winner.sum() > SIZE * SIZE * 0.8
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for i, band in enumerate(("B04", "B08")):
        exp = arrays[band][best, yy, xx]
        assert np.array_equal(out[i].data[clear_winner], exp[clear_winner])
        assert np.array_equal(np.ma.getmaskarray(out[i]), none)
    # the max NDVI value itself, per pixel, as a chain expression after the composite
    value = render(r, chain.expression(ndvi_expr))[0]
    exp_value = np.max(ndvi, axis=0)
    assert np.allclose(value.data[clear_winner], exp_value[clear_winner], atol=1e-6)
    # without the cloud mask the bright cloudy pixels would win
    unmasked = render(r, coll.process(mosaic="max", mosaic_expression=ndvi_expr).bands(
        "B04", "B08"))
    assert (unmasked[1].data == 6000).sum() > (out[1].data == 6000).sum() + 100


def test_time_stack_median_matches_mosaic_median(series):
    catalog, _, r = series
    coll = Collection("series", catalog=catalog)
    stack = coll.process_multi(["B04"], times=True).mask(cloud=True).reduce("median")
    mosaic = coll.process(mosaic="median").bands("B04").mask(cloud=True)
    a, b = render(r, stack)[0], render(r, mosaic)[0]
    assert np.array_equal(np.ma.getmaskarray(a), np.ma.getmaskarray(b))
    assert np.allclose(a.compressed(), b.compressed())
