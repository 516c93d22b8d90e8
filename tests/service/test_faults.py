"""Faults: each ends with a clear error or a correct result, and nothing is lost.

A sandbox worker killed mid-tile; the service killed and restarted (real uvicorn
subprocess); an ingest interrupted half-way (SIGINT, SIGKILL); the tile cache filled past
its bound; a source COG truncated, replaced with junk or deleted under a running service.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import morecantile
import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin
from service_data import ITEM_JULY, ITEM_JUNE, build_catalog, make_app, true_colour
from starlette.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())"]
TMS = morecantile.tms.get("WebMercatorQuad")
TILE = TMS.tile(15.035, 50.08, 15)


def tile_url(cid: str, t=TILE) -> str:
    return f"/api/chains/{cid}/tiles/{t.z}/{t.x}/{t.y}.png"


def pixels(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


# -- sandbox worker killed mid-tile -------------------------------------------------------------
SLOW = """
def slow(a):
    total = 0
    for i in range(400_000_000):
        total += i
    return a
"""
IDENT = "def ident(a):\n    return a\n"


def execute_chain(function: str, source: str) -> dict:
    chain = true_colour()
    chain["steps"].insert(1, {"name": "execute", "function": function, "source": source})
    return chain


@pytest.fixture()
def sandboxed(scene):
    from engine.chain.executor import set_executor
    from engine.sandbox import SandboxPool, chain_executor

    pool = SandboxPool(2, timeout_s=60, memory_mb=768, max_array_mb=16)
    if not pool.wait_ready(timeout_s=60):
        pool.close()
        pytest.skip(f"sandbox workers do not start here: {pool.capabilities()}")
    previous = set_executor(chain_executor(pool))
    try:
        with TestClient(make_app(scene.db, cache_bytes=0), raise_server_exceptions=False) as c:
            yield c, pool
    finally:
        set_executor(previous)
        pool.close()


def test_killed_sandbox_worker_fails_one_tile_then_tiles_work(sandboxed):
    c, pool = sandboxed
    slow = c.post("/api/chains", json=execute_chain("slow", SLOW)).json()["id"]
    ident = c.post("/api/chains", json=execute_chain("ident", IDENT)).json()["id"]
    plain = c.post("/api/chains", json=true_colour()).json()["id"]
    answer: dict = {}
    request = threading.Thread(target=lambda: answer.update(r=c.get(tile_url(slow))))
    request.start()
    deadline = time.monotonic() + 30
    while not pool.busy_pids():
        assert time.monotonic() < deadline, "the slow function never started"
        time.sleep(0.02)
    victim = pool.busy_pids()[0]
    os.kill(victim, signal.SIGKILL)
    request.join(timeout=60)
    r = answer["r"]
    assert r.status_code == 422, r.text
    assert r.json()["type"] == "SandboxLimitExceeded"
    assert "slow()" in r.json()["detail"] and "SIGKILL" in r.json()["detail"]
    # The call's process is gone; the next sandboxed tiles are correct (= the plain chain).
    assert pool.wait_ready(timeout_s=60) and victim not in pool.worker_pids()
    expected = pixels(c.get(tile_url(plain)).content)
    for _ in range(3):
        again = c.get(tile_url(ident))
        assert again.status_code == 200, again.text
        assert np.array_equal(pixels(again.content), expected)


# -- the service killed and restarted ---------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tiles(db: Path, data_dir: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [*CLI, "tiles", "--catalog", str(db), "--data-dir", str(data_dir),
         "--address", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"tiles exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("tiles did not start in 60 s")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


def test_tile_urls_survive_a_killed_and_restarted_service(tmp_path):
    scene = build_catalog(tmp_path)
    port = free_port()
    proc = start_tiles(scene.db, tmp_path / "data", port)
    try:
        base = f"http://127.0.0.1:{port}"
        created = httpx.post(base + "/api/chains", json=true_colour(), timeout=30)
        assert created.status_code == 201
        template = created.json()["tiles"]
        url = template.format(z=TILE.z, x=TILE.x, y=TILE.y)
        before = httpx.get(url, timeout=30)
        assert before.status_code == 200
    finally:
        stop(proc, signal.SIGKILL)  # a crash: no shutdown hook runs
    assert proc.returncode == -signal.SIGKILL
    proc = start_tiles(scene.db, tmp_path / "data", port)
    try:
        after = httpx.get(url, timeout=30)
        assert after.status_code == 200 and after.content == before.content
        assert after.headers["etag"] == before.headers["etag"]
        assert httpx.get(created.json()["tilejson"], timeout=30).json()["tiles"] == [template]
    finally:
        stop(proc)
    with sqlite3.connect(scene.db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- an ingest interrupted half-way -----------------------------------------------------------
def write_scenes(folder: Path, count: int, *, size: int = 1024, first_day: int = 1) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for i in range(count):
        name = f"scene_2020-{6 + (first_day + i - 1) // 28:02d}-{(first_day + i - 1) % 28 + 1:02d}"
        with rasterio.open(folder / f"{name}.tif", "w", driver="GTiff", width=size,
                           height=size, count=1, dtype="uint16", crs="EPSG:32633",
                           transform=from_origin(500_000 + i * 100, 5_550_000, 10, 10)) as dst:
            dst.write((rng.random((size, size)) * 3000).astype("uint16"), 1)


def ingest_cmd(paths: list[Path], db: Path, data: Path) -> list[str]:
    return [*CLI, "ingest", *map(str, paths), "--collection", "faults", "--catalog", str(db),
            "--data-dir", str(data)]


def ingest_in_process(folder: Path, db: Path, data: Path):
    from engine.catalog import SQLiteCatalog
    from engine.ingest import ingest_paths

    with SQLiteCatalog(db) as catalog:
        return ingest_paths(catalog, [folder], collection="faults", data_dir=data)


def catalog_state(db: Path) -> tuple[str, int]:
    with sqlite3.connect(db) as conn:
        return (conn.execute("PRAGMA integrity_check").fetchone()[0],
                conn.execute("SELECT count(*) FROM items").fetchone()[0])


def files_under(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()} \
        if folder.exists() else set()


@pytest.fixture(scope="module")
def ingest_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest")
    write_scenes(root / "first", 2)
    write_scenes(root / "big", 16, size=768, first_day=3)
    return root


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_ingest_leaves_catalog_and_data_as_before(tmp_path, ingest_sources, sig):
    db, data = tmp_path / "catalog.sqlite", tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ingest_in_process(ingest_sources / "first", db, data)
    state_before = catalog_state(db)
    assert state_before == ("ok", 2)
    files_before = files_under(data)
    proc = subprocess.Popen(ingest_cmd([ingest_sources / "big"], db, data), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    # Interrupt once the run has written a few COGs of the 16 (part-way through its work).
    while len(files_under(data) - files_before) < 3:
        assert proc.poll() is None, "the ingest finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert catalog_state(db) == state_before  # integrity ok, item count unchanged
    left = files_under(data) - files_before
    if sig == signal.SIGINT:
        assert left == set()  # the run removed what it wrote
        return
    # SIGKILL leaves no chance to clean up: what it wrote is unreferenced. The next run
    # must still succeed and end with every catalog href present.
    report = ingest_in_process(ingest_sources / "big", db, data)
    assert report.ok and len(report.added) == 16, report.failed
    assert catalog_state(db) == ("ok", 18)
    with sqlite3.connect(db) as conn:
        hrefs = [h for (h,) in conn.execute(
            "SELECT json_extract(value, '$.href') FROM items, json_each(items.json, '$.assets')")]
    assert len(hrefs) >= 18 and all(Path(h).exists() for h in hrefs)
    orphans = {data / f for f in files_under(data)} - {Path(h) for h in hrefs}
    assert not [o for o in orphans if not o.name.endswith(".part")], orphans


# -- the tile cache filled past its bound ------------------------------------------------------
def test_tile_cache_stays_within_its_bound_and_correct(scene):
    budget = 60_000
    app = make_app(scene.db, cache_bytes=budget)
    cache = app.state.tile_cache
    tiles = [morecantile.Tile(x, y, 16) for x in range(TMS.tile(15.01, 50.09, 16).x,
                                                       TMS.tile(15.06, 50.09, 16).x + 1)
             for y in range(TMS.tile(15.0, 50.095, 16).y, TMS.tile(15.0, 50.065, 16).y + 1)]
    assert len(tiles) >= 20
    with TestClient(app) as c:
        cid = c.post("/api/chains", json=true_colour()).json()["id"]
        first = {}
        for t in tiles:
            r = c.get(tile_url(cid, t))
            assert r.status_code in (200, 204)
            first[t] = r.content
            assert cache.nbytes <= budget
        assert cache.evictions > 0 and len(cache) < len(tiles)
        # Most recent first: cached ones are hits, evicted ones render to the same bytes.
        hits = cache.hits
        for t in reversed(tiles):
            assert c.get(tile_url(cid, t)).content == first[t]
            assert cache.nbytes <= budget
        assert cache.hits > hits
        health = c.get("/healthz").json()["cache"]
        assert health["bytes"] <= health["max_bytes"] == budget


# -- a source COG made unreadable --------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "junk", "delete"])
def test_unreadable_source_cog_is_a_clear_424_naming_the_file(tmp_path, damage):
    scene = build_catalog(tmp_path)
    with TestClient(make_app(scene.db, cache_bytes=0), raise_server_exceptions=False) as c:
        june = c.post("/api/chains", json=true_colour(ids=(ITEM_JUNE,))).json()["id"]
        july = c.post("/api/chains", json=true_colour(ids=(ITEM_JULY,))).json()["id"]
        assert c.get(tile_url(june)).status_code == 200  # file handles are open and cached
        july_before = c.get(tile_url(july)).content
        victim = scene.folder / f"{ITEM_JUNE}_B04.tif"
        if damage == "truncate":
            with open(victim, "r+b") as f:
                f.truncate(victim.stat().st_size // 3)
        elif damage == "junk":
            victim.write_bytes(os.urandom(victim.stat().st_size))
        else:
            victim.unlink()
        other = TMS.tile(15.02, 50.09, 16)  # not rendered before: must read the file
        for url in (tile_url(june, other), f"/api/chains/{june}/point?lon=15.02&lat=50.09"):
            r = c.get(url)
            assert r.status_code == 424, (url, r.status_code, r.text[:300])
            body = r.json()
            assert body["type"] == "DataUnavailable" and victim.name in body["detail"]
        # Other chains keep working, with the same pixels as before.
        r = c.get(tile_url(july))
        assert r.status_code == 200 and r.content == july_before
        assert c.get("/healthz").status_code == 200
