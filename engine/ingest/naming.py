"""What file and product names tell about a scene: band, date, platform, tile, level.

Sentinel-2 and Landsat encode most of their metadata in their names; reading them here
keeps the input readers free of regular expressions and gives one place to extend.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

#: Sentinel-2 band -> STAC common name (conventions file).
S2_COMMON_NAMES: dict[str, str] = {
    "B01": "coastal",
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge",
    "B06": "rededge",
    "B07": "rededge",
    "B08": "nir",
    "B8A": "nir08",
    "B09": "nir09",
    "B10": "cirrus",
    "B11": "swir16",
    "B12": "swir22",
}
S2_BAND_ORDER: tuple[str, ...] = tuple(S2_COMMON_NAMES) + ("SCL", "TCI", "AOT", "WVP")

#: Landsat band numbers -> asset key, per sensor family (TM/ETM+ vs OLI).
_LANDSAT_TM_BANDS = {1: "blue", 2: "green", 3: "red", 4: "nir", 5: "swir1", 6: "lwir", 7: "swir2"}
_LANDSAT_OLI_BANDS = {
    1: "coastal",
    2: "blue",
    3: "green",
    4: "red",
    5: "nir",
    6: "swir1",
    7: "swir2",
    8: "pan",
    9: "cirrus",
    10: "lwir11",
    11: "lwir12",
}
#: Landsat asset key -> STAC common name.
LANDSAT_COMMON_NAMES: dict[str, str] = {
    "coastal": "coastal",
    "blue": "blue",
    "green": "green",
    "red": "red",
    "nir": "nir08",
    "swir1": "swir16",
    "swir2": "swir22",
    "pan": "pan",
    "cirrus": "cirrus",
    "lwir": "lwir",
    "lwir11": "lwir11",
    "lwir12": "lwir12",
}
LANDSAT_BAND_ORDER: tuple[str, ...] = tuple(LANDSAT_COMMON_NAMES) + ("fmask", "qa_pixel")

#: Band keys that are cloud/scene-classification masks, and the mask kind for cloud.py.
MASK_BANDS: dict[str, str] = {"SCL": "scl", "fmask": "fmask"}

_BAND_TOKEN = re.compile(
    r"(?:^|[_\-.])(?P<band>B\d{1,2}A?|SCL|TCI|AOT|WVP|SR_B\d{1,2}|ST_B\d{1,2}|QA_PIXEL|"
    r"band\d{1,2}|c?fmask)(?:_(?P<res>\d{2})m)?$",
    re.IGNORECASE,
)
_S2_TILE = re.compile(
    r"(?:^|[_/])T?(?P<tile>\d{2}[C-X][A-Z]{2})_(?P<date>\d{8})(?:T(?P<time>\d{6}))?"
)
_S2_PRODUCT = re.compile(
    r"(?P<sat>S2[ABC])_MSI(?P<level>L1C|L2A)_(?P<date>\d{8})T(?P<time>\d{6})_N\d{4}_R(?P<orbit>\d{3})"
    r"_T(?P<tile>\d{2}[C-X][A-Z]{2})"
)
_S2_EARTHSEARCH = re.compile(
    r"(?P<sat>S2[ABC])_(?P<tile>\d{2}[C-X][A-Z]{2})_(?P<date>\d{8})_\d+_(?P<level>L1C|L2A)"
)
_S2_LOOSE = re.compile(r"(?:^|[_/])(?P<sat>S2[ABC]?)_(?:MSI)?(?P<level>L1C|L2A|L3A)(?:_|$)")
_S1_LOOSE = re.compile(
    r"(?:^|[_/])(?P<sat>S1[ABC]?)_(?P<product>GRD|SLC|RTC)(?:[_-](?P<orbit>ASCENDING|DESCENDING))?",
    re.IGNORECASE,
)
_MODIS = re.compile(r"(?:^|[_/])(?:(?P<platform>TERRA|AQUA)_MODIS|(?P<product>MOD|MYD)\d{2}[A-Z]\d)",
                    re.IGNORECASE)
_LANDSAT_PRE = re.compile(
    r"(?:^|[_/])L(?P<sensor>[COTEM])(?P<sat>\d)(?P<path>\d{3})(?P<row>\d{3})(?P<year>\d{4})"
    r"(?P<doy>\d{3})[A-Z]{3}\d{2}"
)
_LANDSAT_C = re.compile(
    r"(?:^|[_/])L(?P<sensor>[COTEM])(?P<sat>\d{2})_(?P<level>L1TP|L1GT|L1GS|L2SP|L2SR)_"
    r"(?P<path>\d{3})(?P<row>\d{3})_(?P<date>\d{8})_\d{8}_\d{2}_(?:T1|T2|RT)"
)
_YMD = r"(?<!\d)(?P<y>(?:19|20)\d{2})"
_DATE_PATTERNS = (
    re.compile(_YMD + r"(?P<m>[01]\d)(?P<d>[0-3]\d)T(?P<H>\d{2})(?P<M>\d{2})(?P<S>\d{2})(?!\d)"),
    re.compile(
        _YMD + r"-(?P<m>[01]\d)-(?P<d>[0-3]\d)(?:[T_ ](?P<H>\d{2}):?(?P<M>\d{2}):?(?P<S>\d{2}))?"
    ),
    re.compile(_YMD + r"(?P<m>[01]\d)(?P<d>[0-3]\d)(?!\d)"),
)


@dataclass
class SceneName:
    """Metadata read from a scene's name (file stem, folder or product name)."""

    constellation: str | None = None  # "sentinel-2", "landsat"
    properties: dict[str, Any] = field(default_factory=dict)
    datetime: datetime | None = None
    landsat_family: str | None = None  # "tm" or "oli": picks the band table


def split_band(stem: str) -> tuple[str, str] | None:
    """Split ``T33UUU_20170216T102101_B02_10m`` into (scene key, raw band token)."""
    m = _BAND_TOKEN.search(stem)
    if m is None:
        return None
    return stem[: m.start()].strip("_-."), m.group("band")


def parse_scene(name: str) -> SceneName:
    """Read constellation, platform, tile, level and date from a name or path."""
    out = SceneName()
    if m := _S2_PRODUCT.search(name):
        _set_s2(out, m.group("sat"), m.group("tile"), m.group("level"))
        out.properties["sat:relative_orbit"] = int(m.group("orbit"))
        out.datetime = _dt(m.group("date"), m.group("time"))
    elif m := _S2_EARTHSEARCH.search(name):
        _set_s2(out, m.group("sat"), m.group("tile"), m.group("level"))
        out.datetime = _dt(m.group("date"), None)
    elif m := _LANDSAT_C.search(name):
        _set_landsat(out, m.group("sensor"), int(m.group("sat")), m.group("path"), m.group("row"))
        out.properties["processing:level"] = m.group("level")
        out.datetime = _dt(m.group("date"), None)
    elif m := _LANDSAT_PRE.search(name):
        _set_landsat(out, m.group("sensor"), int(m.group("sat")), m.group("path"), m.group("row"))
        day = datetime(int(m.group("year")), 1, 1, tzinfo=UTC)
        out.datetime = day + timedelta(days=int(m.group("doy")) - 1)
    elif m := _S2_TILE.search(name):
        _set_s2(out, None, m.group("tile"), None)
        out.datetime = _dt(m.group("date"), m.group("time"))
    elif m := _S2_LOOSE.search(name):
        sat = m.group("sat")
        _set_s2(out, sat if len(sat) == 3 else None, None, m.group("level"))
    elif m := _S1_LOOSE.search(name):
        out.constellation = "sentinel-1"
        out.properties["constellation"] = "sentinel-1"
        out.properties["instruments"] = ["c-sar"]
        out.properties["sar:product_type"] = m.group("product").upper()
        if len(m.group("sat")) == 3:
            out.properties["platform"] = f"sentinel-1{m.group('sat')[-1].lower()}"
        if m.group("orbit"):
            out.properties["sat:orbit_state"] = m.group("orbit").lower()
    elif m := _MODIS.search(name):
        platform = m.group("platform") or {"MOD": "terra", "MYD": "aqua"}[
            m.group("product").upper()]
        out.properties["platform"] = platform.lower()
        out.properties["instruments"] = ["modis"]
    if out.datetime is None:
        out.datetime = parse_date(name)
    return out


def parse_date(text: str) -> datetime | None:
    """The first date (optionally with time) written in ``text``, as UTC."""
    for pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            g = m.groupdict()
            try:
                return datetime(
                    int(g["y"]),
                    int(g["m"]),
                    int(g["d"]),
                    int(g.get("H") or 0),
                    int(g.get("M") or 0),
                    int(g.get("S") or 0),
                    tzinfo=UTC,
                )
            except ValueError:  # not a real date (e.g. month 13): try the next match
                continue
    return None


def band_key(raw: str, scene: SceneName) -> str:
    """The asset key for a raw band token, in the sensor's own naming (conventions)."""
    token = raw.upper()
    if token in ("FMASK", "CFMASK"):
        return "fmask"
    if scene.constellation == "landsat":
        if token == "QA_PIXEL":
            return "qa_pixel"
        m = re.fullmatch(r"(?:SR_|ST_)?(?:B|BAND)(\d{1,2})", token)
        if m:
            table = _LANDSAT_OLI_BANDS if scene.landsat_family == "oli" else _LANDSAT_TM_BANDS
            number = int(m.group(1))
            if number in table:
                return table[number]
        return raw.lower()
    m = re.fullmatch(r"B(\d{1,2})(A?)", token)
    # "B2"/"b8a" are Sentinel-2 names; a bare "b1" of an unknown sensor stays as written
    if m and (scene.constellation == "sentinel-2" or raw[0] == "B"):
        number = int(m.group(1))
        return f"B{number}A" if m.group(2) else f"B{number:02d}"
    return token if token in ("SCL", "TCI", "AOT", "WVP") else raw


def eo_band(key: str, constellation: str | None) -> dict[str, str]:
    """The ``eo:bands`` entry of a band: its name, and its common name when known."""
    band: dict[str, str] = {"name": key}
    common = None
    if constellation == "sentinel-2":
        common = S2_COMMON_NAMES.get(key.upper())
    elif constellation == "landsat":
        common = LANDSAT_COMMON_NAMES.get(key.lower())
    if common:
        band["common_name"] = common
    return band


def band_sort_key(key: str) -> tuple[int, str]:
    """Order bands as the sensor does (B01..B12, then masks), unknown names last."""
    for order in (S2_BAND_ORDER, LANDSAT_BAND_ORDER):
        if key in order:
            return order.index(key), key
    return 1000, key


def _dt(date: str, time: str | None) -> datetime:
    time = time or "000000"
    return datetime.strptime(date + time, "%Y%m%d%H%M%S").replace(tzinfo=UTC)


def _set_s2(out: SceneName, sat: str | None, tile: str | None, level: str | None) -> None:
    out.constellation = "sentinel-2"
    out.properties["constellation"] = "sentinel-2"
    if sat and sat[-1] in "ABC":
        out.properties["platform"] = f"sentinel-2{sat[-1].lower()}"
    if tile:
        out.properties["grid:code"] = f"MGRS-{tile}"
        out.properties["mgrs:utm_zone"] = int(tile[:2])
        out.properties["mgrs:latitude_band"] = tile[2]
        out.properties["mgrs:grid_square"] = tile[3:]
    if level:
        out.properties["processing:level"] = level


def set_mgrs_tile(out: SceneName, tile: str) -> None:
    """Add a Sentinel-2 MGRS tile known from elsewhere (e.g. a cube's ``tile`` attribute)."""
    if re.fullmatch(r"\d{2}[C-X][A-Z]{2}", tile) and "grid:code" not in out.properties:
        _set_s2(out, None, tile, None)


def _set_landsat(out: SceneName, sensor: str, sat: int, path: str, row: str) -> None:
    out.constellation = "landsat"
    out.landsat_family = "oli" if sensor in "CO" else "tm"
    out.properties["constellation"] = "landsat"
    out.properties["platform"] = f"landsat-{sat}"
    out.properties["instruments"] = [
        {"C": "oli", "O": "oli", "T": "tm", "E": "etm+", "M": "mss"}[sensor]
    ]
    out.properties["grid:code"] = f"WRS2-{path}{row}"
    out.properties["landsat:wrs_path"] = path
    out.properties["landsat:wrs_row"] = row
