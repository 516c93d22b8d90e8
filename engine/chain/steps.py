"""Chain steps: small validated models with a ``name`` and params, applied as ``step(img)``.

Steps live in a registry (like titiler's ``Algorithms.register``) so a chain's JSON can be
turned back into step objects, and new steps can be added without touching the chain.
"""

from __future__ import annotations

import ast
import math
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from engine.chain.budget import check_expression_parts
from engine.chain.executor import get_executor
from engine.chain.expression import parse_expression, split_expressions
from engine.chain.raster import (
    Raster,
    TimeStack,
    band_arrays,
    band_axis,
    stack_bands,
    take_bands,
    with_bands,
)
from engine.chain.stepbase import (  # noqa: F401  (re-exported: steps are imported from here)
    CLOUD_BANDS,
    FMASK_CLOUD_CLASSES,
    RGBA_NAMES,
    SCL_CLOUD_CLASSES,
    STEPS,
    Step,
    StepRegistry,
)
from engine.chain.visual import ColorCustom, Colormap, Opacity, Scale  # noqa: F401
from engine.errors import ChainError, SandboxError


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
        arr = take_bands(img.array, idx, axis=band_axis(img))
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
        arr = take_bands(img.array, [self.index], axis=axis)
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
