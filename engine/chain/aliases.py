"""Band aliases of public STAC catalogs, and the value transform of ``raster:bands``.

The same Sentinel-2 band is called ``B04`` (Earth Search v0, Planetary Computer),
``red`` (Earth Search v1) or ``B04_10m`` (CDSE); Landsat Collection 2 Level-2 calls it
``red`` (Planetary Computer, Earth Search, USGS ``eo:bands``) or ``SR_B4`` (USGS asset
keys, Landsat 8/9; ``SR_B3`` on Landsat 4-7). Every name reduces to one *canonical* id
per sensor family (the STAC common name, refined where one common name covers several
bands: ``rededge1``..``rededge3``), so a user's name and an asset key match when their
canonical ids do.

Values: ``raster:bands`` ``scale``/``offset`` turn stored numbers into physical values.
Reflectance bands are brought to the unit the whole engine works in, reflectance x 10 000
(presets, stretches and the bundled algorithms assume it); other bands (AOT, WVP,
elevation, backscatter) to their physical unit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

#: Sentinel-2 MSI band ids -> canonical id (STAC common names; red edges numbered).
S2_BANDS: dict[str, str] = {
    "b01": "coastal", "b02": "blue", "b03": "green", "b04": "red", "b05": "rededge1",
    "b06": "rededge2", "b07": "rededge3", "b08": "nir", "b8a": "nir08", "b09": "nir09",
    "b10": "cirrus", "b11": "swir16", "b12": "swir22", "scl": "scl", "aot": "aot",
    "wvp": "wvp", "tci": "visual",
}
#: Landsat 8/9 OLI/TIRS Collection 2 Level-2 asset keys -> canonical id.
LANDSAT_OLI: dict[str, str] = {
    "sr_b1": "coastal", "sr_b2": "blue", "sr_b3": "green", "sr_b4": "red", "sr_b5": "nir08",
    "sr_b6": "swir16", "sr_b7": "swir22", "st_b10": "lwir11", "qa_pixel": "qa_pixel",
}
#: Landsat 4-7 TM/ETM+ Collection 2 Level-2 asset keys -> canonical id.
LANDSAT_TM: dict[str, str] = {
    "sr_b1": "blue", "sr_b2": "green", "sr_b3": "red", "sr_b4": "nir08", "sr_b5": "swir16",
    "sr_b7": "swir22", "st_b6": "lwir", "qa_pixel": "qa_pixel",
}
#: Names meaning the same band within a family (after the tables above).
SYNONYMS: dict[str, dict[str, str]] = {
    "sentinel-2": {"swir1": "swir16", "swir2": "swir22", "nir1": "nir"},
    "landsat": {"nir": "nir08", "swir1": "swir16", "swir2": "swir22", "lwir11": "lwir",
                "fmask": "qa_pixel"},
    "dem": {"dem": "data", "elevation": "data", "height": "data"},
    "sentinel-1": {},
}
#: Canonical ids of reflectance bands: their values are reflectance x 10 000 in the engine.
REFLECTANCE: frozenset[str] = frozenset({
    "coastal", "blue", "green", "red", "rededge", "rededge1", "rededge2", "rededge3", "nir",
    "nir08", "nir09", "cirrus", "swir16", "swir22", "pan",
})
#: The engine's reflectance unit: stored reflectance 0..1 is multiplied by this.
REFLECTANCE_UNIT = 10_000.0
FAMILIES: tuple[str, ...] = ("sentinel-2", "landsat", "sentinel-1", "dem")

_RESOLUTION = re.compile(r"^(?P<base>.+?)_(?P<res>\d+)m$")  # CDSE: B04_10m, SCL_20m


def split_resolution(key: str) -> tuple[str, float | None]:
    """``"B04_10m"`` -> ``("B04", 10.0)``; other keys unchanged with None."""
    m = _RESOLUTION.match(key)
    return (m["base"], float(m["res"])) if m else (key, None)


def family(properties: Mapping[str, Any], collection_id: str = "") -> str | None:
    """The sensor family of an item or collection (its properties or summaries), or None.

    Landsat is refined to ``"landsat-oli"`` (8/9) or ``"landsat-tm"`` (4-7) when the
    platform says which; band numbers differ between them.
    """
    text = " ".join(_strings(properties.get(k)) for k in ("constellation", "platform",
                                                          "mission", "instruments"))
    text = re.sub(r"[\s_]+", "-", f"{text} {collection_id}".lower())  # "Sentinel 2"
    if "sentinel-2" in text or "sentinel2" in text or re.search(r"\bs2[ab_-]", text):
        return "sentinel-2"
    if "landsat" in text:
        platforms = re.sub(r"[\s_]+", "-", _strings(properties.get("platform")).lower())
        if re.search(r"landsat-?[89]", platforms):
            return "landsat-oli"
        if re.search(r"landsat-?[457]", platforms):
            return "landsat-tm"
        return "landsat"
    if "sentinel-1" in text or "sentinel1" in text:
        return "sentinel-1"
    if "dem" in re.split(r"[^a-z0-9]+", text) or "elevation" in text:
        return "dem"
    return None


def base_family(fam: str | None) -> str | None:
    """``"landsat-oli"``/``"landsat-tm"`` -> ``"landsat"``; other families unchanged."""
    return "landsat" if fam is not None and fam.startswith("landsat") else fam


def canonical(name: str, fam: str | None) -> str:
    """The canonical id of band ``name`` in sensor family ``fam`` (lower-case)."""
    low = split_resolution(name.strip())[0].lower()
    if fam is None:
        return low
    if fam == "sentinel-2":
        low = S2_BANDS.get(low, S2_BANDS.get(_pad(low), low))
    elif fam.startswith("landsat"):
        tables = {"landsat-oli": (LANDSAT_OLI,), "landsat-tm": (LANDSAT_TM,)}.get(fam, ())
        for table in tables:
            low = table.get(low, low)
    return SYNONYMS.get(base_family(fam) or "", {}).get(low, low)


def aliases(names: Iterable[str], fams: Iterable[str | None]) -> list[str]:
    """Every other name that means one of ``names`` in one of the families ``fams``
    (for the "valid choices" of a collection): ``red`` -> ``B04``, ``b04`` on Sentinel-2."""
    fams = list(fams)
    names = list(names)
    out: list[str] = []
    for fam in fams:
        if fam is None:
            continue
        wanted = {canonical(n, fam) for n in names}
        base = base_family(fam) or ""
        tables = {"sentinel-2": S2_BANDS, "landsat-oli": LANDSAT_OLI,
                  "landsat-tm": LANDSAT_TM}.get(fam, {})
        out += [k.upper() for k, v in tables.items() if v in wanted]
        out += [k for k, v in SYNONYMS.get(base, {}).items() if v in wanted]
        out += sorted(wanted)
    return list(dict.fromkeys(out))


def value_transform(raster_band: Mapping[str, Any] | None, canonical_id: str, *,
                    offset_applied: bool = False) -> tuple[float, float] | None:
    """``(mul, add)`` turning stored numbers into engine values (``v * mul + add``), or
    None when they are used as stored (no scale/offset, or scale 1 and offset 0).

    ``offset_applied``: the provider already shifted the numbers (Earth Search's
    ``earthsearch:boa_offset_applied``), so the declared offset must not be added again.
    """
    rb = raster_band or {}
    scale = rb.get("scale", 1.0)
    offset = 0.0 if offset_applied else rb.get("offset", 0.0)
    scale = float(scale) if isinstance(scale, int | float) else 1.0
    offset = float(offset) if isinstance(offset, int | float) else 0.0
    unit = REFLECTANCE_UNIT if canonical_id in REFLECTANCE and scale < 1.0 else 1.0
    mul, add = scale * unit, offset * unit
    if abs(mul - 1.0) < 1e-9 and add == 0.0:
        return None  # e.g. Sentinel-2 x 1e-4 without offset: already the engine's unit
    return mul, add


def _pad(low: str) -> str:
    """``b4`` -> ``b04`` (users type Sentinel-2 band numbers both ways)."""
    m = re.fullmatch(r"b(\d)", low)
    return f"b0{m[1]}" if m else low


def _strings(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return ""
