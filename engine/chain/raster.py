"""The raster value objects steps work on: rio-tiler's ``ImageData`` and a minimal time stack.

A :class:`TimeStack` is what a step sees for ``process_multi(..., times=True)``: a
(time, band, y, x) masked array plus the dates; reducing over time turns it into ImageData.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Union

import numpy as np
from rasterio.crs import CRS
from rio_tiler.models import ImageData


@dataclass(frozen=True)
class TimeStack:
    """A (time, band, y, x) masked array with its dates, band names and georeference."""

    array: np.ma.MaskedArray
    dates: tuple[datetime, ...]
    band_names: tuple[str, ...]
    bounds: tuple[float, float, float, float] | None = None
    crs: CRS | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 4:
            raise ValueError(f"a TimeStack needs a 4-D array, got shape {self.array.shape}")
        if len(self.dates) != self.array.shape[0] or len(self.band_names) != self.array.shape[1]:
            raise ValueError("dates/band_names do not match the array shape")

    @property
    def count(self) -> int:
        return self.array.shape[1]

    def image(self, array: np.ma.MaskedArray, band_names: list[str]) -> ImageData:
        """A 2-D image on the same grid (after a reduction over time)."""
        return ImageData(array, bounds=self.bounds, crs=self.crs, band_names=list(band_names),
                         metadata=dict(self.metadata))

    def with_array(self, array: np.ma.MaskedArray, band_names: list[str]) -> TimeStack:
        return replace(self, array=array, band_names=tuple(band_names))


Raster = Union[ImageData, TimeStack]  # noqa: UP007 - used at runtime in isinstance-free hints


def band_axis(img: Raster) -> int:
    """Axis holding bands: 0 for ImageData (b, y, x), 1 for a TimeStack (t, b, y, x)."""
    return 1 if isinstance(img, TimeStack) else 0


def band_arrays(img: Raster) -> dict[str, np.ma.MaskedArray]:
    """Band name -> masked array ((y, x), or (t, y, x) for a stack); views, no copies."""
    axis = band_axis(img)
    arr = img.array
    return {name: (arr[i] if axis == 0 else arr[:, i]) for i, name in enumerate(img.band_names)}


def with_bands(img: Raster, array: np.ma.MaskedArray, band_names: list[str],
               **meta: Any) -> Raster:
    """Same kind and grid as ``img``, new pixels and band names."""
    if isinstance(img, TimeStack):
        out = img.with_array(array, band_names)
        if meta:
            out = replace(out, metadata={**out.metadata, **meta})
        return out
    return ImageData(array, bounds=img.bounds, crs=img.crs, band_names=list(band_names),
                     assets=img.assets, metadata={**(img.metadata or {}), **meta})


def take_bands(array: np.ma.MaskedArray, index: list[int], *, axis: int) -> np.ma.MaskedArray:
    """The bands ``index`` of ``array`` along ``axis`` (a copy, full mask): pixels and mask
    taken apart - ``np.ma.take`` re-set the mask element-wise, 3 ms of a 256 px tile."""
    data = np.asarray(array.data).take(index, axis=axis)
    mask = np.ma.getmaskarray(array).take(index, axis=axis)
    return np.ma.MaskedArray(data, mask=mask, fill_value=array.fill_value)


def stack_bands(arrays: list[np.ma.MaskedArray], *, axis: int) -> np.ma.MaskedArray:
    """Stack per-band arrays along the band axis, keeping a full boolean mask."""
    out = np.ma.stack(arrays, axis=axis)
    out.mask = np.ma.getmaskarray(out)
    return out
