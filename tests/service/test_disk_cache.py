"""The tile cache on disk: shared between app instances (processes), bounded, atomic,
keyed by the scenes a chain reads (a re-ingest that adds scenes renders anew)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import morecantile
import pytest
from rasterio.warp import transform
from service_data import (
    COLLECTION,
    CRS_UTM,
    ITEM_JULY,
    ITEM_JUNE,
    ORIGIN,
    RES,
    SIZE,
    build_catalog,
    true_colour,
    write_item,
)
from starlette.testclient import TestClient

from engine.catalog import SQLiteCatalog
from engine.chain.store import ChainStore
from engine.render import TileRenderer
from service import create_service
from service.cache import CachedTile
from service.diskcache import DiskKey, DiskTileCache, etag_of

TMS = morecantile.tms.get("WebMercatorQuad")


def centre_tile(z: int) -> morecantile.Tile:
    """The tile at the centre of the fixture scene."""
    xs, ys = transform(CRS_UTM, "EPSG:4326", [ORIGIN[0] + SIZE * RES / 2],
                      [ORIGIN[1] - SIZE * RES / 2])
    return TMS.tile(xs[0], ys[0], z)


KEY = DiskKey("0123456789abcdef", "fp00", 15, 17000, 11000, 256, "png")


def key(i: int) -> DiskKey:
    return DiskKey("0123456789abcdef", "fp00", 15, 17000 + i, 11000, 256, "png")


def entry(content: bytes) -> CachedTile:
    return CachedTile(content=content, etag=etag_of(content))


def tile_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.name != ".sweep.lock"]


# -- the store itself ---------------------------------------------------------------------------
def test_round_trip_with_etag_and_empty_tile(tmp_path):
    cache = DiskTileCache(tmp_path, 10**6)
    content = os.urandom(5000)
    cache.put(KEY, entry(content))
    got = cache.get(KEY)
    want_etag = '"' + hashlib.blake2b(content, digest_size=16).hexdigest() + '"'
    assert got == CachedTile(content=content, etag=want_etag)
    assert cache.path_for(KEY) == tmp_path / KEY.chain_id / "fp00" / "15" / "17000" / "11000.png"
    empty = DiskKey(KEY.chain_id, "fp00", 3, 1, 2, 512, "webp")  # "no data here": 204
    cache.put(empty, entry(b""))
    assert cache.get(empty).content == b"" and cache.path_for(empty).name == "2@512.webp"
    assert cache.get(key(99)) is None
    assert (cache.hits, cache.misses, cache.writes) == (2, 1, 2)


def test_the_notice_of_a_cut_tile_is_kept_with_it(tmp_path):
    cache = DiskTileCache(tmp_path, 10**6)
    content = os.urandom(3000)
    text = "1200 scenes overlap this tile; the first 500 in mosaic order are shown …"
    cache.put(KEY, CachedTile(content=content, etag=etag_of(content), notice=text))
    assert cache.get(KEY) == CachedTile(content=content, etag=etag_of(content), notice=text)
    # a file of the first format (no notice) is still a hit
    digest = hashlib.blake2b(content, digest_size=16).digest()
    cache.path_for(KEY).write_bytes(b"EOX1" + digest + len(content).to_bytes(8, "little")
                                    + content)
    assert cache.get(KEY) == CachedTile(content=content, etag=etag_of(content))
    # a notice cut short is a damaged file
    cache.put(KEY, CachedTile(content=b"", etag=etag_of(b""), notice=text))
    path = cache.path_for(KEY)
    path.write_bytes(path.read_bytes()[:-3])
    assert cache.get(KEY) is None and not path.exists()


def test_damaged_file_is_a_miss_and_is_dropped(tmp_path):
    cache = DiskTileCache(tmp_path, 10**6)
    cache.sweep(wait=True)  # measured now: put() starts no background sweep, which would
    # prune the folder emptied below while the test writes into it (a CI flake)
    cache.put(KEY, entry(b"x" * 3000))
    path = cache.path_for(KEY)
    path.write_bytes(path.read_bytes()[:-1])  # cut short (a crash while the disk wrote it)
    assert cache.get(KEY) is None and not path.exists() and cache.errors == 1
    path.write_bytes(b"")  # e.g. a zero-length file after a power cut
    assert cache.get(KEY) is None and not path.exists()
    path.write_bytes(b"\x89PNG" + b"\0" * 100)  # not written by the cache
    assert cache.get(KEY) is None and not path.exists() and cache.errors == 3


def test_unsafe_keys_are_refused(tmp_path):
    cache = DiskTileCache(tmp_path / "c", 10**6)
    for bad in (DiskKey("..", "fp", 1, 0, 0, 256, "png"), DiskKey("a/b", "fp", 1, 0, 0, 256, "png"),
                DiskKey("abc", "../x", 1, 0, 0, 256, "png"), DiskKey("abc", "fp", 1, 0, 0, 256, "sh")):
        cache.put(bad, entry(b"data"))
        assert cache.get(bad) is None
        with pytest.raises(ValueError):
            cache.path_for(bad)
    assert tile_files(tmp_path) == []


def test_sweep_keeps_the_bound_and_removes_least_recently_used(tmp_path):
    bound = 100_000
    writer = DiskTileCache(tmp_path, 10**8)  # filled with a larger bound
    for i in range(60):  # 60 files of ~6 KiB each: ~2.5x the bound below
        writer.put(key(i), entry(bytes([i]) * 6000))
    assert len(tile_files(tmp_path)) == 60
    cache = DiskTileCache(tmp_path, bound, low_water=0.8, sweep_interval=3600)
    paths = [cache.path_for(key(i)) for i in range(60)]
    now = time.time()
    for i, p in enumerate(paths):  # recency = index, i.e. key(59) is the most recent...
        os.utime(p, (now - 1000 + i, now - 1000 + i))
    os.utime(paths[3], (now, now))  # ...except key(3), used just now
    cache.sweep(wait=True)
    left = tile_files(tmp_path)
    sizes = sum(os.stat(p).st_blocks * 512 for p in left)
    assert sizes <= bound * 0.8 and 0 < len(left) < 60
    kept = {int(p.parent.name) - 17000 for p in left}
    assert 3 in kept and 59 in kept and 0 not in kept and 4 not in kept
    # The kept ones are exactly the most recent: nothing older survived something newer.
    order = [3] + list(range(59, 3, -1))  # most recent first
    assert kept == set(order[: len(kept)])
    assert cache.get(key(59)).content == bytes([59]) * 6000


def test_writes_start_a_background_sweep_that_keeps_the_bound(tmp_path):
    bound = 60_000
    cache = DiskTileCache(tmp_path, bound, sweep_interval=3600)
    for i in range(40):
        cache.put(key(i), entry(os.urandom(4000)))
        time.sleep(0.005)
    deadline = time.monotonic() + 20
    while (cache._sweeping or cache.sweeps < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cache.sweeps >= 2 and cache.swept_files > 0  # the first measures, later ones trim
    cache.sweep(wait=True)  # what is left after the last writes
    assert sum(os.stat(p).st_blocks * 512 for p in tile_files(tmp_path)) <= bound


def test_atomic_write_under_a_concurrent_reader(tmp_path):
    """A reader never sees a partial file: once the tile exists every read is a whole,
    verified tile, old or new (a write in place would make some reads fail their digest)."""
    cache = DiskTileCache(tmp_path, 10**8)
    versions = [os.urandom(400_000), os.urandom(300_000)]
    cache.put(KEY, entry(versions[0]))
    stop = threading.Event()
    seen: list[bytes | None] = []

    def reader() -> None:
        other = DiskTileCache(tmp_path, 10**8)  # another process's view of the folder
        while not stop.is_set():
            got = other.get(KEY)
            seen.append(None if got is None else got.content)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(150):
            cache.put(KEY, entry(versions[i % 2]))
    finally:
        stop.set()
        thread.join()
    assert len(seen) > 10
    assert all(s is not None and s in versions for s in seen)
    assert cache.errors == 0
    assert [p.name for p in cache.path_for(KEY).parent.iterdir()] == ["11000.png"]  # no temp


# -- through the service ----------------------------------------------------------------------
class CountingRenderer(TileRenderer):
    """The real renderer, counting the tiles it renders."""

    def __init__(self, catalog) -> None:
        super().__init__(catalog)
        self.tiles = 0

    def tile(self, *args, **kwargs):
        self.tiles += 1
        return super().tile(*args, **kwargs)


def service(db: Path, disk_root: Path, **options):
    catalog = SQLiteCatalog(db)
    renderer = CountingRenderer(catalog)
    app = create_service(catalog, chain_store=ChainStore(db), renderer=renderer,
                         disk_cache=DiskTileCache(disk_root, 50 * 2**20), **options)
    return app, renderer


def test_a_second_app_serves_the_tile_from_disk_without_rendering(tmp_path):
    scene = build_catalog(tmp_path)
    t = centre_tile(14)
    one, r1 = service(scene.db, tmp_path / "tile-cache")
    two, r2 = service(scene.db, tmp_path / "tile-cache")  # another worker: own memory cache
    with TestClient(one) as a, TestClient(two) as b:
        cid = a.post("/api/chains", json=true_colour()).json()["id"]
        url = f"/api/chains/{cid}/tiles/{t.z}/{t.x}/{t.y}.png"
        first = a.get(url)
        assert first.status_code == 200 and r1.tiles == 1
        second = b.get(url)
        assert second.status_code == 200 and r2.tiles == 0  # served from disk
        assert second.content == first.content and second.headers["etag"] == first.headers["etag"]
        assert b.get(url).content == first.content and r2.tiles == 0  # now from memory
        assert b.get("/healthz").json()["disk_cache"]["hits"] == 1
        assert b.get("/healthz").json()["cache"]["hits"] == 1
        # A tile outside the data (204) is shared too.
        empty = f"/api/chains/{cid}/tiles/14/0/0.png"
        assert a.get(empty).status_code == 204 and b.get(empty).status_code == 204
        assert r2.tiles == 0


def test_new_scenes_after_an_ingest_are_rendered_not_served_stale(tmp_path):
    """The disk key carries the fingerprint of the chain's scenes: adding an item the chain
    reads gives new paths, so the newer scene shows (a latest-first mosaic)."""
    scene = build_catalog(tmp_path, items=(ITEM_JUNE,))
    t = centre_tile(14)
    chain = {"source": {"collection": COLLECTION, "mosaic": "latest"},
             "steps": true_colour()["steps"]}
    one, r1 = service(scene.db, tmp_path / "tile-cache")
    with TestClient(one) as a:
        cid = a.post("/api/chains", json=chain).json()["id"]
        url = f"/api/chains/{cid}/tiles/{t.z}/{t.x}/{t.y}.png"
        before = a.get(url).content
        assert a.get(url).content == before and r1.tiles == 1
        july = write_item(scene.folder, ITEM_JULY, datetime(2020, 7, 1, 10, tzinfo=UTC),
                          60.0, 500)
        with SQLiteCatalog(scene.db) as catalog:
            catalog.add_items([july], collection=COLLECTION)
        # Once the scene and fingerprint caches expire (here: invalidated), the running
        # service renders the newer scene instead of serving its memory or disk copy.
        one.state.chain_routes.invalidate()
        assert a.get(url).content != before and r1.tiles == 2
    two, r2 = service(scene.db, tmp_path / "tile-cache")  # e.g. another worker
    with TestClient(two) as b:
        after = b.get(url).content
    assert r2.tiles == 0 and after != before  # the new tile, from disk
    chain_dir = tmp_path / "tile-cache" / cid
    assert len(list(chain_dir.iterdir())) == 2  # one folder per scenes fingerprint
