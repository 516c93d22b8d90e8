"""Band files of a remote scene are read at the same time (engine/render/bandpool.py);
local ones in the caller's thread; an error is raised once every read has ended."""

from __future__ import annotations

import threading

import pytest

from engine.errors import StorageUnavailable
from engine.render.bandpool import map_bands

REMOTE = [f"https://bucket.example/s/B0{i}.tif" for i in (2, 3, 4)]


def test_remote_bands_are_read_concurrently():
    barrier = threading.Barrier(3, timeout=10)  # read one after the other, this breaks

    def read(i):
        barrier.wait()
        return i * 10

    assert map_bands(read, [1, 2, 3], REMOTE) == [10, 20, 30]  # in order


def test_local_bands_are_read_in_the_calling_thread():
    me = threading.get_ident()
    assert map_bands(lambda i: threading.get_ident(), [1, 2], ["/d/a.tif", "/d/b.tif"]) == [me,
                                                                                            me]
    # one remote file alone gains nothing from a thread hop
    assert map_bands(lambda i: threading.get_ident(), [1, 2], [REMOTE[0], "/d/b.tif"]) == [me,
                                                                                            me]


def test_the_first_error_is_raised_after_every_read_ended():
    ended = []
    slow = threading.Event()

    def read(i):
        if i == 1:
            raise StorageUnavailable("storage at bucket.example failed")
        slow.wait(0.3)
        ended.append(i)
        return i

    with pytest.raises(StorageUnavailable, match="bucket.example"):
        map_bands(read, [1, 2, 3], REMOTE)
    assert sorted(ended) == [2, 3]
