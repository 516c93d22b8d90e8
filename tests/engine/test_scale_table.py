"""Scale maps integer bands through a table of every value: its pixels must be exactly
those of the float32 formula, for per-band ranges, inverted ranges, gamma and time stacks."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from rio_tiler.models import ImageData

from engine.chain import visual
from engine.chain.raster import TimeStack
from engine.chain.visual import Scale

CASES = [{"min": [0], "max": [4000]},
         {"min": [-100, 5, 300], "max": [3000, 2000.5, 301]},
         {"min": [10], "max": [-500], "gamma": 2.2},
         {"min": [0], "max": [4000], "gamma": 0.7}]


def _formula(step: Scale, img):
    saved = visual._LUT_DTYPES
    visual._LUT_DTYPES = ()  # the float32 path
    try:
        return step(img)
    finally:
        visual._LUT_DTYPES = saved


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16"])
@pytest.mark.parametrize("kw", CASES)
def test_table_equals_formula(dtype, kw):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(7)
    data = rng.integers(info.min, info.max, (3, 64, 64), endpoint=True).astype(dtype)
    data[:, 0, :4] = [info.min, info.max, 0, 1]  # the extremes are in the table too
    mask = rng.random((3, 64, 64)) < 0.1
    for img in (ImageData(np.ma.MaskedArray(data, mask=mask)),
                TimeStack(np.ma.MaskedArray(np.stack([data, data[::-1]]),
                                            mask=np.stack([mask, mask])),
                          (datetime(2021, 1, 1, tzinfo=UTC), datetime(2021, 2, 1, tzinfo=UTC)),
                          ("a", "b", "c"))):
        step = Scale(**kw)
        got, want = step(img), _formula(step, img)
        assert got.array.dtype == want.array.dtype == np.uint8
        np.testing.assert_array_equal(got.array.data, want.array.data)
        np.testing.assert_array_equal(np.ma.getmaskarray(got.array),
                                      np.ma.getmaskarray(want.array))
        assert np.ma.getmaskarray(got.array).any()


def test_float_bands_keep_the_formula():
    img = ImageData(np.ma.MaskedArray(np.array([[[0.0, 0.5, np.nan, 2.0]]], np.float32)))
    out = Scale(min=[0], max=[1])(img)
    assert out.array.data.tolist() == [[[0, 128, 0, 255]]]
    assert np.ma.getmaskarray(out.array).tolist() == [[[False, False, True, False]]]
