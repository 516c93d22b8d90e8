"""Persist chains by id in the ``chains`` table of a SQLite file, so tile URLs survive restarts.

Parsed chains are kept in a per-process LRU bounded in bytes; it only ever holds what the
table holds under that id (the first chain stored under an id wins, in the table and here).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path

from engine.chain.model import Chain
from engine.errors import CatalogError, ChainError, NotFound

#: Bytes a parsed chain takes in memory per byte of its JSON (pydantic models, tuples,
#: parsed expressions): tracemalloc gave ~7 on chains of 120-480 kB; bounds the cache.
MEMORY_PER_JSON_BYTE = 8

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chains (
    id TEXT PRIMARY KEY,
    json TEXT NOT NULL,
    created TEXT NOT NULL
)
"""


class ChainStore:
    """Chains by id, in the same SQLite file as the embedded catalog (or any local file)."""

    def __init__(self, db_path: str | Path, *, cache_bytes: int = 64 * 2**20) -> None:
        self.path = Path(db_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, tuple[Chain, int]] = OrderedDict()
        self._cached_bytes = 0
        self._cache_lock = threading.Lock()
        with self._connect() as con:
            con.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            try:
                con = sqlite3.connect(self.path, timeout=30)
            except sqlite3.Error as exc:
                raise CatalogError(f"cannot open the chain store {self.path}: {exc}") from None
            self._local.con = con
        return con

    def _remember(self, chain_id: str, chain: Chain, size: int) -> None:
        """Keep a parsed chain (least recently used ones go first; too big: not kept)."""
        cost = size * MEMORY_PER_JSON_BYTE
        if cost > self.cache_bytes:
            return
        with self._cache_lock:
            old = self._cache.pop(chain_id, None)
            if old is not None:
                self._cached_bytes -= old[1]
            self._cache[chain_id] = (chain, cost)
            self._cached_bytes += cost
            while self._cached_bytes > self.cache_bytes:
                _, (_, gone) = self._cache.popitem(last=False)
                self._cached_bytes -= gone

    def _cached(self, chain_id: str) -> Chain | None:
        with self._cache_lock:
            hit = self._cache.get(chain_id)
            if hit is not None:
                self._cache.move_to_end(chain_id)
        return hit[0] if hit is not None else None

    def put(self, chain: Chain) -> str:
        """Store ``chain`` (idempotent) and return its id; ChainError if another chain is
        stored under the same id (possible only for ids made before ids were full hashes)."""
        cid = chain.id
        text = chain.to_json()
        cached = self._cached(cid)
        if cached is not None and cached.to_json() == text:
            return cid
        con = self._connect()
        try:
            with con:
                con.execute("INSERT OR IGNORE INTO chains (id, json, created) VALUES (?, ?, ?)",
                            (cid, text, datetime.now(UTC).isoformat()))
                row = con.execute("SELECT json FROM chains WHERE id = ?", (cid,)).fetchone()
        except sqlite3.Error as exc:
            raise CatalogError(f"cannot write the chain store {self.path}: {exc}") from None
        if row is None or row[0] != text:
            raise ChainError(f"chain id {cid} is taken by a different chain in "
                             f"{self.path.name}: not stored")
        self._remember(cid, chain, len(text))
        return cid

    def get(self, chain_id: str) -> Chain:
        """The chain stored under ``chain_id``; NotFound if there is none."""
        cached = self._cached(chain_id)
        if cached is not None:
            return cached
        try:
            row = self._connect().execute("SELECT json FROM chains WHERE id = ?",
                                          (chain_id,)).fetchone()
        except sqlite3.Error as exc:
            raise CatalogError(f"cannot read the chain store {self.path}: {exc}") from None
        if row is None:
            raise NotFound(f"no chain with id {chain_id!r}")
        chain = Chain.from_json(row[0])
        self._remember(chain_id, chain, len(row[0]))
        return chain

    def cache_stats(self) -> dict[str, int]:
        """Parsed chains kept and their estimated bytes (for /healthz)."""
        with self._cache_lock:
            return {"chains": len(self._cache), "bytes": self._cached_bytes,
                    "max_bytes": self.cache_bytes}

    def __contains__(self, chain_id: object) -> bool:
        try:
            self.get(str(chain_id))
        except NotFound:
            return False
        return True

    def close(self) -> None:
        """Close this thread's connection."""
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None
