"""NDVI = (NIR - red) / (NIR + red); NaN (masked) where both bands are 0 (nodata).

Input bands: ``red`` and ``nir`` give their positions (default B04, B08).
"""

import numpy as np


def ndvi(img, red=0, nir=1):
    """NDVI in [-1, 1] as float32."""
    r = img[red].astype(np.float32)
    n = img[nir].astype(np.float32)
    den = n + r
    out = np.full(r.shape, np.nan, dtype=np.float32)
    np.divide(n - r, den, out=out, where=den > 0)
    return out
