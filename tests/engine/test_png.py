"""The PNG writer (engine.render.encode.png): what Pillow and GDAL decode equals the pixels,
for every colour type, sizes down to 1x1, stored and deflated; bad input refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from rasterio.io import MemoryFile
from rio_tiler.models import ImageData

from engine.errors import ChainError
from engine.render.encode import encode, png

MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def pillow(data: bytes) -> tuple[str, np.ndarray]:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im.mode, np.asarray(im)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (256, 256), (37, 301)])
@pytest.mark.parametrize("level", [0, 1, 6])
def test_pillow_reads_back_the_pixels(channels, shape, level):
    rng = np.random.default_rng(channels * 1000 + shape[0] + level)
    pixels = rng.integers(0, 256, (*shape, channels), dtype=np.uint8)
    pixels[..., 0] = np.arange(shape[1], dtype=np.uint8)  # runs and wrap-around differences
    arg = pixels[..., 0] if channels == 1 else pixels
    mode, back = pillow(png(arg, level=level))
    assert mode == MODES[channels]
    np.testing.assert_array_equal(back, arg)


def test_gdal_reads_back_the_pixels():
    pixels = np.random.default_rng(3).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    with MemoryFile(png(pixels)) as mem, mem.open() as ds:
        assert ds.driver == "PNG" and ds.count == 3
        np.testing.assert_array_equal(np.moveaxis(ds.read(), 0, -1), pixels)


def test_level_trades_size():
    yy, xx = np.mgrid[0:256, 0:256]
    smooth = np.dstack([(xx + yy) // 2, xx // 2, yy // 2]).astype(np.uint8)
    stored, fast = len(png(smooth, level=0)), len(png(smooth, level=1))
    assert stored > 256 * 256 * 3 and fast < stored / 4


def test_masked_pixels_are_transparent_in_the_tile():
    arr = np.ma.MaskedArray(np.full((3, 4, 5), 200, np.uint8), mask=False)
    arr.mask[:, 1, 2] = True
    img = ImageData(arr, band_names=["r", "g", "b"])
    mode, back = pillow(encode(img, "png"))
    assert mode == "RGBA"
    assert back[1, 2, 3] == 0 and (back[..., 3].sum() == 255 * 19)
    assert (back[..., :3][back[..., 3] == 255] == 200).all()


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint16), np.zeros((4, 4, 5), np.uint8),
                                 np.zeros((0, 4), np.uint8), np.zeros((2, 2, 2, 2), np.uint8)])
def test_refuses_what_is_not_an_8bit_image(bad):
    with pytest.raises(ChainError):
        png(bad)
