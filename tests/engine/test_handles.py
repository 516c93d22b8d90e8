"""The renderer's pool of open datasets stays bounded however many threads read through it
(anyio's pool stops threads idle for 10 s and starts new ones under load), and never lends
one dataset to two threads at once."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from engine.errors import DataUnavailable
from engine.render.handles import HandleCache

needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")


def write_tif(path: Path, value: int) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=1,
                       dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500_000, 5_560_000, 10, 10)) as dst:
        dst.write(np.full((16, 16), value, dtype="uint8"), 1)


@pytest.fixture(scope="module")
def tifs(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("handles")
    for i in range(12):
        write_tif(folder / f"band{i}.tif", i)
    return [str(folder / f"band{i}.tif") for i in range(12)]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def use(cache: HandleCache, path: str, overview: int | None = None):
    ds = cache.get(path, overview=overview)
    value = int(ds.read(1)[0, 0])
    cache.release(ds)
    return ds, value


def test_at_most_size_stay_open_after_many_files(tifs):
    cache = HandleCache(size=4)
    used = [use(cache, p)[0] for p in tifs]  # 12 distinct files
    assert cache.stats()["idle"] == 4 and cache.stats()["lent"] == 0
    assert all(ds.closed for ds in used[:-4]) and not any(ds.closed for ds in used[-4:])
    again, value = use(cache, tifs[-1])
    assert again is used[-1] and value == 11  # reused, not reopened
    assert cache.stats()["opened"] == 12 and cache.stats()["reused"] == 1
    cache.clear()
    assert cache.stats()["idle"] == 0 and all(ds.closed for ds in used)


@needs_proc
def test_threads_coming_and_going_do_not_grow_the_pool(tifs):
    cache = HandleCache(size=64)
    fds = open_fds()

    def work(k: int) -> None:
        for p in tifs[k % 4: k % 4 + 6]:
            use(cache, p)

    for k in range(40):  # 40 short-lived threads, one after the other
        t = threading.Thread(target=work, args=(k,))
        t.start()
        t.join()
    # each file was opened once and then reused by every later thread
    assert cache.stats()["opened"] == 9 and cache.stats()["idle"] == 9
    assert open_fds() <= fds + 9
    cache.clear()
    assert open_fds() <= fds


def test_a_dataset_is_lent_to_one_thread_at_a_time(tifs):
    cache = HandleCache(size=8)
    barrier = threading.Barrier(5)
    held: dict[int, list] = {}
    errors: list[Exception] = []

    def work(k: int) -> None:
        try:
            held[k] = [cache.get(p) for p in tifs[:5]]
            barrier.wait(timeout=30)  # five threads hold the same five files at once
            assert cache.stats()["lent"] == 25
            barrier.wait(timeout=30)
            for ds in held[k]:
                cache.release(ds)
        except (AssertionError, threading.BrokenBarrierError) as exc:  # the main thread reports
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    lent = [id(ds) for v in held.values() for ds in v]
    assert len(set(lent)) == 25  # nobody got a dataset another thread was using
    assert cache.stats()["idle"] == 8  # the rest closed on return
    assert sum(not ds.closed for v in held.values() for ds in v) == 8


def test_overviews_are_separate_entries_and_replaced_files_reopen(tmp_path):
    path = tmp_path / "a.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(0, 0, 10, 10)) as dst:
        dst.write(np.full((64, 64), 7, dtype="uint8"), 1)
        dst.build_overviews([2], rasterio.enums.Resampling.nearest)
    cache = HandleCache(size=8)
    full, _ = use(cache, str(path))
    ovr, value = use(cache, str(path), overview=0)
    assert ovr is not full and ovr.width == 32 and value == 7
    os.remove(path)
    write_tif(path, 9)  # replaced: another inode/size
    fresh, value = use(cache, str(path))
    assert fresh is not full and value == 9 and full.closed


def test_missing_file_is_data_unavailable(tmp_path):
    with pytest.raises(DataUnavailable):
        HandleCache().get(str(tmp_path / "gone.tif"))


def test_releasing_twice_keeps_the_dataset_usable(tifs):
    cache = HandleCache(size=2)
    ds = cache.get(tifs[0])
    cache.release(ds)
    cache.release(ds)
    again = cache.get(tifs[0])
    assert again is ds and not ds.closed and int(ds.read(1)[0, 0]) == 0
    cache.release(again)
