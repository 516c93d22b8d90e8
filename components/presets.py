"""Display presets (band combinations and indices), named by band common names.

A preset is offered only when the collection has every band it reads, so the Landsat demo
(red/nir/swir1) offers NDVI but not true colour. Values are reflectance x 1e4.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """One display preset: either three bands (RGB) or one expression with a colormap."""

    key: str
    label: str
    bands: tuple[str, ...] = ()
    expression: str | None = None
    vmin: float = 0.0
    vmax: float = 3000.0
    colormap: str | None = None

    @property
    def needs(self) -> tuple[str, ...]:
        """Band names the preset reads."""
        if self.expression is None:
            return self.bands
        return tuple(dict.fromkeys(_names_in(self.expression)))

    @property
    def single_band(self) -> bool:
        """True for an index shown through a colormap."""
        return self.expression is not None


def _names_in(expression: str) -> list[str]:
    from engine.chain import parse_expression

    return list(parse_expression(expression).band_names)


PRESETS: tuple[Preset, ...] = (
    Preset("true-colour", "True colour", bands=("red", "green", "blue"), vmax=3000),
    Preset("false-colour", "False colour (infrared)", bands=("nir", "red", "green"), vmax=5000),
    Preset("ndvi", "NDVI (vegetation)", expression="(nir - red) / (nir + red)",
           vmin=-0.2, vmax=0.9, colormap="RdYlGn"),
    Preset("ndwi", "NDWI (water)", expression="(green - nir) / (green + nir)",
           vmin=-0.8, vmax=0.6, colormap="RdBu"),
    Preset("swir", "SWIR", bands=("swir22", "nir", "red"), vmax=5000),
    Preset("agriculture", "Agriculture", bands=("swir16", "nir", "blue"), vmax=5000),
    Preset("urban", "Urban (false colour)", bands=("swir22", "swir16", "red"), vmax=5000),
)

#: Key of the custom RGB / band-math modes in the preset picker.
CUSTOM_RGB = "custom-rgb"
CUSTOM_EXPRESSION = "custom-expression"


def preset(key: str) -> Preset:
    """The preset named ``key`` (KeyError otherwise)."""
    for p in PRESETS:
        if p.key == key:
            return p
    raise KeyError(key)


def presets_for(band_names: Iterable[str]) -> list[Preset]:
    """Presets whose bands all exist among ``band_names`` (case-insensitive)."""
    have = {b.lower() for b in band_names}
    return [p for p in PRESETS if all(b.lower() in have for b in p.needs)]


def default_rgb(band_names: Sequence[str]) -> tuple[str, str, str]:
    """Three bands to start the custom RGB pickers with."""
    have = {b.lower(): b for b in band_names}
    for combo in (("red", "green", "blue"), ("nir", "red", "green"), ("swir16", "nir", "red")):
        if all(c in have for c in combo):
            return tuple(have[c] for c in combo)  # type: ignore[return-value]
    names = list(band_names) or [""]
    return (names[0], names[min(1, len(names) - 1)], names[min(2, len(names) - 1)])
