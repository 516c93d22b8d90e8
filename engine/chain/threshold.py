"""``threshold``: the example chain step of docs/extending.md.

1 where the first band is at least ``value`` (NDVI >= 0.4: vegetation), else 0, as uint8;
masked pixels stay masked. Registered in ``STEPS`` when ``engine.chain`` is imported.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from engine.chain.raster import Raster, band_axis, with_bands
from engine.chain.steps import STEPS, Step


@STEPS.register
class Threshold(Step):
    """1 where band 0 >= ``value``, else 0 (uint8); masked pixels stay masked."""

    name: Literal["threshold"] = "threshold"
    value: float

    def band_names_out(self, names: list[str]) -> list[str] | None:
        return [f"{names[0]}>={self.value:g}"] if names else None

    def __call__(self, img: Raster) -> Raster:
        first = img.array.take([0], axis=band_axis(img))
        hit = np.ma.masked_array((first.filled(-np.inf) >= self.value).astype(np.uint8),
                                 mask=np.ma.getmaskarray(first))
        return with_bands(img, hit, [f"{img.band_names[0]}>={self.value:g}"])
