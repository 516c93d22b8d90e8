"""Visual chain steps: they map values to display colours (scale, colormap, color_custom,
opacity). Point values and statistics stop before the first of them."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, ClassVar, Literal

import matplotlib
import matplotlib.colors as mcolors
import numpy as np
from pydantic import Field, field_validator, model_validator

from engine.chain.raster import Raster, band_arrays, band_axis, with_bands
from engine.chain.stepbase import RGBA_NAMES, STEPS, Step, require_uint8, valid_pixels
from engine.errors import ChainError

Number = float


@STEPS.register
class Scale(Step):
    """Map values linearly to 0-255 (uint8): min/max per band or one pair, or percentiles."""

    kind: ClassVar[str] = "visual"
    name: Literal["scale"] = "scale"
    min: list[Number] | None = None
    max: list[Number] | None = None
    p: tuple[float, float] | None = None
    gamma: float = Field(default=1.0, gt=0, le=10)

    @field_validator("min", "max", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return [v]
        return v

    @model_validator(mode="after")
    def _check(self) -> Scale:
        if self.p is not None:
            if self.min is not None or self.max is not None:
                raise ChainError("scale: give either min/max or percentiles p, not both")
            lo, hi = self.p
            if not (0 <= lo < hi <= 100):
                raise ChainError(f"scale: percentiles must satisfy 0 <= low < high <= 100, "
                                 f"got p=({lo}, {hi})")
            return self
        if self.min is None or self.max is None:
            raise ChainError("scale: give min and max (numbers or per-band lists), "
                             "or percentiles p=(low, high)")
        if len(self.min) != len(self.max):
            raise ChainError(f"scale: min has {len(self.min)} value(s) and max "
                             f"{len(self.max)}; they must match")
        if not all(math.isfinite(v) for v in [*self.min, *self.max]):
            raise ChainError("scale: min and max must be finite numbers")
        for lo, hi in zip(self.min, self.max, strict=True):
            if lo == hi:
                raise ChainError(f"scale: min and max are equal ({lo})")
        return self

    def ranges(self, img: Raster) -> list[tuple[float, float]]:
        """The (low, high) per band, computing percentiles on valid pixels if asked."""
        n = img.count
        if self.p is not None:
            out = []
            for arr in band_arrays(img).values():
                vals = arr.compressed()
                if vals.size == 0:
                    out.append((0.0, 1.0))
                    continue
                lo, hi = np.percentile(vals, self.p)
                out.append((float(lo), float(hi) if hi > lo else float(lo) + 1e-6))
            return out
        mins, maxs = self.min or [], self.max or []
        if len(mins) not in (1, n):
            raise ChainError(f"scale: {len(mins)} min/max values for {n} band(s); "
                             f"give one pair or one per band")
        if len(mins) == 1:
            mins, maxs = mins * n, maxs * n
        return list(zip(mins, maxs, strict=True))

    def __call__(self, img: Raster) -> Raster:
        ranges = self.ranges(img)
        axis = band_axis(img)
        data = img.array.data
        if self.p is None and data.dtype in _LUT_DTYPES:  # a table of every value: one gather
            index = data.view(np.uint16) if data.dtype == np.int16 else data
            out = np.empty(data.shape, np.uint8)
            for i, (lo, hi) in enumerate(ranges):
                band = (slice(None),) * axis + (i,)
                np.take(_scale_lut(data.dtype.str, lo, hi, self.gamma), index[band],
                        out=out[band])
            mask = np.ma.getmaskarray(img.array).copy()
            return with_bands(img, np.ma.MaskedArray(out, mask=mask), list(img.band_names))
        shape = [1] * img.array.ndim
        shape[axis] = img.count
        lo = np.array([r[0] for r in ranges], dtype=np.float32).reshape(shape)
        hi = np.array([r[1] for r in ranges], dtype=np.float32).reshape(shape)
        data = np.asarray(img.array.data, dtype=np.float32)
        with np.errstate(all="ignore"):
            x = np.clip((data - lo) / (hi - lo), 0.0, 1.0)
            if self.gamma != 1.0:
                x = x ** (1.0 / self.gamma)
            out = np.rint(x * 255.0)
        out = np.nan_to_num(out, nan=0.0).astype(np.uint8)
        mask = np.ma.getmaskarray(img.array) | ~np.isfinite(data)
        return with_bands(img, np.ma.MaskedArray(out, mask=mask), list(img.band_names))


#: integer types whose every value fits a table (Scale maps them through a lookup)
_LUT_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.int16))


@lru_cache(maxsize=64)
def _scale_lut(dtype: str, lo: float, hi: float, gamma: float) -> np.ndarray:
    """Scale's uint8 result for every value of ``dtype`` (indexed by the value's bits, so
    int16 by its uint16 view), computed with Scale's own float32 formula: a table lookup
    gives exactly the pixels the formula gives, at the cost of one gather."""
    dt = np.dtype(dtype)
    bits = np.arange(256 if dt.itemsize == 1 else 65536, dtype=np.uint8 if dt.itemsize == 1
                     else np.uint16)
    values = bits.view(dt).astype(np.float32)
    lo32, hi32 = np.float32(lo), np.float32(hi)
    with np.errstate(all="ignore"):
        x = np.clip((values - lo32) / (hi32 - lo32), 0.0, 1.0)
        if gamma != 1.0:
            x = x ** (1.0 / gamma)
        return np.nan_to_num(np.rint(x * 255.0), nan=0.0).astype(np.uint8)


def _lut_from_cmap(cmap: mcolors.Colormap) -> np.ndarray:
    return (np.asarray(cmap(np.linspace(0, 1, 256))) * 255).round().astype(np.uint8)


def _apply_lut(img: Raster, lut: np.ndarray, step: str) -> Raster:
    require_uint8(img, step)
    if img.count != 1:
        raise ChainError(f"{step} needs exactly one band, the image has {img.count}: "
                         "select one with band(i) or an expression")
    axis = band_axis(img)
    idx = np.asarray(img.array.data.take(0, axis=axis))
    rgba = lut[idx]  # (..., y, x, 4)
    rgba = np.moveaxis(rgba, -1, axis)
    valid = np.expand_dims(~np.ma.getmaskarray(img.array).take(0, axis=axis), axis)
    alpha = np.where(valid[...], rgba.take([3], axis=axis), 0).astype(np.uint8)
    rgb = rgba.take([0, 1, 2], axis=axis)
    out = np.concatenate([rgb, alpha], axis=axis)
    mask = np.broadcast_to(alpha == 0, out.shape)
    return with_bands(img, np.ma.MaskedArray(out, mask=mask.copy()), RGBA_NAMES)


@STEPS.register
class Colormap(Step):
    """Colour one 8-bit band with a matplotlib colormap -> RGBA."""

    kind: ClassVar[str] = "visual"
    name: Literal["colormap"] = "colormap"
    colormap: str

    @field_validator("colormap")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in matplotlib.colormaps:
            raise ChainError(f"colormap: unknown colormap {v!r}",
                             choices=list(matplotlib.colormaps))
        return v

    def band_names_out(self, names: list[str]) -> list[str]:
        return list(RGBA_NAMES)

    def __call__(self, img: Raster) -> Raster:
        return _apply_lut(img, _lut_from_cmap(matplotlib.colormaps[self.colormap]), "colormap")


@STEPS.register
class ColorCustom(Step):
    """Colour one 8-bit band with a gradient through CSS colour names or hex codes -> RGBA.

    A single colour goes from transparent (0) to that colour (255), for overlaying masks.
    """

    kind: ClassVar[str] = "visual"
    name: Literal["color_custom"] = "color_custom"
    colors: list[str] = Field(min_length=1, max_length=64)

    @field_validator("colors")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for c in v:
            try:
                mcolors.to_rgba(c)
            except ValueError:
                raise ChainError(f"color_custom: unknown colour {c!r} (use a CSS colour name "
                                 "or #rrggbb)", choices=list(mcolors.CSS4_COLORS)) from None
        return v

    def lut(self) -> np.ndarray:
        if len(self.colors) == 1:
            r, g, b, _ = mcolors.to_rgba(self.colors[0])
            colors = [(r, g, b, 0.0), (r, g, b, 1.0)]
        else:
            colors = [mcolors.to_rgba(c) for c in self.colors]
        return _lut_from_cmap(mcolors.LinearSegmentedColormap.from_list("custom", colors))

    def band_names_out(self, names: list[str]) -> list[str]:
        return list(RGBA_NAMES)

    def __call__(self, img: Raster) -> Raster:
        return _apply_lut(img, self.lut(), "color_custom")


@STEPS.register
class Opacity(Step):
    """Set the opacity of the output: 0-1 (fraction) or above 1 up to 255."""

    kind: ClassVar[str] = "visual"
    name: Literal["opacity"] = "opacity"
    opacity: float = Field(ge=0, le=255)

    def fraction(self) -> float:
        return self.opacity if self.opacity <= 1 else self.opacity / 255.0

    def band_names_out(self, names: list[str]) -> list[str]:
        return list(RGBA_NAMES)

    def __call__(self, img: Raster) -> Raster:
        require_uint8(img, "opacity")
        axis = band_axis(img)
        names = list(img.band_names)
        f = self.fraction()
        if names == RGBA_NAMES:
            alpha = img.array.data.take([3], axis=axis)
            rest = img.array.data.take([0, 1, 2], axis=axis)
        elif img.count in (1, 3):
            alpha = np.expand_dims(valid_pixels(img), axis).astype(np.uint8) * 255
            rest = np.asarray(img.array.data)
            if img.count == 1:
                rest = np.concatenate([rest] * 3, axis=axis)
        else:
            raise ChainError(f"opacity needs 1, 3 or RGBA bands, the image has {img.count}")
        alpha = np.rint(alpha.astype(np.float32) * f).astype(np.uint8)
        out = np.concatenate([rest, alpha], axis=axis)
        mask = np.broadcast_to(alpha == 0, out.shape).copy()
        return with_bands(img, np.ma.MaskedArray(out, mask=mask), RGBA_NAMES)
