"""Morphological clean-up of a mask (scipy.ndimage): threshold, open, close, drop specks.

Input: any bands; ``band`` is thresholded (``> threshold``), e.g. the 0/1 output of a
detector. Returns uint8 0/1.
"""

import numpy as np
from scipy import ndimage


def morphclean(img, band=0, threshold=0.5, size=3, min_pixels=16):
    """Open then close with a size x size square; remove objects under min_pixels."""
    mask = img[band] > threshold
    structure = np.ones((size, size), dtype=bool)
    mask = ndimage.binary_opening(mask, structure=structure)
    mask = ndimage.binary_closing(mask, structure=structure)
    labels, count = ndimage.label(mask)
    if count:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
        keep = np.zeros(count + 1, dtype=bool)
        keep[1:] = sizes >= min_pixels
        mask = keep[labels]
    return mask.astype(np.uint8)
