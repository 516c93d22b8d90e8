"""What every chain step shares: the ``Step`` base model, the step registry, and the band
name conventions (cloud-mask classes, RGBA) steps agree on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from engine.chain.raster import Raster, band_axis
from engine.errors import ChainError

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


def require_uint8(img: Raster, step: str) -> None:
    if img.array.dtype != np.uint8:
        raise ChainError(f"{step} needs 8-bit values: add a scale(...) step before it "
                         f"(the data is {img.array.dtype})")


def valid_pixels(img: Raster) -> np.ndarray:
    """Pixels valid in every band: (y, x) or (t, y, x)."""
    mask = np.ma.getmaskarray(img.array)
    return ~mask.any(axis=band_axis(img))
