"""Cloud cover of a scene from its own mask: the share of valid pixels flagged as cloud."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

#: mask kind -> (cloud classes, fill value that marks a pixel as not valid).
MASK_RULES: dict[str, tuple[tuple[int, ...], int]] = {
    # Sentinel-2 scene classification: 8/9 medium/high probability cloud, 10 thin cirrus.
    "scl": ((8, 9, 10), 0),
    # Landsat Fmask: 0 clear, 1 water, 2 shadow, 3 snow, 4 cloud, 255 fill.
    "fmask": ((4,), 255),
}


def cloud_cover_array(mask: np.ndarray, kind: str) -> float | None:
    """Percentage (0-100, 2 decimals) of valid pixels flagged as cloud; None if none valid."""
    clouds, fill = MASK_RULES[kind]
    valid = mask != fill
    n_valid = int(np.count_nonzero(valid))
    if n_valid == 0:
        return None
    n_cloud = int(np.count_nonzero(np.isin(mask, clouds) & valid))
    return round(100.0 * n_cloud / n_valid, 2)


def cloud_cover_file(path: str | Path, kind: str) -> float | None:
    """Cloud cover read from the first band of a mask file (full resolution)."""
    with rasterio.open(path) as src:
        return cloud_cover_array(src.read(1), kind)
