"""Which vector files GDAL may open, and with which driver (issue 18 item 2).

GDAL picks a driver from a file's *content*, not its name: an upload named ``fields.json``
holding an OGR VRT (``<SrcDataSource>CSV:/etc/passwd</SrcDataSource>``, or a
``/vsicurl/http://...`` source) made the server read its own files and fetch URLs. So a
vector file is opened only by the driver its suffix names: GeoJSON through GDAL's
``GeoJSON:`` prefix (no other driver can take it), and GeoPackage, Shapefile and KML only
when their first bytes are what that format starts with; the driver GDAL used is checked
again after opening. Names (an upload's file name, a typed path) with GDAL's virtual file
systems (``/vsi...``) or driver/connection prefixes (``CSV:``, ``PG:``) are refused before
anything is opened (the rules of ``engine.security.check_gdal_path``, shared with rasters).
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InvalidInput

#: Suffixes read_vector understands -> what they are.
FORMATS: dict[str, str] = {
    ".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GeoPackage",
    ".zip": "zipped Shapefile", ".shp": "Shapefile", ".kml": "KML",
}
#: The OGR drivers each kind of file may be opened with.
DRIVERS: dict[str, frozenset[str]] = {
    "GeoJSON": frozenset({"GeoJSON"}), "GeoPackage": frozenset({"GPKG"}),
    "zipped Shapefile": frozenset({"ESRI Shapefile"}),
    "Shapefile": frozenset({"ESRI Shapefile"}), "KML": frozenset({"KML", "LIBKML"}),
}
#: Largest vector file read, and largest zip content unpacked (bytes).
MAX_BYTES = 50 * 2**20

_SHP_MAGIC = b"\x00\x00\x27\x0a"
_SQLITE_MAGIC = b"SQLite format 3\x00"
#: The first element of an XML document (after the declaration, comments, doctype).
_XML_ROOT = re.compile(rb"^(?:\s|<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>)*<([A-Za-z_][\w.:-]*)",
                       re.DOTALL)


@dataclass(frozen=True)
class VectorSource:
    """What GDAL is given: the path (with a driver prefix where GDAL has one), the kind of
    file, and the drivers it may have been opened with."""

    gdal_path: str
    kind: str
    drivers: frozenset[str]


def check_vector_name(name: str, *, what: str = "vector file") -> str:
    """``name`` (an upload's file name or a typed path) unless GDAL would read it as an
    instruction: a virtual file system (``/vsicurl/``, ``/vsizip/``...), a driver or
    connection prefix (``CSV:``, ``PG:``), a VRT; InvalidInput naming the problem and the
    accepted formats otherwise. The rules are ``engine.security.check_gdal_path``'s."""
    from engine.security import check_gdal_path

    try:
        return check_gdal_path((name or "").strip(), what=f"the {what} name",
                               allow_urls=False)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, choices=list(FORMATS)) from None


def _head(path: Path, n: int = 4096) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _check_content(path: Path, kind: str, shown: str) -> None:
    """InvalidInput unless the file starts the way a ``kind`` file does."""
    head = _head(path)
    body = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if kind == "GeoJSON":
        ok = body[:1] in (b"{", b"")  # GDAL's GeoJSON: prefix decides the rest
    elif kind == "GeoPackage":
        ok = head.startswith(_SQLITE_MAGIC)
    elif kind in ("Shapefile", "zipped Shapefile"):
        ok = head.startswith(_SHP_MAGIC)
    else:  # KML: an XML document whose root element is <kml>
        m = _XML_ROOT.match(body)
        ok = m is not None and m.group(1).decode().split(":")[-1].lower() == "kml"
    if not ok:
        raise InvalidInput(f"{shown} is not a {kind} file: its content does not start like "
                           f"one (files are read only as the format their name says)",
                           choices=list(FORMATS))


def _unzip_shapefile(path: Path, workdir: Path) -> Path:
    """The .shp of a zipped Shapefile, unpacked into ``workdir`` with only its own parts."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            shp = [n for n in names if n.lower().endswith(".shp")]
            if not shp:
                inner = [n for n in names if Path(n).suffix.lower() in FORMATS]
                raise InvalidInput(f"the zip {path.name} holds no .shp file"
                                   + (f" (it has {inner[:5]})" if inner else ""))
            total = sum(i.file_size for i in zf.infolist())
            if total > MAX_BYTES:
                raise InvalidInput(f"the zip {path.name} unpacks to {total / 2**20:.0f} MB, "
                                   f"more than the limit of {MAX_BYTES / 2**20:.0f} MB")
            stem = shp[0][:-4]
            out = workdir / "shapefile"
            out.mkdir()
            for n in names:  # only the shapefile's own parts, under fixed names in workdir
                rest = n[len(stem):] if n.startswith(stem + ".") else ""
                if rest and "/" not in rest and re.fullmatch(r"\.[A-Za-z0-9.]{1,12}", rest):
                    (out / ("layer" + rest.lower())).write_bytes(zf.read(n))
    except zipfile.BadZipFile as exc:
        raise InvalidInput(f"{path.name} is not a readable zip file: {exc}") from None
    return out / "layer.shp"


def vector_source(path: Path, workdir: Path, *, shown: str | None = None) -> VectorSource:
    """How to open the vector file at ``path`` (its suffix names the format): checked,
    unpacked into ``workdir`` if zipped. ``shown``: the name used in messages."""
    shown = shown or path.name
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InvalidInput(f"unknown vector file type {suffix or '(no suffix)'!r} for "
                           f"{shown}", choices=list(FORMATS))
    kind = FORMATS[suffix]
    if kind == "zipped Shapefile":
        path = _unzip_shapefile(path, workdir)
    _check_content(path, kind, shown)
    gdal_path = f"GeoJSON:{path}" if kind == "GeoJSON" else str(path)
    return VectorSource(gdal_path=gdal_path, kind=kind, drivers=DRIVERS[kind])


__all__ = ["DRIVERS", "FORMATS", "MAX_BYTES", "VectorSource", "check_vector_name", "vector_source"]
