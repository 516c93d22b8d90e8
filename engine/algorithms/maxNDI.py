"""Multi-temporal maximum-NDVI composite (JRC): per pixel, the date of maximum NDVI.

Input: a time stack (time, band, y, x). Where twice the best NDVI is at most the best
NDWI (water), the date of maximum NDWI wins. Returns three bands (R, G, B by default)
taken from the chosen date. Band positions are parameters.
"""

# ruff: noqa: N999 - the module is named after the JRC function maxNDI
import numpy as np


def maxNDI(inputimage, fband11=0, fband8=1, fband4=2, fbandR=2, fbandG=3, fbandB=4):
    """(3, y, x) composite of bands fbandR, fbandG, fbandB."""
    img = inputimage.astype(np.float32)
    b11, b8, b4 = img[:, fband11], img[:, fband8], img[:, fband4]

    def calculate_ndi(bx, by):
        with np.errstate(divide="ignore", invalid="ignore"):
            ndi = (by - bx) / (by + bx)
        ndi[(by == 0) | (bx == 0)] = -1.0
        return ndi

    ndvi = calculate_ndi(b4, b8)
    ndwi = calculate_ndi(b11, b8)
    index_ndvi = np.argmax(ndvi, axis=0)
    index_ndwi = np.argmax(ndwi, axis=0)
    best_ndvi = np.take_along_axis(ndvi, index_ndvi[np.newaxis], axis=0)[0]
    best_ndwi = np.take_along_axis(ndwi, index_ndwi[np.newaxis], axis=0)[0]
    index = np.where(2 * best_ndvi <= best_ndwi, index_ndwi, index_ndvi)
    bands = [inputimage[:, b] for b in (fbandR, fbandG, fbandB)]
    return np.array([np.take_along_axis(b, index[np.newaxis], axis=0)[0] for b in bands])
