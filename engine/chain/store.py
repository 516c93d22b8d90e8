"""Persist chains by id in the ``chains`` table of a SQLite file, so tile URLs survive restarts."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from engine.chain.model import Chain
from engine.errors import CatalogError, NotFound

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chains (
    id TEXT PRIMARY KEY,
    json TEXT NOT NULL,
    created TEXT NOT NULL
)
"""


class ChainStore:
    """Chains by id, in the same SQLite file as the embedded catalog (or any local file)."""

    def __init__(self, db_path: str | Path) -> None:
        self.path = Path(db_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._cache: dict[str, Chain] = {}
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

    def put(self, chain: Chain) -> str:
        """Store ``chain`` (idempotent) and return its id."""
        cid = chain.id
        if cid in self._cache:
            return cid
        con = self._connect()
        try:
            with con:
                con.execute("INSERT OR IGNORE INTO chains (id, json, created) VALUES (?, ?, ?)",
                            (cid, chain.to_json(), datetime.now(UTC).isoformat()))
        except sqlite3.Error as exc:
            raise CatalogError(f"cannot write the chain store {self.path}: {exc}") from None
        self._cache[cid] = chain
        return cid

    def get(self, chain_id: str) -> Chain:
        """The chain stored under ``chain_id``; NotFound if there is none."""
        cached = self._cache.get(chain_id)
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
        self._cache[chain_id] = chain
        return chain

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
