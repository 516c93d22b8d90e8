"""The one check on text that GDAL will open: a plain file path or an http(s) URL, nothing
GDAL would read as an instruction.

GDAL decides what to open from the *text* (``/vsicurl/http://...`` fetches a URL,
``/vsizip/...`` looks inside archives, ``CSV:/etc/passwd`` or ``PG:dbname=...`` pick a
driver and a connection) and from the *content* (a file holding VRT XML points anywhere).
So user text (chain fields, paths, uploads) and catalog text (STAC hrefs, checked again at
render time, since a remote catalog can say anything) goes through :func:`check_gdal_path`,
and rasters are opened with the drivers of :data:`RASTER_DRIVERS` only, never VRT.
"""

from __future__ import annotations

import os
import re
from typing import Any

from engine.errors import DataUnavailable, EOXError, InvalidInput

#: The driver a raster is opened with, by the first bytes of a local file: never VRT or a
#: driver taking connection strings, whatever the file says it is.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "GTiff"), (b"MM\x00*", "GTiff"), (b"II+\x00", "GTiff"), (b"MM\x00+", "GTiff"),
    (b"\x00\x00\x00\x0cjP  ", "JP2OpenJPEG"), (b"\xffO\xffQ", "JP2OpenJPEG"),
    (b"CDF\x01", "netCDF"), (b"CDF\x02", "netCDF"), (b"\x89HDF", "netCDF"),
    (b"\x89PNG", "PNG"), (b"\xff\xd8\xff", "JPEG"),
)
#: The driver of a URL (its content cannot be sniffed before GDAL fetches it), by suffix.
_URL_SUFFIX: dict[str, str] = {".tif": "GTiff", ".tiff": "GTiff", ".jp2": "JP2OpenJPEG",
                               ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
#: Drivers raster reads may use.
RASTER_DRIVERS: tuple[str, ...] = tuple(dict.fromkeys(d for _, d in _MAGIC))

#: ``SCHEME:rest`` where GDAL reads SCHEME as a driver or a connection (``CSV:``,
#: ``NETCDF:``, ``PG:``, ``GPKG:``, ``WMS:``...); a Windows drive letter is one letter.
_DRIVER_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]+:")
#: URL schemes accepted (engine.storage turns them into GDAL network paths itself).
URL_SCHEMES: tuple[str, ...] = ("http://", "https://", "s3://", "gs://")
#: Extensions of files GDAL reads as instructions to open other files.
_INSTRUCTION_SUFFIXES: tuple[str, ...] = (".vrt", ".ovr.vrt", ".xml", ".aux.xml", ".gti",
                                          ".gti.gpkg")


def check_gdal_path(text: str, *, what: str = "path", allow_urls: bool = True,
                    error: type[EOXError] = InvalidInput) -> str:
    """``text`` unchanged if GDAL may open it, else ``error`` (InvalidInput: user text;
    DataUnavailable: a catalog's href) naming ``what`` and why.

    Refused: empty text, NUL or newline characters, GDAL virtual file systems (``/vsi*``
    anywhere in the text), driver or connection prefixes (``CSV:``, ``PG:``,
    ``NETCDF:``...), VRT and other instruction files, URL schemes other than http(s)
    (``allow_urls=False``: any URL). Accepted: absolute or relative file paths, ``file://``
    paths, and http(s) URLs.
    """
    if not isinstance(text, str) or not text.strip():
        raise error(f"{what} is empty")
    if any(c in text for c in "\x00\r\n"):
        raise error(f"{what} contains control characters")
    low = text.strip().lower()
    if "/vsi" in low or low.startswith("vsi") or "\\vsi" in low:
        raise error(f"{what} {text!r:.120}: GDAL virtual file systems (/vsi...) are "
                           "not accepted; give a file path or an http(s) URL")
    if low.startswith(URL_SCHEMES):
        if not allow_urls:
            raise error(f"{what} {text!r:.120}: URLs are not accepted here; give a "
                               "file path")
    elif low.startswith("file://"):
        pass
    elif _DRIVER_PREFIX.match(text.strip()):
        scheme = text.strip().split(":", 1)[0]
        raise error(f"{what} {text!r:.120}: {scheme!r} is a GDAL driver or connection "
                           "prefix, not accepted; give a file path"
                           + (" or an http(s) URL" if allow_urls else ""),
                           choices=[s.rstrip(":/") for s in URL_SCHEMES] if allow_urls else None)
    path = low.split("?", 1)[0].split("#", 1)[0]
    if path.endswith(_INSTRUCTION_SUFFIXES):
        raise error(f"{what} {text!r:.120}: VRT and other GDAL instruction files are "
                           "not accepted; give the raster file itself")
    return text


def raster_driver(path: str, *, what: str = "source file",
                  error: type[EOXError] = InvalidInput) -> str:
    """The GDAL driver to read ``path`` with, from its first bytes (local files) or its
    suffix (URLs, GeoTIFF when it has none); DataUnavailable for any other content,
    ``error`` for text :func:`check_gdal_path` refuses."""
    check_gdal_path(path, what=what, error=error)
    if path.lower().startswith(URL_SCHEMES):
        suffix = os.path.splitext(path.split("?", 1)[0].split("#", 1)[0])[1].lower()
        return _URL_SUFFIX.get(suffix, "GTiff")
    local = path[len("file://"):] if path.lower().startswith("file://") else path
    try:
        with open(local, "rb") as f:
            head = f.read(12)
    except OSError:
        return "GTiff"  # missing: opening fails with GDAL's own message
    for magic, driver in _MAGIC:
        if head.startswith(magic):
            return driver
    raise DataUnavailable(f"{what} {path!r:.120} is not a GeoTIFF, JPEG 2000, netCDF/HDF5, PNG "
                       "or JPEG file (by its content): not opened",
                       choices=RASTER_DRIVERS)


def open_raster(path: str, *, what: str = "source file", error: type[EOXError] = InvalidInput,
                **kwargs: Any) -> Any:
    """``rasterio.open(path, **kwargs)`` for reading, after :func:`check_gdal_path` and with
    the one driver :func:`raster_driver` allows (a VRT named ``.tif`` is refused)."""
    import rasterio

    from engine.storage import gdal_path

    driver = raster_driver(path, what=what, error=error)
    return rasterio.open(gdal_path(path), driver=driver, **kwargs)


__all__ = ["RASTER_DRIVERS", "URL_SCHEMES", "check_gdal_path", "open_raster", "raster_driver"]
