"""Issue #18 item 7: chain ids are the full sha256, and the process cache never serves a
chain other than the one the chain table holds under an id."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
from service_data import true_colour

from engine.chain import Chain
from engine.chain.store import ChainStore
from engine.errors import ChainError


def test_ids_are_the_full_sha256():
    chain = Chain.from_json(true_colour())
    assert chain.id == hashlib.sha256(chain.to_json().encode()).hexdigest()
    assert len(chain.id) == 64


def test_a_taken_id_keeps_the_stored_chain(tmp_path):
    first = Chain.from_json(true_colour(vmax=3000))
    second = Chain.from_json(true_colour(vmax=2000))
    store = ChainStore(tmp_path / "chains.sqlite")
    # what a collision of short ids did: the table holds `first` under `second`'s id
    with sqlite3.connect(store.path) as con:
        con.execute("INSERT INTO chains (id, json, created) VALUES (?, ?, ?)",
                    (second.id, first.to_json(), "2026-01-01"))
    with pytest.raises(ChainError, match="taken by a different chain"):
        store.put(second)
    assert store.get(second.id) == first  # the process serves what the table holds
    assert ChainStore(store.path).get(second.id) == first


def test_ids_stored_with_16_digits_stay_readable(tmp_path):
    chain = Chain.from_json(true_colour())
    store = ChainStore(tmp_path / "chains.sqlite")
    with sqlite3.connect(store.path) as con:
        con.execute("INSERT INTO chains (id, json, created) VALUES (?, ?, ?)",
                    (chain.id[:16], chain.to_json(), "2025-01-01"))
    assert store.get(chain.id[:16]) == chain
    assert store.put(chain) == chain.id and store.get(chain.id) == chain
