"""The tile warmer: background order, replacement per group, errors never stop it."""

from __future__ import annotations

import threading

from app.warm import FIRST_PASS, TileWarmer
from engine.errors import DataUnavailable

TILES = [(10, i, 0) for i in range(FIRST_PASS + 3)]


def test_first_tiles_of_every_chain_first_then_the_rest():
    done = []
    gate = threading.Event()

    def render(c, z, x, y):
        gate.wait(5)
        done.append((c, x))
        return True

    w = TileWarmer(render)
    w.submit(["a", "b"], TILES, "s1")
    gate.set()
    assert w.wait_idle(10)
    firsts = [(c, x) for c in "ab" for x in range(FIRST_PASS)]
    assert done[:2 * FIRST_PASS] == firsts
    assert sorted(done) == sorted((c, x) for c in "ab" for x in range(len(TILES)))
    assert w.rendered == len(done)


def test_a_new_submission_replaces_the_groups_pending_tiles():
    started, gate, done = threading.Event(), threading.Event(), []

    def render(c, z, x, y):
        started.set()
        gate.wait(5)
        done.append(c)
        return True

    w = TileWarmer(render)
    w.submit(["old"], TILES, "session")
    assert started.wait(5)  # one "old" tile is being rendered
    w.submit(["new"], TILES[:2], "session")
    assert w.pending() == 2
    gate.set()
    assert w.wait_idle(10)
    assert done.count("old") == 1 and done.count("new") == 2


def test_engine_errors_are_skipped_and_cached_tiles_not_counted():
    def render(c, z, x, y):
        if x == 0:
            raise DataUnavailable("the file vanished")
        return x % 2 == 0  # odd ones were cached already

    w = TileWarmer(render)
    w.submit(["a"], TILES, "g")
    assert w.wait_idle(10)
    assert w.rendered == len([x for x in range(1, len(TILES)) if x % 2 == 0])
