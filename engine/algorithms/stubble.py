"""Stubble burning (JRC D.5): 1 where B04 < v4, B06 < v6, B08 < v8 and v11min < B11 < v11max.

Input bands in this order: B04, B06, B08, B11 (Sentinel-2 reflectance x 10000).
"""

import numpy as np


def stubble(img, v4=1000, v6=1200, v8=1200, v11min=500, v11max=1600):
    """1 (burnt stubble candidate) or 0 per pixel, as uint8."""
    b4, b6, b8, b11 = img[0], img[1], img[2], img[3]
    res = (b4 < v4) & (b6 < v6) & (b8 < v8) & (b11 > v11min) & (b11 < v11max)
    return res.astype(np.uint8)
