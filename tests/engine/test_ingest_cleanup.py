"""Partial files of a SIGKILLed ingest are removed by the next ingest into the same data dir
(only under its ``cogs`` area, only files older than the new run, only when no other
ingest is writing there)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from engine.catalog import SQLiteCatalog
from engine.catalog.base import Query
from engine.ingest import ingest_paths
from engine.ingest.run import clean_partial_files

ROOT = Path(__file__).resolve().parents[2]


def write_scenes(folder: Path, count: int, *, size: int) -> None:
    """Random (slow to compress) single-band scenes named with their dates."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    for i in range(count):
        with rasterio.open(folder / f"scene_2020-06-{i + 1:02d}.tif", "w", driver="GTiff",
                           width=size, height=size, count=1, dtype="uint16", crs="EPSG:32633",
                           transform=from_origin(500_000 + i * 100, 5_550_000, 10, 10)) as dst:
            dst.write(rng.integers(0, 65535, (size, size), dtype="uint16"), 1)


def partial_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and (p.name.endswith(".part") or ".part." in p.name))


def ingest(src: Path, db: Path, data: Path):
    with SQLiteCatalog(db) as catalog:
        return ingest_paths(catalog, [src], collection="cleanup", data_dir=data)


def test_next_ingest_removes_what_a_sigkilled_one_left(tmp_path):
    src, db, data = tmp_path / "src", tmp_path / "catalog.sqlite", tmp_path / "data"
    write_scenes(src, 4, size=2048)
    code = ("import sys; from engine.catalog import SQLiteCatalog; "
            "from engine.ingest import ingest_paths; "
            "ingest_paths(SQLiteCatalog(sys.argv[1]), [sys.argv[2]], collection='cleanup', "
            "data_dir=sys.argv[3])")
    proc = subprocess.Popen([sys.executable, "-c", code, str(db), str(src), str(data)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not partial_files(data):  # kill it while it writes a COG
        assert proc.poll() is None, "the ingest finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    left = partial_files(data)
    assert proc.returncode == -signal.SIGKILL and left
    # Files that are not the killed run's partial COGs must survive the next run.
    outside = data / "notes.part"
    outside.write_text("not in the cogs area")
    other_dir = tmp_path / "other-data" / "cogs" / "x" / "y"
    other_dir.mkdir(parents=True)
    (other_dir / "B04.tif.part").write_bytes(b"another data dir")
    newer = data / "cogs" / "elsewhere" / "B04.tif.part"
    newer.parent.mkdir(parents=True)
    newer.write_bytes(b"written after the next run started")
    future = time.time() + 3600
    os.utime(newer, (future, future))

    report = ingest(src, db, data)

    assert report.ok and len(report.added) == 4, report.failed
    assert partial_files(data / "cogs") == [newer]
    assert not any(p.exists() for p in left)
    assert outside.exists() and (other_dir / "B04.tif.part").exists()
    with SQLiteCatalog(db) as catalog:
        hrefs = [a.href for item in catalog.search(Query(collection="cleanup")) for a in item.assets.values()]
    assert len(hrefs) == 4 and all(Path(h).exists() for h in hrefs)


def test_partial_files_of_a_running_ingest_are_left_alone(tmp_path):
    """While another ingest holds the data dir (shared lock), nothing is cleaned."""
    src, db, data = tmp_path / "src", tmp_path / "catalog.sqlite", tmp_path / "data"
    write_scenes(src, 1, size=64)
    stale = data / "cogs" / "cleanup" / "item" / "B01.tif.part"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"partial")
    overview = stale.with_name("B01.tif.part.ovr.tmp")
    overview.write_bytes(b"partial overviews")
    old = time.time() - 60
    for p in (stale, overview):
        os.utime(p, (old, old))
    fd = os.open(data, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # as a running ingest holds it
        assert ingest(src, db, data).ok
        assert stale.exists() and overview.exists()
    finally:
        os.close(fd)
    report = ingest(src, db, data)  # alone now: it cleans (and skips the known item)
    assert report.ok and report.skipped and not report.added
    assert not stale.exists() and not overview.exists() and not stale.parent.exists()


def test_clean_partial_files_only_touches_partial_names(tmp_path):
    cogs = tmp_path / "cogs" / "c" / "i"
    cogs.mkdir(parents=True)
    names = ["B04.tif", "B04.tif.part", "B04.tif.part.ovr.tmp", "B04.tif.partial", "x.tmp",
             "B04.tif.part.msk.ovr.tmp"]
    for n in names:
        (cogs / n).write_bytes(b"x")
    removed = clean_partial_files(tmp_path, older_than=time.time() + 10)
    assert sorted(p.name for p in removed) == ["B04.tif.part", "B04.tif.part.msk.ovr.tmp",
                                               "B04.tif.part.ovr.tmp"]
    assert sorted(p.name for p in cogs.iterdir()) == ["B04.tif", "B04.tif.partial", "x.tmp"]
    assert clean_partial_files(tmp_path / "missing", older_than=time.time()) == []
