"""A tile cache on local disk, shared by every worker process and replica on one host.

The in-memory LRU (:mod:`service.cache`) is per process: with several uvicorn workers a
tile rendered by one worker is rendered again by the others. This second level keeps
encoded tiles as files ``<root>/<chain id>/<fingerprint>/<z>/<x>/<y>[@<size>].<fmt>``:

- a write goes to a temporary file in the same folder, then ``os.replace``: a reader sees
  the old file, the new one, or none, never a half-written one;
- each file starts with a magic, the tile's blake2b digest (its ETag), its length and its
  notice (the ``X-EOX-Notice`` text of a tile the scene cap cut, often empty), so a file
  cut short by a crash (or a foreign file) is detected, dropped and rendered again (the
  digest is not re-verified on reads: it cost more than the read itself); files of the
  first format (``EOX1``, no notice) are still read;
- the fingerprint is the renderer's hash of the scenes the chain reads, so after an ingest
  changes them the new tiles get new paths (the old ones age out);
- the size bound is kept by a sweeper (one per host at a time, ``flock``) that deletes the
  least recently used files (mtime, refreshed on a hit) down to ``low_water`` of the bound.
  Between sweeps the bound can be exceeded by what the processes wrote since the last
  sweep (a sweep starts when a process's own writes could have crossed the bound, and at
  least every ``sweep_interval`` seconds while it writes).

Measured against a SQLite table (``bench/diskcache.py``, bench/RESULTS.md): SQLite was as
fast or a little faster (hits 0.025 vs 0.033 ms, writes 0.2-1.1 vs 0.3-3.4 ms), both
negligible next to a render (50-400 ms) or an HTTP request (~2 ms). Files were kept: hits
and LRU touches take no lock shared by the workers (SQLite has one writer at a time), space
freed by the sweeper is free at once (no VACUUM), and a damaged file costs one tile, not
the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from service.cache import CachedTile

log = logging.getLogger(__name__)

MAGIC = b"EOX2"
MAGIC_V1 = b"EOX1"  # no notice
DIGEST_SIZE = 16
HEADER = len(MAGIC) + DIGEST_SIZE + 8  # magic, digest, content length (little endian)
NOTICE_LEN = 2  # then (EOX2) the notice's length in bytes and the notice, UTF-8
#: Bytes charged per file on top of its blocks (inode, directory entry).
FILE_OVERHEAD = 256
#: Temporary files older than this are leftovers of a killed writer.
STALE_TMP_S = 600.0
_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FORMATS = frozenset({"png", "webp", "jpg"})


def etag_of(content: bytes) -> str:
    """The strong ETag of a tile: the blake2b digest of its bytes, quoted."""
    return '"' + hashlib.blake2b(content, digest_size=DIGEST_SIZE).hexdigest() + '"'


@dataclass(frozen=True)
class DiskKey:
    """Where a tile lives: the chain, the fingerprint of its scenes, the tile and encoding."""

    chain_id: str
    fingerprint: str
    z: int
    x: int
    y: int
    tilesize: int
    fmt: str

    def valid(self) -> bool:
        """True if every part is safe to use in a path (chain ids come from URLs)."""
        return (bool(_SAFE.match(self.chain_id)) and bool(_SAFE.match(self.fingerprint))
                and self.fmt in _FORMATS and min(self.z, self.x, self.y) >= 0
                and 1 <= self.tilesize <= 4096)


def _digest(entry: CachedTile) -> bytes:
    """The tile's blake2b digest, taken from its ETag when that is one (saves a hash)."""
    tag = entry.etag.strip('"')
    if len(tag) == 2 * DIGEST_SIZE:
        with contextlib.suppress(ValueError):
            return bytes.fromhex(tag)
    return hashlib.blake2b(entry.content, digest_size=DIGEST_SIZE).digest()


def _body(data: bytes) -> tuple[bytes | None, str]:
    """The content and notice of a cache file's bytes; (None, "") if it is damaged."""
    magic = data[:len(MAGIC)]
    if len(data) < HEADER or magic not in (MAGIC, MAGIC_V1):
        return None, ""
    start, notice = HEADER, ""
    if magic == MAGIC:
        n = int.from_bytes(data[HEADER:HEADER + NOTICE_LEN], "little")
        start = HEADER + NOTICE_LEN + n
        try:
            notice = data[HEADER + NOTICE_LEN:start].decode()
        except UnicodeDecodeError:
            return None, ""
    content = data[start:]
    if len(data) < start or int.from_bytes(data[HEADER - 8:HEADER], "little") != len(content):
        return None, ""
    return content, notice


def _charge(size: int) -> int:
    """Estimated disk use of a file of ``size`` bytes (4 KiB blocks) plus its overhead."""
    return -(-size // 4096) * 4096 + FILE_OVERHEAD


class DiskTileCache:
    """Encoded tiles as files under ``root``, bounded to about ``max_bytes`` of disk.

    Args:
        root: the cache folder (created); every process on the host may use the same one.
        max_bytes: the bound (> 0); sweeps delete least recently used files down to
            ``low_water * max_bytes``.
        sweep_interval: a writing process re-measures the folder at least this often (s).
        touch_after: a hit refreshes a file's mtime (its recency) if older than this (s).
    """

    def __init__(self, root: str | Path, max_bytes: int, *, low_water: float = 0.8,
                 sweep_interval: float = 30.0, touch_after: float = 60.0) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        if not 0 < low_water <= 1:
            raise ValueError(f"low_water must be in (0, 1], got {low_water}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.low_water = low_water
        self.sweep_interval = sweep_interval
        self.touch_after = touch_after
        self._lock = threading.Lock()
        self._estimate: int | None = None  # bytes at the last sweep + own writes since
        self._last_sweep = 0.0
        self._sweeping = False
        self.hits = self.misses = self.writes = self.errors = 0
        self.swept_files = 0
        self.sweeps = 0

    # -- paths --------------------------------------------------------------------------
    def path_for(self, key: DiskKey) -> Path:
        """The file of ``key`` (ValueError if a part is unsafe in a path)."""
        if not key.valid():
            raise ValueError(f"invalid disk cache key {key!r}")
        name = f"{key.y}.{key.fmt}" if key.tilesize == 256 else f"{key.y}@{key.tilesize}.{key.fmt}"
        return self.root / key.chain_id / key.fingerprint / str(key.z) / str(key.x) / name

    # -- reading ------------------------------------------------------------------------
    def get(self, key: DiskKey) -> CachedTile | None:
        """The tile stored for ``key``, or None (missing or damaged: then it is deleted)."""
        if not key.valid():
            self.misses += 1
            return None
        path = self.path_for(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
                mtime = os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            self.misses += 1
            return None
        except OSError as exc:
            log.warning("tile disk cache: cannot read %s: %s", path, exc)
            self.errors += 1
            self.misses += 1
            return None
        digest = data[len(MAGIC):len(MAGIC) + DIGEST_SIZE]
        content, notice = _body(data)
        if content is None:
            log.warning("tile disk cache: %s is damaged; dropped", path)
            self.errors += 1
            self.misses += 1
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        if time.time() - mtime > self.touch_after:
            with contextlib.suppress(OSError):  # swept meanwhile: nothing to refresh
                os.utime(path)
        self.hits += 1
        return CachedTile(content=content, etag='"' + digest.hex() + '"', notice=notice)

    # -- writing ------------------------------------------------------------------------
    def put(self, key: DiskKey, entry: CachedTile) -> None:
        """Store ``entry`` atomically (temporary file + rename); may start a sweep."""
        notice = entry.notice.encode()[:2**16 - 1].decode(errors="ignore").encode()
        size = len(entry.content) + HEADER + NOTICE_LEN + len(notice)
        if not key.valid() or _charge(size) > self.max_bytes:
            return
        path = self.path_for(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        header = (MAGIC + _digest(entry) + len(entry.content).to_bytes(8, "little")
                  + len(notice).to_bytes(NOTICE_LEN, "little") + notice)
        for attempt in (1, 2, 3):  # no folder yet; or a sweep removed it after mkdir
            try:
                with open(tmp, "wb") as f:
                    f.write(header + entry.content)
                os.replace(tmp, path)
                break
            except OSError as exc:  # a full or read-only disk must not fail the request
                if isinstance(exc, FileNotFoundError) and attempt < 3:
                    with contextlib.suppress(OSError):
                        path.parent.mkdir(parents=True, exist_ok=True)
                    continue
                log.warning("tile disk cache: cannot write %s: %s", path, exc)
                self.errors += 1
                with contextlib.suppress(OSError):
                    tmp.unlink()
                return
        with self._lock:
            self.writes += 1
            if self._estimate is not None:
                self._estimate += _charge(size)
            due = (self._estimate is None or self._estimate > self.max_bytes
                   or time.monotonic() - self._last_sweep > self.sweep_interval)
            start = due and not self._sweeping
            if start:
                self._sweeping = True
        if start:
            threading.Thread(target=self._sweep_in_background, name="eox-tile-sweeper",
                             daemon=True).start()

    # -- the bound ----------------------------------------------------------------------
    def _sweep_in_background(self) -> None:
        try:
            self.sweep()
        except OSError:
            log.exception("tile disk cache: sweep of %s failed", self.root)
        finally:
            with self._lock:
                self._sweeping = False

    def sweep(self, *, wait: bool = False) -> int | None:
        """Measure the folder and delete least recently used tiles while it is over the
        bound; returns the bytes in use after it, or None if another process is sweeping
        (``wait=True``: wait for it, then sweep)."""
        lock_path = self.root / ".sweep.lock"
        with open(lock_path, "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                with self._lock:  # someone else measures: try again after an interval
                    self._last_sweep = time.monotonic()
                return None
            try:
                total = self._sweep_locked()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        with self._lock:
            self._estimate = total
            self._last_sweep = time.monotonic()
            self.sweeps += 1
        return total

    def _sweep_locked(self) -> int:
        files: list[tuple[float, int, str]] = []
        total = 0
        now = time.time()
        for dirpath, dirnames, filenames in os.walk(self.root, topdown=False):
            for name in filenames:
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                if name.endswith(".tmp"):
                    if now - st.st_mtime > STALE_TMP_S:
                        with contextlib.suppress(OSError):
                            os.unlink(full)
                    continue
                if name == ".sweep.lock":
                    continue
                size = max(st.st_blocks * 512, st.st_size) + FILE_OVERHEAD
                files.append((st.st_mtime, size, full))
                total += size
            if dirpath != str(self.root) and not filenames and not dirnames:
                with contextlib.suppress(OSError):  # not empty any more: a writer came
                    os.rmdir(dirpath)
        if total <= self.max_bytes:
            return total
        target = int(self.low_water * self.max_bytes)
        files.sort()
        removed = 0
        for _, size, full in files:
            if total <= target:
                break
            try:
                os.unlink(full)
            except FileNotFoundError:
                pass
            total -= size
            removed += 1
        self.swept_files += removed
        log.info("tile disk cache: swept %d files from %s (now %.1f MiB)", removed, self.root,
                 total / 2**20)
        return total

    def stats(self) -> dict[str, int | str | None]:
        """Counters for /healthz."""
        with self._lock:
            return {"root": str(self.root), "max_bytes": self.max_bytes,
                    "bytes_estimate": self._estimate, "hits": self.hits,
                    "misses": self.misses, "writes": self.writes, "errors": self.errors,
                    "sweeps": self.sweeps, "swept_files": self.swept_files}
