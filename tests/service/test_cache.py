"""The LRU tile cache: bounded in bytes, least recently used first out, thread-safe."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from service.cache import ENTRY_OVERHEAD, CachedTile, TileCache


def tile(n: int) -> CachedTile:
    return CachedTile(content=b"x" * n, etag=f'"{n}"')


def test_lru_eviction_in_bytes():
    cache = TileCache(3 * (100 + ENTRY_OVERHEAD))
    for key in "abc":
        cache.put(key, tile(100))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", tile(100))
    assert cache.get("b") is None  # b was the least recently used
    assert [k for k in "acd" if cache.get(k) is not None] == ["a", "c", "d"]
    assert cache.nbytes == 3 * (100 + ENTRY_OVERHEAD) and cache.evictions == 1
    cache.put("e", tile(250))  # needs two slots
    assert cache.nbytes <= cache.max_bytes and cache.get("e") is not None


def test_replacing_a_key_updates_the_size():
    cache = TileCache(10_000)
    cache.put("a", tile(100))
    cache.put("a", tile(300))
    assert len(cache) == 1 and cache.nbytes == 300 + ENTRY_OVERHEAD


def test_too_big_entries_and_disabled_cache():
    cache = TileCache(500)
    cache.put("big", tile(1000))
    assert cache.get("big") is None and cache.nbytes == 0
    off = TileCache(0)
    off.put("a", tile(1))
    assert off.get("a") is None
    with pytest.raises(ValueError):
        TileCache(-1)


def test_stats_and_clear():
    cache = TileCache(10_000)
    cache.put("a", tile(10))
    cache.get("a"), cache.get("b")
    assert cache.stats() == {"entries": 1, "bytes": 10 + ENTRY_OVERHEAD, "max_bytes": 10_000,
                             "hits": 1, "misses": 1, "evictions": 0}
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_threads_keep_the_bound():
    cache = TileCache(50 * (64 + ENTRY_OVERHEAD))

    def work(i: int) -> None:
        for j in range(200):
            cache.put((i, j), tile(64))
            cache.get((i, j - 1))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    assert cache.nbytes <= cache.max_bytes
    assert cache.nbytes == len(cache) * (64 + ENTRY_OVERHEAD) == cache.max_bytes
