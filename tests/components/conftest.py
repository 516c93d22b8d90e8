"""Fixtures of the component tests: a real SQLite catalog with small COGs near Berlin, and a
Backend over it (chain store in the same file, the real TileRenderer)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from component_data import LANDSAT, LANDSAT_BANDS, LS_ITEM, NEW, OLD, S2, S2_BANDS, _item

from components.backend import Backend
from engine.catalog import SQLiteCatalog
from engine.chain.store import ChainStore
from engine.ingest.items import build_collection
from engine.render import TileRenderer


@dataclass
class Data:
    """Where the fixture catalog lives."""

    db: Path
    folder: Path


@pytest.fixture(scope="session")
def data(tmp_path_factory) -> Data:
    root = tmp_path_factory.mktemp("components")
    folder = root / "cogs"
    s2 = [_item(folder, OLD, S2_BANDS, datetime(2020, 6, 1, 10, tzinfo=UTC), 10.0, 0, S2),
          _item(folder, NEW, S2_BANDS, datetime(2020, 7, 1, 10, tzinfo=UTC), 60.0, 500, S2)]
    ls = [_item(folder, LS_ITEM, LANDSAT_BANDS, datetime(2010, 5, 1, 10, tzinfo=UTC), 5.0, 0,
                LANDSAT)]
    db = root / "catalog.sqlite"
    with SQLiteCatalog(db) as cat:
        cat.add_collection(build_collection(S2, s2))
        cat.add_items(s2, collection=S2)
        cat.add_collection(build_collection(LANDSAT, ls))
        cat.add_items(ls, collection=LANDSAT)
    return Data(db=db, folder=folder)


@pytest.fixture(scope="session")
def backend(data) -> Backend:
    catalog = SQLiteCatalog(data.db)
    return Backend(catalog=catalog, chain_store=ChainStore(data.db),
                   renderer=TileRenderer(catalog))


@pytest.fixture
def state(backend):
    from components.state import AppState

    return AppState(backend=backend)
