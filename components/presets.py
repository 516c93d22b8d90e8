"""Display presets (band combinations and indices), named by band common names.

A preset is offered only when the collection has every band it reads, so the Landsat demo
(red/nir/swir1) offers NDVI but not true colour. Values are reflectance x 1e4 (Sentinel-2
L2A/L3A, Landsat surface reflectance as ingested): the colour composites map reflectance
0..0.4 to black..white, as EO Browser / Copernicus Browser do (their "gain 2.5").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Top of the stretch of the colour composites: reflectance 0.4 (x 1e4), EO Browser's gain 2.5.
RGB_VMAX = 4000.0

#: Colormaps listed first in the pickers (all matplotlib colormaps are accepted).
COMMON_COLORMAPS = ["viridis", "RdYlGn", "RdBu", "Spectral", "magma", "inferno", "plasma",
                    "cividis", "YlGn", "Greens", "Blues", "BrBG", "PuOr", "coolwarm", "terrain",
                    "gray"]


@dataclass(frozen=True)
class Preset:
    """One display preset: either three bands (RGB) or one expression with a colormap."""

    key: str
    label: str
    bands: tuple[str, ...] = ()
    expression: str | None = None
    vmin: float = 0.0
    vmax: float = RGB_VMAX
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
    Preset("true-colour", "True colour", bands=("red", "green", "blue")),
    Preset("false-colour", "False colour (infrared)", bands=("nir", "red", "green")),
    Preset("ndvi", "NDVI (vegetation)", expression="(nir - red) / (nir + red)",
           vmin=-0.2, vmax=0.9, colormap="RdYlGn"),
    Preset("ndwi", "NDWI (water)", expression="(green - nir) / (green + nir)",
           vmin=-0.8, vmax=0.6, colormap="RdBu"),
    Preset("swir", "SWIR", bands=("swir22", "nir", "red")),
    Preset("agriculture", "Agriculture", bands=("swir16", "nir", "blue")),
    Preset("urban", "Urban (false colour)", bands=("swir22", "swir16", "red")),
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


#: Band names that hold masks, flags or quality layers rather than measurements (QA of
#: Sentinel-2 SCL, Landsat Fmask/QA, eo-learn's CLM/CLP/IS_DATA/IS_VALID, Sentinel Hub's
#: dataMask...): never picked for a default display.
_MASK_NAME = re.compile(
    r"^(scl|fmask|qa.*|.*_qa|.*mask.*|clm.*|clp.*|cld.*|snw.*|is_.*|valid.*|.*valid|"
    r"data_?mask|.*flag.*|aot|wvp|tci|visual|.*cloud.*|.*shadow.*|.*snow.*)$",
    re.IGNORECASE)


def is_mask_band(name: str) -> bool:
    """True for a band name that is a mask, flag or quality layer (CLM, SCL, IS_DATA...)."""
    return bool(_MASK_NAME.match(name))


def data_bands(band_names: Iterable[str]) -> list[str]:
    """``band_names`` without the mask/flag/quality bands (order kept)."""
    return [b for b in band_names if not is_mask_band(b)]


def default_rgb(band_names: Sequence[str]) -> tuple[str, str, str] | None:
    """Three bands to start the custom RGB pickers with: a known colour composite, else
    the first three data (non-mask) bands; None when there are fewer than three."""
    have = {b.lower(): b for b in band_names}
    for combo in (("red", "green", "blue"), ("nir", "red", "green"), ("swir16", "nir", "red")):
        if all(c in have for c in combo):
            return tuple(have[c] for c in combo)  # type: ignore[return-value]
    names = data_bands(band_names)
    if len(names) < 3:
        return None
    return (names[0], names[1], names[2])


#: Single bands preferred for a greyscale default, best first (indices, radar, then optical).
_GREY_PREFERENCE = ("ndvi", "evi", "vv", "hh", "vh", "hv", "nir", "red", "green", "blue")


def default_band(band_names: Sequence[str]) -> str | None:
    """The band shown alone in greyscale when no preset fits: an index or radar band,
    else the first data (non-mask) band, else the first band; None without bands."""
    names = data_bands(band_names)
    have = {b.lower(): b for b in names}
    for pref in _GREY_PREFERENCE:
        if pref in have:
            return have[pref]
    if names:
        return names[0]
    return band_names[0] if band_names else None
