"""Shared pieces of the sandbox tests: a small input, an NDVI source and the health check
that a normal call still returns exactly what numpy computes in-process."""

from __future__ import annotations

import numpy as np

NDVI = ("def ndvi(img):\n    a = img.astype('float32')\n"
        "    return (a[1] - a[0]) / (a[1] + a[0] + 1)\n")


def small_img() -> np.ndarray:
    return np.arange(4 * 32 * 32, dtype=np.uint16).reshape(4, 32, 32)


def expected_ndvi(img: np.ndarray) -> np.ndarray:
    a = img.astype("float32")
    return (a[1] - a[0]) / (a[1] + a[0] + 1)


def assert_healthy(pool, img: np.ndarray) -> None:
    np.testing.assert_allclose(pool.run(NDVI, "ndvi", img), expected_ndvi(img), rtol=1e-6)
