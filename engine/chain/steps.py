"""Chain steps: small validated models with a ``name`` and params, applied as ``step(img)``.

Steps live in a registry (like titiler's ``Algorithms.register``) so a chain's JSON can be
turned back into step objects, and new steps can be added without touching the chain.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import matplotlib
import matplotlib.colors as mcolors
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.chain.budget import check_expression_parts
from engine.chain.executor import get_executor
from engine.chain.expression import parse_expression, split_expressions
from engine.chain.raster import Raster, TimeStack, band_arrays, band_axis, stack_bands, with_bands
from engine.errors import ChainError, SandboxError

#: Sentinel-2 SCL classes masked by ``mask(cloud=True)``: shadow, medium/high cloud, cirrus.
SCL_CLOUD_CLASSES: tuple[int, ...] = (3, 8, 9, 10)
#: Landsat Fmask classes masked by ``mask(cloud=True)``: shadow, snow, cloud.
FMASK_CLOUD_CLASSES: tuple[int, ...] = (2, 3, 4)
#: Band names recognised as cloud-mask bands, lower-case -> classes to mask.
CLOUD_BANDS: dict[str, tuple[int, ...]] = {"scl": SCL_CLOUD_CLASSES, "fmask": FMASK_CLOUD_CLASSES}

RGBA_NAMES = ["red", "green", "blue", "alpha"]


class Step(BaseModel):
    """Base of every step: frozen, no unknown fields, ``__call__(img) -> img``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    #: "analytic" steps compute values; "visual" ones map values to display colours
    #: (point and statistics queries stop before the first visual step).
    kind: ClassVar[str] = "analytic"

    def __call__(self, img: Raster) -> Raster:  # pragma: no cover - abstract
        raise NotImplementedError

    def source_bands(self) -> tuple[str, ...] | None:
        """Band names this step needs when it is the first step (None: it needs given bands)."""
        return None

    def band_names_out(self, names: list[str]) -> list[str] | None:
        """Output band names for input ``names`` (None when only running it can tell)."""
        return names


class StepRegistry:
    """Step classes by name (``Algorithms``-style): ``register`` a class, ``parse`` a dict."""

    def __init__(self) -> None:
        self._steps: dict[str, type[Step]] = {}

    def register(self, cls: type[Step]) -> type[Step]:
        """Add a step class (usable as a decorator); its ``name`` literal is the key."""
        name = cls.model_fields["name"].default
        if not isinstance(name, str) or not name:
            raise ValueError(f"{cls.__name__} needs a default `name`")
        self._steps[name] = cls
        return cls

    def names(self) -> list[str]:
        return sorted(self._steps)

    def get(self, name: str) -> type[Step]:
        try:
            return self._steps[name]
        except KeyError:
            raise ChainError(f"unknown step {name!r}", choices=self._steps) from None

    def parse(self, data: Any) -> Step:
        """A step object from a dict ``{"name": ..., **params}`` (or a step as is)."""
        if isinstance(data, Step):
            return data
        if not isinstance(data, dict) or "name" not in data:
            raise ChainError(f"a step must be an object with a 'name', got {data!r:.80}")
        return self.get(data["name"]).model_validate(data)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._steps))

    def __contains__(self, name: object) -> bool:
        return name in self._steps


#: The default registry used by :class:`engine.chain.Chain`.
STEPS = StepRegistry()


def _require_uint8(img: Raster, step: str) -> None:
    if img.array.dtype != np.uint8:
        raise ChainError(f"{step} needs 8-bit values: add a scale(...) step before it "
                         f"(the data is {img.array.dtype})")


def _valid(img: Raster) -> np.ndarray:
    """Pixels valid in every band: (y, x) or (t, y, x)."""
    mask = np.ma.getmaskarray(img.array)
    return ~mask.any(axis=band_axis(img))


@STEPS.register
class Bands(Step):
    """Select bands by name, in the given order."""

    name: Literal["bands"] = "bands"
    bands: list[str] = Field(min_length=1, max_length=256)  # each is read: bound memory

    def source_bands(self) -> tuple[str, ...]:
        return tuple(self.bands)

    def band_names_out(self, names: list[str]) -> list[str]:
        return list(self.bands)

    def __call__(self, img: Raster) -> Raster:
        names = list(img.band_names)
        lower = {n.lower(): i for i, n in enumerate(names)}
        idx = []
        for b in self.bands:
            i = names.index(b) if b in names else lower.get(b.lower())
            if i is None:
                raise ChainError(f"bands: unknown band {b!r}", choices=names)
            idx.append(i)
        arr = img.array.take(idx, axis=band_axis(img))
        return with_bands(img, arr, list(self.bands))


@STEPS.register
class Band(Step):
    """Select one band by its 0-based index."""

    name: Literal["band"] = "band"
    index: int = Field(ge=0)

    def band_names_out(self, names: list[str]) -> list[str] | None:
        return [names[self.index]] if self.index < len(names) else None

    def __call__(self, img: Raster) -> Raster:
        if self.index >= img.count:
            raise ChainError(f"band: index {self.index} out of range for {img.count} band(s)",
                             choices=[str(i) for i in range(img.count)])
        axis = band_axis(img)
        arr = img.array.take([self.index], axis=axis)
        return with_bands(img, arr, [img.band_names[self.index]])


@STEPS.register
class Expression(Step):
    """Band math, one output band per ``;``-separated expression (safe evaluator)."""

    name: Literal["expression"] = "expression"
    expression: str

    @field_validator("expression")
    @classmethod
    def _parse(cls, v: str) -> str:
        parts = split_expressions(v)
        check_expression_parts(len(parts))  # before parsing them: 2,000 parts cost memory
        for part in parts:
            parse_expression(part)
        return v.strip()

    def parts(self) -> list[str]:
        return split_expressions(self.expression)

    def band_names_out(self, names: list[str]) -> list[str]:
        return self.parts()

    def source_bands(self) -> tuple[str, ...]:
        names: list[str] = []
        for part in self.parts():
            names.extend(parse_expression(part).band_names)
        return tuple(dict.fromkeys(names))

    def __call__(self, img: Raster) -> Raster:
        bands = band_arrays(img)
        outs = [parse_expression(p).evaluate(bands) for p in self.parts()]
        return with_bands(img, stack_bands(outs, axis=band_axis(img)), self.parts())


_JSON_SCALAR = (int, float, str, bool, type(None))


def _check_json_value(v: Any, where: str, depth: int = 0) -> None:
    if depth > 4:
        raise ChainError(f"execute: {where} is nested too deeply")
    if isinstance(v, _JSON_SCALAR):
        if isinstance(v, float) and not math.isfinite(v):
            raise ChainError(f"execute: {where} must be finite, got {v}")
        return
    if isinstance(v, list | tuple):
        for x in v:
            _check_json_value(x, where, depth + 1)
        return
    raise ChainError(f"execute: {where} must be numbers, strings, booleans or lists, "
                     f"got {type(v).__name__}")


@STEPS.register
class Execute(Step):
    """A user function run by the configured executor (the sandbox), never in-process.

    Wire format: ``{"name": "execute", "function": f, "source": src, "args": [...],
    "kwargs": {...}}``; the function gets the pixel array and returns a new one.
    """

    name: Literal["execute"] = "execute"
    function: str
    source: str = Field(max_length=50_000)
    args: list[Any] = Field(default_factory=list, max_length=64)
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Execute:
        if not self.function.isidentifier() or self.function.startswith("_"):
            raise ChainError(f"execute: {self.function!r} is not a valid function name")
        try:
            tree = ast.parse(self.source)
        except SyntaxError as exc:
            raise ChainError(f"execute: the source does not parse (line {exc.lineno}): "
                             f"{exc.msg}") from None
        except (RecursionError, MemoryError, ValueError) as exc:  # e.g. "-" * 24000 + "img"
            raise ChainError(f"execute: the source is too deeply nested or complex to parse "
                             f"({type(exc).__name__})") from None
        defined = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
        if self.function not in defined:
            raise ChainError(f"execute: the source defines no top-level function "
                             f"{self.function!r}", choices=defined or None)
        _check_json_value(self.args, "args")
        for k, v in self.kwargs.items():
            if not k.isidentifier():
                raise ChainError(f"execute: keyword {k!r} is not a valid name")
            _check_json_value(v, f"kwargs[{k!r}]")
        from engine.sandbox.check import check_function  # the sandbox's static check

        check_function(self.source, self.function)  # FunctionRejected names the line
        return self

    def band_names_out(self, names: list[str]) -> None:
        return None

    def __call__(self, img: Raster) -> Raster:
        executor = get_executor()
        if executor is None:
            raise SandboxError("server-side functions are not enabled: no sandbox executor "
                               "is configured (engine.chain.set_executor)")
        dates = img.dates if isinstance(img, TimeStack) else None
        result = executor(self, img.array, band_names=list(img.band_names), dates=dates)
        out = np.ma.masked_invalid(np.ma.asarray(result), copy=False)
        stack = isinstance(img, TimeStack)
        if out.ndim == 2:
            out = out[np.newaxis]
        if stack and out.ndim == 3:  # reduced over time: (b, y, x)
            names = _names_for(out.shape[0], img.band_names, self.function)
            out.mask = np.ma.getmaskarray(out)
            return img.image(out, names)
        want = 4 if stack else 3
        if out.ndim != want or out.shape[-2:] != img.array.shape[-2:]:
            raise SandboxError(f"execute: {self.function}() returned shape {out.shape}, "
                               f"expected (..., {img.array.shape[-2]}, {img.array.shape[-1]})")
        out.mask = np.ma.getmaskarray(out)
        names = _names_for(out.shape[band_axis(img)], img.band_names, self.function)
        return with_bands(img, out, names)


def _names_for(count: int, names: Any, function: str) -> list[str]:
    names = list(names)
    if count == len(names):
        return names
    if count == 1:
        return [function]
    return [f"{function}_{i + 1}" for i in range(count)]


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


@STEPS.register
class Mask(Step):
    """Mask pixels equal to given values, or cloudy pixels from a cloud-mask band.

    ``cloud=True`` reads the scene's cloud band (Sentinel-2 SCL classes 3, 8, 9, 10;
    Landsat Fmask 2, 3, 4). The renderer applies it per scene BEFORE mosaicking, so
    clouds are filled from other scenes.
    """

    name: Literal["mask"] = "mask"
    values: list[float] | None = None
    cloud: bool = False
    classes: list[int] | None = None

    @model_validator(mode="after")
    def _check(self) -> Mask:
        if not self.values and not self.cloud:
            raise ChainError("mask: give values=[...] to mask, or cloud=True")
        if self.classes is not None and not self.cloud:
            raise ChainError("mask: classes only apply with cloud=True")
        return self

    def cloud_band(self, names: Any) -> tuple[int, tuple[int, ...]] | None:
        """(index, classes) of the cloud band among ``names``, if there is one."""
        for i, n in enumerate(names):
            classes = CLOUD_BANDS.get(str(n).lower())
            if classes is not None:
                return i, tuple(self.classes) if self.classes else classes
        return None

    def band_names_out(self, names: list[str]) -> list[str]:
        found = self.cloud_band(names) if self.cloud else None
        return [n for i, n in enumerate(names) if found is None or i != found[0]]

    def __call__(self, img: Raster) -> Raster:
        axis = band_axis(img)
        arr = img.array
        names = list(img.band_names)
        mask = np.ma.getmaskarray(arr).copy()
        if self.cloud:
            found = self.cloud_band(names)
            if found is None:
                raise ChainError("mask(cloud=True): the image has no cloud band",
                                 choices=list(CLOUD_BANDS))
            i, classes = found
            cb = np.asarray(arr.data.take(i, axis=axis))
            cloudy = np.isin(cb, classes)
            keep = [j for j in range(len(names)) if j != i]
            if not keep:
                raise ChainError("mask(cloud=True): the cloud band is the only band")
            cloudy = np.expand_dims(cloudy, axis)
            mask = mask | cloudy
            arr = np.ma.MaskedArray(arr.data, mask=mask).take(keep, axis=axis)
            names = [names[j] for j in keep]
            mask = np.ma.getmaskarray(arr).copy()
        if self.values:
            mask |= np.isin(arr.data, self.values)
        return with_bands(img, np.ma.MaskedArray(arr.data, mask=mask), names)


def _lut_from_cmap(cmap: mcolors.Colormap) -> np.ndarray:
    return (np.asarray(cmap(np.linspace(0, 1, 256))) * 255).round().astype(np.uint8)


def _apply_lut(img: Raster, lut: np.ndarray, step: str) -> Raster:
    _require_uint8(img, step)
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
        _require_uint8(img, "opacity")
        axis = band_axis(img)
        names = list(img.band_names)
        f = self.fraction()
        if names == RGBA_NAMES:
            alpha = img.array.data.take([3], axis=axis)
            rest = img.array.data.take([0, 1, 2], axis=axis)
        elif img.count in (1, 3):
            alpha = np.expand_dims(_valid(img), axis).astype(np.uint8) * 255
            rest = np.asarray(img.array.data)
            if img.count == 1:
                rest = np.concatenate([rest] * 3, axis=axis)
        else:
            raise ChainError(f"opacity needs 1, 3 or RGBA bands, the image has {img.count}")
        alpha = np.rint(alpha.astype(np.float32) * f).astype(np.uint8)
        out = np.concatenate([rest, alpha], axis=axis)
        mask = np.broadcast_to(alpha == 0, out.shape).copy()
        return with_bands(img, np.ma.MaskedArray(out, mask=mask), RGBA_NAMES)


_REDUCERS = {
    "max": np.ma.max, "min": np.ma.min, "mean": np.ma.mean, "median": np.ma.median,
    "sum": np.ma.sum, "std": np.ma.std, "count": np.ma.count,
}


@STEPS.register
class Reduce(Step):
    """Reduce a time stack over time (max, min, mean, median, sum, std, count) -> image."""

    name: Literal["reduce"] = "reduce"
    method: Literal["max", "min", "mean", "median", "sum", "std", "count"] = "max"

    def __call__(self, img: Raster) -> Raster:
        if not isinstance(img, TimeStack):
            raise ChainError("reduce needs a time stack: use process_multi([...], times=True)")
        with np.errstate(all="ignore"):
            out = _REDUCERS[self.method](img.array, axis=0)
        out = np.ma.asarray(out)
        if self.method == "count":
            out = np.ma.MaskedArray(out.astype(np.float32), mask=np.zeros(out.shape, bool))
        out.mask = np.ma.getmaskarray(out)
        return img.image(out, list(img.band_names))
