"""The shipped example functions, run in the sandbox and compared with direct numpy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from engine import algorithms
from engine.errors import NotFound
from engine.sandbox import SandboxPool, check_function, simulated_input


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(1, timeout_s=10, memory_mb=1024, max_array_mb=32) as p:
        assert p.wait_ready(timeout_s=60)
        yield p


def _run(pool, name, img, *args, **kwargs):
    source, function, _ = algorithms.load(name)
    return pool.run(source, function, img, args=args, kwargs=kwargs)


def test_list_and_load():
    assert algorithms.list() == ["cloudmask", "maxNDI", "morphclean", "ndvi", "stubble"]
    for name in algorithms.list():
        source, function, _ = algorithms.load(name)
        assert function == name
        check_function(source, function)  # every shipped source passes the static check
    assert algorithms.load("stubble")[2] == {"v4": 1000, "v6": 1200, "v8": 1200,
                                             "v11min": 500, "v11max": 1600}
    with pytest.raises(NotFound, match="Valid choices: cloudmask, maxNDI"):
        algorithms.load("nope")


def test_stubble(pool):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 2500, (4, 128, 128)).astype(np.uint16)
    out = _run(pool, "stubble", img)
    b4, b6, b8, b11 = img.astype(int)
    want = (b4 < 1000) & (b6 < 1200) & (b8 < 1200) & (b11 > 500) & (b11 < 1600)
    assert out.dtype == np.uint8 and want.any() and not want.all()
    np.testing.assert_array_equal(out, want.astype(np.uint8))
    out = _run(pool, "stubble", img, 2000, 2000, 2000, 0, 2500)
    np.testing.assert_array_equal(out, ((b4 < 2000) & (b6 < 2000) & (b8 < 2000) & (b11 > 0)
                                        & (b11 < 2500)).astype(np.uint8))


def test_ndvi(pool):
    img = simulated_input((4, 64, 64))
    out = _run(pool, "ndvi", img, red=2, nir=3)
    r, n = img[2].astype(np.float64), img[3].astype(np.float64)
    valid = (r + n) > 0
    assert np.isnan(out[~valid]).all() and (~valid).any()
    np.testing.assert_allclose(out[valid], (n - r)[valid] / (n + r)[valid], rtol=1e-5)


def test_cloudmask(pool):
    # one 2 x 3 block per class: clear, cloud, shadow, water, snow, nodata
    pixels = {  # B02, B03, B04, B08, B11
        "clear": (400, 700, 500, 3000, 2000), "cloud": (4000, 4000, 4000, 4200, 3000),
        "shadow": (300, 350, 300, 600, 400), "water": (600, 700, 400, 300, 100),
        "snow": (3000, 3500, 3200, 3000, 500), "nodata": (0, 0, 0, 0, 0),
    }
    img = np.zeros((5, 2, 18), dtype=np.uint16)
    for i, values in enumerate(pixels.values()):
        img[:, :, 3 * i: 3 * i + 3] = np.array(values)[:, None, None]
    out = _run(pool, "cloudmask", img)
    want = np.repeat(np.array([0, 1, 2, 3, 4, 0], dtype=np.uint8), 3)
    np.testing.assert_array_equal(out, np.stack([want, want]))
    # a higher cloud threshold turns the cloud block into clear
    out = _run(pool, "cloudmask", img, cloud_blue=5000)
    assert (out[:, 3:6] == 0).all()


def test_maxndi_picks_the_date_of_maximum_ndvi(pool):
    rng = np.random.default_rng(3)
    t, ny, nx = 4, 32, 32
    stack = rng.integers(100, 4000, (t, 5, ny, nx)).astype(np.uint16)  # B11, B08, B04, B03, B02
    out = _run(pool, "maxNDI", stack)
    s = stack.astype(np.float64)
    ndvi = (s[:, 1] - s[:, 2]) / (s[:, 1] + s[:, 2])
    ndwi = (s[:, 1] - s[:, 0]) / (s[:, 1] + s[:, 0])
    want = np.empty((3, ny, nx), dtype=np.uint16)
    for y in range(ny):
        for x in range(nx):
            i = int(np.argmax(ndvi[:, y, x]))
            j = int(np.argmax(ndwi[:, y, x]))
            k = j if 2 * ndvi[i, y, x] <= ndwi[j, y, x] else i
            want[:, y, x] = stack[k, [2, 3, 4], y, x]
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, want)


def test_morphclean(pool):
    img = np.zeros((1, 64, 64), dtype=np.uint8)
    img[0, 10:30, 10:30] = 1   # a field: kept
    img[0, 50, 50] = 1         # a speck: removed by the opening
    img[0, 40:44, 5:9] = 1     # 16 pixels: kept by size, 4x4 survives a 3x3 opening
    img[0, 20, 20] = 0         # a hole: filled by the closing
    out = _run(pool, "morphclean", img, min_pixels=20)
    m = img[0] > 0.5
    s = np.ones((3, 3), dtype=bool)
    m = ndimage.binary_closing(ndimage.binary_opening(m, structure=s), structure=s)
    labels, _ = ndimage.label(m)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= 20
    keep[0] = False
    want = keep[labels].astype(np.uint8)
    np.testing.assert_array_equal(out, want)
    assert out[20, 20] == 1 and out[50, 50] == 0 and out[41, 6] == 0  # 16 < 20: dropped
