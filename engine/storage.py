"""Where band files live: local paths, or object storage over HTTP(S) and S3.

Catalog hrefs may be ``https://`` (Earth Search, the Planetary Computer, any web server
with range requests), ``s3://`` or ``gs://``; they become GDAL virtual paths
(``/vsicurl/``, ``/vsis3/``, ``/vsigs/``) here and only here, so user text never reaches
GDAL as a ``/vsi`` path. :func:`gdal_options` gives the GDAL settings that make COG reads
over the network cheap (one ranged GET for the header, no directory listings, merged
ranges, a block cache) and bounded (a timeout per request, a few retries). Failures name
the host: :class:`~engine.errors.StorageTimeout` (504) or
:class:`~engine.errors.StorageUnavailable` (502).
"""

from __future__ import annotations

import os
import threading
import time
from urllib.parse import urlparse

import rasterio.env

from engine.errors import DataUnavailable, InvalidInput, StorageTimeout, StorageUnavailable

#: href scheme -> GDAL virtual file system prefix.
SCHEMES: dict[str, str] = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/",
                           "gs": "/vsigs/"}
_TIMEOUT_WORDS = ("timed out", "timeout", "time-out")


def is_remote(href: str) -> bool:
    """True when ``href`` is read over the network (a URL or a GDAL network path)."""
    scheme = urlparse(href).scheme.lower()
    return scheme in SCHEMES or href.startswith(("/vsicurl/", "/vsis3/", "/vsigs/"))


def gdal_path(href: str) -> str:
    """The path GDAL opens for a catalog href: ``https://h/a.tif`` -> ``/vsicurl/https://
    h/a.tif``, ``s3://bucket/key`` -> ``/vsis3/bucket/key``; local paths unchanged.

    Before the first remote open GDAL gets :data:`GDAL_OPTIONS` (if nothing configured it
    yet), so every reader, also in a notebook or a Dask worker, has request timeouts."""
    parsed = urlparse(href)
    scheme = parsed.scheme.lower()
    if is_remote(href):
        configure_gdal()
    if scheme in ("http", "https"):
        return SCHEMES[scheme] + href
    if scheme in ("s3", "gs"):
        return f"{SCHEMES[scheme]}{parsed.netloc}{parsed.path}"
    if scheme == "file":
        return parsed.path
    return href


def host_of(href: str) -> str:
    """The host (or bucket) an href is read from, for error messages."""
    if href.startswith("/vsicurl/"):
        href = href[len("/vsicurl/"):]
    elif href.startswith(("/vsis3/", "/vsigs/")):
        return href.split("/")[2]
    parsed = urlparse(href)
    return parsed.netloc or parsed.path


def signature(href: str) -> tuple[int, int, int]:
    """``(inode, size, mtime)`` of a local file (cached handles notice replacements);
    a constant for remote files (object storage is immutable per key in practice).
    DataUnavailable when a local file is missing."""
    if is_remote(href):
        return (0, 0, 0)
    try:
        st = os.stat(href)
    except OSError as exc:
        raise DataUnavailable(f"source file is missing: {href} ({exc.strerror})") from None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def read_error(href: str, exc: BaseException, *, what: str = "read",
               started: float | None = None) -> DataUnavailable:
    """The engine error for a failed open/read of ``href``: for remote files a
    StorageTimeout or StorageUnavailable naming the host, else DataUnavailable.

    ``started`` (a ``time.monotonic()`` taken before the attempt) classifies by time as
    well as by text: when a request times out GDAL does not always raise an error of its
    own, and rasterio then reports the thread's previous GDAL message (seen: an old TLS
    error of another host), so an attempt that lasted the configured HTTP timeout is a
    timeout whatever the text says."""
    if not is_remote(href):
        return DataUnavailable(f"cannot {what} {href}: {exc}")
    host = host_of(href)
    text = str(exc)
    slow = started is not None and time.monotonic() - started >= 0.9 * _http_timeout_s()
    if slow or any(w in text.lower() for w in _TIMEOUT_WORDS):
        return StorageTimeout(f"storage at {host} did not answer in time ({what} {href}): "
                              f"{text}")
    return StorageUnavailable(f"storage at {host} failed ({what} {href}): {text}")


def _http_timeout_s() -> float:
    """GDAL_HTTP_TIMEOUT as configured now (seconds)."""
    try:
        return float(rasterio.env.get_gdal_config("GDAL_HTTP_TIMEOUT") or 30)
    except (TypeError, ValueError):
        return 30.0


def gdal_options(*, timeout_s: float = 10.0, retries: int = 2, cache_mb: int = 128,
                 handle_cache_mb: int = 4, multiplex: bool = True) -> dict[str, str]:
    """GDAL configuration for reading COGs locally and over HTTP/S3.

    Args:
        timeout_s: longest one HTTP request may take (connect + transfer).
        retries: retries of a failed request (5xx, 429, connection reset) before failing.
        cache_mb: GDAL's process-wide cache of downloaded blocks (all remote files).
        handle_cache_mb: read-ahead cache per open remote file (``VSI_CACHE``).
        multiplex: HTTP/2 multiplexing of parallel range requests to one host.
    """
    return {
        # no directory listing on open (on HTTP a listing is a request); sidecars are
        # probed one by one: local files keep their .ovr/.msk/.aux.xml/world files, and a
        # remote probe of any name but a raster's own extension is refused below before
        # a request is sent ("EMPTY_DIR" would hide local sidecars too: this is process-wide)
        "GDAL_DISABLE_READDIR_ON_OPEN": "TRUE",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.jp2,.JP2,.nc,.zarr",
        # the COG header and IFDs in the first GET (16 KiB is GDAL's default)
        "GDAL_INGESTED_BYTES_AT_OPEN": "32768",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "GDAL_HTTP_MULTIPLEX": "YES" if multiplex else "NO",
        "GDAL_HTTP_VERSION": "2TLS",  # HTTP/2 over https (ALPN), 1.1 on plain http
        "CPL_VSIL_CURL_CACHE_SIZE": str(int(cache_mb) * 2**20),
        "VSI_CACHE": "TRUE",
        "VSI_CACHE_SIZE": str(int(handle_cache_mb) * 2**20),
        "GDAL_HTTP_TIMEOUT": str(max(1, round(timeout_s))),
        "GDAL_HTTP_CONNECTTIMEOUT": str(max(1, round(min(timeout_s, 5.0)))),
        "GDAL_HTTP_MAX_RETRY": str(int(retries)),
        "GDAL_HTTP_RETRY_DELAY": "0.5",
    }


#: GDAL options for reading COGs fast, locally and over HTTP/S3 (:func:`gdal_options`'s
#: defaults; the app passes its settings' values). Set ONCE per process, not per request
#: (a per-request ``rasterio.Env(GDAL_CACHEMAX=...)`` resizes and so flushes the block
#: cache). GDAL's default block cache (5% of RAM) is kept unless
#: ``configure_gdal(cache_mb=...)``.
GDAL_OPTIONS: dict[str, str] = gdal_options()
_gdal_configured = False
_gdal_lock = threading.Lock()


def configure_gdal(options: dict[str, str] | None = None, *,
                   cache_mb: int | None = None) -> None:
    """Apply :data:`GDAL_OPTIONS` process-wide (idempotent), and size GDAL's block cache to
    ``cache_mb`` MiB when given (its default, 5 % of RAM per process, adds up when
    several workers share a host)."""
    global _gdal_configured
    if cache_mb is not None and cache_mb < 1:
        raise InvalidInput(f"GDAL cache must be at least 1 MiB, got {cache_mb}")
    with _gdal_lock:
        if cache_mb is not None:  # an int is bytes to rasterio (GDALSetCacheMax64)
            rasterio.env.set_gdal_config("GDAL_CACHEMAX", int(cache_mb) * 2**20)
        if _gdal_configured and options is None:
            return
        for key, value in (options or GDAL_OPTIONS).items():
            rasterio.env.set_gdal_config(key, value)
        _gdal_configured = True
