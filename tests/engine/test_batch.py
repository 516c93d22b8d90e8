"""Batch runs (engine.batch): outputs compared with the TILE SERVICE's rendering of the same
grid (PNG pixels) and with independent numpy/rasterio computations; atomic writes; a real
LocalCluster (2 worker processes) with the sandbox on the workers and a worker killed."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from datetime import UTC, datetime

import morecantile
import numpy as np
import pyproj
import pytest
import rasterio
import xarray as xr
from distributed import futures_of, wait
from PIL import Image
from rasterio.transform import from_origin
from render_fixtures import make_catalog, make_item, pattern

from app.cli import main
from engine.batch import blocks, compute, connect, open_for_screen, to_cog, to_zarr
from engine.batch.stall import describe_workers
from engine.chain import Chain, set_executor
from engine.collection import Collection
from engine.errors import BatchStalled, DataUnavailable, InvalidInput, SandboxError
from engine.render import TileRenderer

TMS = morecantile.tms.get("WebMercatorQuad")
NAMES = ["B02", "B03", "B04", "B08"]
SIZE = 600
TMAX = "def tmax(stack):\n    return stack.max(axis=0)\n"
NDVI2 = ("def ndvi2(a, k):\n    nir = a[1].astype('float32')\n    red = a[0].astype('float32')\n"
         "    return k * (nir - red) / (nir + red)\n")


def utm(lon: float, lat: float) -> tuple[float, float]:
    x, y = pyproj.Transformer.from_crs(4326, 32632, always_xy=True).transform(lon, lat)
    return round(x, -1), round(y, -1)


def day(d: int) -> datetime:
    return datetime(2020, 5, d, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Scene A (600 px, 10 m, 4 bands) and B overlapping it to the east; a 3-date stack;
    a pair whose second scene's files will vanish."""
    tmp = tmp_path_factory.mktemp("batch")
    x0, y0 = utm(11.5, 48.0)
    a = make_item(tmp / "A", "A", epsg=32632, transform=from_origin(x0, y0, 10, 10),
                  bands={n: pattern((SIZE, SIZE), i) for i, n in enumerate(NAMES)}, date=day(1))
    b = make_item(tmp / "B", "B", epsg=32632, transform=from_origin(x0 + 5000, y0, 10, 10),
                  bands={n: pattern((SIZE, SIZE), 10 + i) for i, n in enumerate(NAMES)},
                  date=day(2))
    tx, ty = utm(10.5, 47.0)
    stack = [make_item(tmp / f"T{k}", f"T{k}", epsg=32632, transform=from_origin(tx, ty, 10, 10),
                       bands={"B04": pattern((200, 200), 30 + k)}, date=day(k + 1))
             for k in range(3)]
    gone = make_item(tmp / "G", "G", epsg=32632, transform=from_origin(x0 + 5000, y0, 10, 10),
                     bands={n: pattern((SIZE, SIZE), 20 + i) for i, n in enumerate(NAMES)},
                     date=day(3))
    cat = make_catalog(tmp / "catalog.sqlite", {"s2": [a, b], "stack": stack,
                                                "broken": [a, gone]})
    return {"cat": cat, "path": str(tmp / "catalog.sqlite"), "renderer": TileRenderer(cat),
            "origin": (x0, y0), "tmp": tmp,
            "items": {i.id: i for i in [a, b, gone, *stack]}}


def band(world, item: str, name: str) -> np.ndarray:
    with rasterio.open(world["items"][item].assets[name].href) as ds:
        return ds.read(1)


def tile_png(r: TileRenderer, chain: Chain, t: morecantile.Tile) -> np.ndarray:
    """The tile service's PNG pixels as (4, 256, 256) RGBA (transparent when no tile)."""
    img = r.tile(chain, t.z, t.x, t.y)
    if img is None:
        return np.zeros((4, 256, 256), np.uint8)
    px = np.asarray(Image.open(io.BytesIO(r.encode(img, "png"))).convert("RGBA"))
    return np.moveaxis(px, -1, 0)


def mercator_block(lon: float, lat: float, z: int, n: int):
    """(tiles, bbox, resolution) of n x n Web-Mercator tiles from the one at lon/lat."""
    t0 = TMS.tile(lon, lat, z)
    tiles = [[morecantile.Tile(t0.x + dx, t0.y + dy, z) for dx in range(n)] for dy in range(n)]
    ul, lr = TMS.xy_bounds(tiles[0][0]), TMS.xy_bounds(tiles[-1][-1])
    return tiles, (ul.left, lr.bottom, lr.right, ul.top), (ul.right - ul.left) / 256


# -- equality with the tile service -----------------------------------------------------------
@pytest.mark.parametrize("chunks", [256, 384])
def test_display_output_equals_tile_service_pngs(world, chunks):
    """Blocks aligned with tiles (256) or straddling them (384): the same RGBA pixels."""
    coll = Collection("s2", catalog=world["cat"])
    chains = [coll.process().bands("B04", "B03", "B02").scale(0, 3000),
              coll.process().expression("(B08-B04)/(B08+B04)").scale(-1, 1).colormap("RdYlGn")]
    # 3 x 3 z15 tiles across the A/B seam and the east edge of A
    x0, y0 = world["origin"]
    lon, lat = pyproj.Transformer.from_crs(32632, 4326, always_xy=True).transform(
        x0 + 4700, y0 - 3000)
    tiles, bbox, res = mercator_block(lon, lat, 15, 3)
    for chain in chains:
        out = chain.compute(bbox=bbox, bbox_crs="EPSG:3857", crs="EPSG:3857", resolution=res,
                            chunks=chunks, catalog=world["cat"])
        assert out.dims == ("band", "y", "x") and out.dtype == np.uint8
        assert out.attrs["crs"] == "EPSG:3857" and out.attrs["kind"] == "display"
        got = out.values
        assert got.shape == (4, 768, 768)
        for dy, row in enumerate(tiles):
            for dx, t in enumerate(row):
                exp = tile_png(world["renderer"], chain, t)
                blk = got[:, dy * 256:(dy + 1) * 256, dx * 256:(dx + 1) * 256]
                np.testing.assert_array_equal(blk[3], exp[3])
                visible = exp[3] > 0
                np.testing.assert_array_equal(blk[:3][:, visible], exp[:3][:, visible])
        assert (got[3] == 255).mean() > 0.5  # there is data


def test_analytic_ndvi_on_native_grid_matches_numpy(world):
    """Default grid = first scene's CRS and 10 m: NDVI equals numpy on the band files."""
    chain = Collection("s2", catalog=world["cat"]).ids("A").process().expression(
        "(B08-B04)/(B08+B04)").scale(-1, 1)
    x0, y0 = world["origin"]
    # rows 100..300, cols 50..450 of A, given in the output CRS
    bbox = (x0 + 500, y0 - 3000, x0 + 4500, y0 - 1000)
    out = chain.compute(bbox=bbox, bbox_crs="EPSG:32632", analytic=True, chunks=128,
                        catalog=world["cat"])
    assert out.attrs["crs"] == "EPSG:32632" and out.attrs["kind"] == "analytic"
    assert out.attrs["transform"] == (10.0, 0.0, x0 + 500, 0.0, -10.0, y0 - 1000)
    assert out.shape == (1, 200, 400) and np.isnan(out.attrs["nodata"])
    red = band(world, "A", "B04")[100:300, 50:450].astype(np.float64)
    nir = band(world, "A", "B08")[100:300, 50:450].astype(np.float64)
    np.testing.assert_allclose(out.values[0], (nir - red) / (nir + red), rtol=1e-6)
    assert out.x.values[0] == x0 + 505 and out.y.values[0] == y0 - 1005


def test_to_cog_reads_back_with_rasterio(world, tmp_path):
    chain = Collection("s2", catalog=world["cat"]).process(mosaic="latest").bands("B04", "B08")
    x0, y0 = world["origin"]
    bbox = (x0 + 4000, y0 - 6000, x0 + 11000, y0 - 0)  # beyond B's east edge: nodata there
    path = to_cog(chain, tmp_path / "bands.tif", bbox=bbox, bbox_crs="EPSG:32632",
                  resolution=10, chunks=256, catalog=world["cat"])
    with rasterio.open(path) as ds:
        assert ds.crs.to_epsg() == 32632 and ds.count == 2 and ds.dtypes[0] == "uint16"
        assert ds.transform == from_origin(x0 + 4000, y0, 10, 10)
        assert (ds.width, ds.height) == (700, 600) and ds.nodata == 0
        assert ds.descriptions == ("B04", "B08") and ds.overviews(1) == [2]
        assert ds.profile["tiled"] and ds.tags()["chain_id"] == chain.id
        got = ds.read()
    # independent: B (latest) where it has data, else A, else nodata (0)
    exp = np.zeros((2, 600, 700), np.uint16)
    for k, name in enumerate(["B04", "B08"]):
        exp[k, :, :200] = band(world, "A", name)[:, 400:]
        exp[k, :, 100:] = band(world, "B", name)[:, :600]
    np.testing.assert_array_equal(got, exp)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp left


def test_time_stack_to_zarr_keeps_dates_and_cog_refuses(world, tmp_path):
    coll = Collection("stack", catalog=world["cat"])
    chain = coll.process_multi(["B04"], times=True)
    bbox = world["items"]["T0"].bbox
    path = to_zarr(chain, tmp_path / "stack.zarr", bbox=bbox, chunks=64, catalog=world["cat"])
    ds = xr.open_zarr(path)
    arr = ds["result"]
    assert arr.dims == ("time", "band", "y", "x") and list(ds.band.values) == ["B04"]
    assert [str(t)[:10] for t in ds.time.values] == ["2020-05-01", "2020-05-02", "2020-05-03"]
    assert ds.spatial_ref.attrs["crs_wkt"].startswith("PROJCS") or "UTM" in \
        ds.spatial_ref.attrs["crs_wkt"]
    tx, ty = utm(10.5, 47.0)
    x = ds.x.values
    i0 = round((x[0] - 5 - tx) / 10)  # grid snapped to 10 m: same pixels as the files
    j0 = round((ty - (ds.y.values[0] + 5)) / 10)
    vals = arr.values
    for k in range(3):
        src = band(world, f"T{k}", "B04")
        inside = vals[k, 0, max(0, -j0):200 - j0, max(0, -i0):200 - i0]
        np.testing.assert_array_equal(inside, src[max(0, j0):, max(0, i0):][:inside.shape[0],
                                                                              :inside.shape[1]])
    with pytest.raises(InvalidInput, match="reduce the time stack"):
        to_cog(chain, tmp_path / "stack.tif", bbox=bbox, catalog=world["cat"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.zarr"]


# -- limits and failures ------------------------------------------------------------------------
def test_too_large_area_fails_before_any_work(world, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(blocks, "render_block", lambda *a: calls.append(a))
    chain = Collection("s2", catalog=world["cat"]).process().bands("B04")
    with pytest.raises(InvalidInput, match="more than the limit of 1,000,000"):
        to_cog(chain, tmp_path / "big.tif", bbox=(11.0, 47.5, 12.0, 48.5), resolution=10,
               catalog=world["cat"], max_pixels=1_000_000)
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_failing_blocks_name_the_block_and_leave_no_file(world, tmp_path):
    """Scene G's files vanish after cataloguing: blocks that need G fail, A-only ones don't."""
    for asset in world["items"]["G"].assets.values():
        os.remove(asset.href)
    chain = Collection("broken", catalog=world["cat"]).sort("datetime").process().bands("B04")
    x0, y0 = world["origin"]
    bbox = (x0, y0 - 2560, x0 + 7680, y0)
    with pytest.raises(DataUnavailable, match=r"block \(0, [2-5]\) = rows 0:256, cols .*bbox "
                       r".* in EPSG:32632: source file is missing"):
        to_cog(chain, tmp_path / "x.tif", bbox=bbox, bbox_crs="EPSG:32632", chunks=256,
               catalog=world["cat"], threads=2)
    with pytest.raises(DataUnavailable, match="block"):
        to_zarr(chain, tmp_path / "x.zarr", bbox=bbox, bbox_crs="EPSG:32632", chunks=256,
                catalog=world["cat"])
    assert list(tmp_path.iterdir()) == []


def test_execute_in_process_uses_the_installed_executor_and_overlap(world):
    """Outside Dask workers the process's executor runs execute steps; ``overlap`` gives
    each block a halo so a neighbourhood function is seamless across blocks."""
    src = "def grad(a):\n    return a\n"  # the test executor below does the work
    chain = Collection("s2", catalog=world["cat"]).ids("A").process().bands("B04").execute(
        "grad", source=src)
    seen = []

    def executor(step, array, *, band_names, dates):
        seen.append(array.shape)
        out = np.zeros(array.shape, np.float32)  # x-gradient: needs the neighbour columns
        out[..., 1:-1] = array.data[..., 2:].astype(np.float32) - array.data[..., :-2]
        return np.ma.MaskedArray(out)

    x0, y0 = world["origin"]
    bbox = (x0 + 1000, y0 - 1280, x0 + 3560, y0)  # rows 0:128, cols 100:356 of A
    previous = set_executor(executor)
    try:
        halo = compute(chain, bbox=bbox, bbox_crs="EPSG:32632", chunks=128, overlap=1,
                       catalog=world["cat"]).values
        plain = compute(chain, bbox=bbox, bbox_crs="EPSG:32632", chunks=128,
                        catalog=world["cat"]).values
    finally:
        set_executor(previous)
    assert (1, 130, 130) in seen
    red = band(world, "A", "B04").astype(np.float32)
    np.testing.assert_array_equal(halo[0], red[0:128, 101:357] - red[0:128, 99:355])
    assert (plain[0, :, 127] == 0).all() and (plain[0, :, 128] == 0).all()


def test_execute_without_executor_or_client_is_a_clear_error(world, tmp_path):
    chain = Collection("s2", catalog=world["cat"]).process().bands("B04").execute(
        "tmax", source=TMAX)
    previous = set_executor(None)
    try:
        with pytest.raises(SandboxError, match="pass client="):
            to_cog(chain, tmp_path / "x.tif", bbox=world["items"]["A"].bbox,
                   catalog=world["cat"])
    finally:
        set_executor(previous)
    assert list(tmp_path.iterdir()) == []


# -- a real cluster: sandbox on the workers, a worker killed mid-run, the CLI ------------------
@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    lc = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="1GiB",
                      dashboard_address=":0")
    client = Client(lc)
    yield client
    client.close()
    lc.close()


def test_user_function_runs_in_the_sandbox_on_the_workers(world, cluster, tmp_path):
    chain = Collection("s2", catalog=world["cat"]).ids("A").process().bands(
        "B04", "B08").execute("ndvi2", 2.0, source=NDVI2)
    x0, y0 = world["origin"]
    bbox = (x0, y0 - 3000, x0 + 3000, y0)
    assert blocks.sandbox_pool() is None
    path = to_cog(chain, tmp_path / "ndvi2.tif", bbox=bbox, bbox_crs="EPSG:32632", chunks=128,
                  catalog=world["cat"], client=cluster, sandbox={"size": 1, "timeout_s": 20},
                  stall_s=120)  # a stuck run fails saying what the workers do
    with rasterio.open(path) as ds:
        got = ds.read(1)
    red = band(world, "A", "B04")[:300, :300].astype(np.float32)
    nir = band(world, "A", "B08")[:300, :300].astype(np.float32)
    np.testing.assert_allclose(got, 2 * (nir - red) / (nir + red), rtol=1e-6)
    pools = cluster.run(lambda: (os.getpid(), blocks.sandbox_pool().worker_pids()
                                 if blocks.sandbox_pool() else None))
    assert all(p is not None for _, p in pools.values())  # one pool per worker process
    for pid, sandbox_pids in pools.values():
        assert sandbox_pids and pid not in sandbox_pids  # user code ran in other processes
    assert blocks.sandbox_pool() is None  # and never in this (client) process


def test_killed_worker_run_completes_with_identical_output(world, cluster):
    chain = Collection("s2", catalog=world["cat"]).process().expression(
        "(B08-B04)/(B08+B04)").scale(-1, 1).colormap("viridis")
    x0, y0 = world["origin"]
    opts = {"bbox": (x0, y0 - 6000, x0 + 11000, y0), "bbox_crs": "EPSG:32632",
            "chunks": 64, "catalog": world["cat"]}
    expected = compute(chain, **opts).values
    arr = compute(chain, client=cluster, **opts)  # persisted: computing in the background
    victim = None
    deadline = time.monotonic() + 20
    while victim is None and time.monotonic() < deadline:
        for addr, keys in cluster.processing().items():
            if keys:
                victim = addr
                break
        time.sleep(0.01)
    assert victim is not None
    pid = cluster.run(os.getpid, workers=[victim])[victim]
    futures = futures_of(arr.data)
    os.kill(pid, signal.SIGKILL)
    assert sum(f.done() for f in futures) < len(futures)  # killed mid-run
    try:  # lost blocks are recomputed on the other / restarted worker
        wait(futures, timeout=150)
    except TimeoutError:
        pytest.fail("the run stalled after the kill:\n" + describe_workers(
            cluster, {f.key: str(f.key) for f in futures if not f.done()}))
    got = arr.values
    np.testing.assert_array_equal(got, expected)
    assert pid not in cluster.run(os.getpid).values()
    assert (got[3] > 0).mean() > 0.5


def test_cli_run_end_to_end(world, cluster, tmp_path, capsys, monkeypatch):
    chain = Collection("s2", catalog=world["cat"]).ids("A").process().expression(
        "(B08-B04)/(B08+B04)")
    (tmp_path / "ndvi.json").write_text(chain.to_json())
    lon0, lat0, _, _ = world["items"]["A"].bbox
    bbox = f"{lon0 + 0.01},{lat0 + 0.01},{lon0 + 0.03},{lat0 + 0.02}"
    monkeypatch.setenv("EOX_DASK_SCHEDULER", cluster.scheduler.address)
    out = tmp_path / "ndvi.tif"
    code = main(["run", str(tmp_path / "ndvi.json"), "--catalog", world["path"], "--bbox", bbox,
                 "--resolution", "10", "--out", str(out), "--quiet"])
    assert code == 0 and f"wrote {out}" in capsys.readouterr().out
    with rasterio.open(out) as ds:
        got, t = ds.read(1), ds.transform
        assert ds.crs.to_epsg() == 32632 and t.a == 10 and np.isnan(ds.nodata)
    x0, y0 = world["origin"]
    c0, r0 = round((t.c - x0) / 10), round((y0 - t.f) / 10)
    red = band(world, "A", "B04")[r0:r0 + got.shape[0], c0:c0 + got.shape[1]].astype(float)
    nir = band(world, "A", "B08")[r0:r0 + got.shape[0], c0:c0 + got.shape[1]].astype(float)
    np.testing.assert_allclose(got, (nir - red) / (nir + red), rtol=1e-6)
    # too large: a clear one-line error, exit 2, no file
    monkeypatch.setenv("EOX_BATCH_MAX_PIXELS", "1000")
    code = main(["run", str(tmp_path / "ndvi.json"), "--catalog", world["path"], "--bbox", bbox,
                 "--out", str(tmp_path / "big.tif"), "--quiet"])
    assert code == 2 and "more than the limit" in capsys.readouterr().err
    assert not (tmp_path / "big.tif").exists()


# -- a run that makes no progress fails, saying what the workers do ---------------------------
_release = threading.Event()


def _stuck_block(p, i, j):
    """A block that never finishes (until the test releases it)."""
    _release.wait(60)
    raise RuntimeError("released")


@pytest.fixture
def local_client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as lc, Client(lc) as client:
        yield client


def test_a_run_whose_blocks_never_finish_fails_naming_them(world, local_client, tmp_path,
                                                             monkeypatch):
    """Before: ``for fut in as_completed(...)`` waited forever (CI: killed at 300 s)."""
    monkeypatch.setattr(blocks, "render_block", _stuck_block)
    chain = Collection("s2", catalog=world["cat"]).ids("A").process().bands("B04")
    x0, y0 = world["origin"]
    _release.clear()
    started = time.monotonic()
    try:
        with pytest.raises(BatchStalled) as err:
            to_cog(chain, tmp_path / "x.tif", bbox=(x0, y0 - 1280, x0 + 1280, y0),
                   bbox_crs="EPSG:32632", chunks=64, catalog=world["cat"],
                   client=local_client, stall_s=2)
    finally:
        _release.set()
    text = str(err.value)
    assert "no block finished in 2 s (0 of 4 done, 4 in flight" in text
    assert "running; memory" in text and "executing block (" in text and "_stuck_block" in text
    assert "no sandbox started" in text
    assert time.monotonic() - started < 30 and list(tmp_path.iterdir()) == []


def test_a_run_on_paused_workers_fails_saying_so(world, tmp_path, monkeypatch):
    """A worker over its memory pause threshold starts no task: before, the run (its probe)
    waited silently forever."""
    from distributed import Client, LocalCluster

    monkeypatch.setenv("EOX_BATCH_STALL_S", "2")
    chain = Collection("s2", catalog=world["cat"]).ids("A").process().bands("B04")
    # this process already uses far more than 80 % of 64 MiB: the worker pauses at once
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
                      memory_limit="64MiB") as lc, Client(lc) as client:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and [w["status"] for w in client.scheduler_info(
                n_workers=-1)["workers"].values()] != ["paused"]:
            time.sleep(0.05)
        with pytest.raises(BatchStalled, match=r"(?s)probing the output .* did not finish in "
                           r"2 s.*: paused; memory \d+ MiB of its 64 MiB limit; paused for "
                           r"memory"):
            to_cog(chain, tmp_path / "x.tif", bbox=world["items"]["A"].bbox,
                   catalog=world["cat"], client=client)
    assert list(tmp_path.iterdir()) == []


def test_stall_timeout_must_be_positive(monkeypatch):
    from engine.batch.stall import STALL_S, stall_timeout

    assert stall_timeout() == STALL_S and stall_timeout(5) == 5.0
    monkeypatch.setenv("EOX_BATCH_STALL_S", "7.5")
    assert stall_timeout() == 7.5
    for bad in ("soon", "0", "-1"):
        monkeypatch.setenv("EOX_BATCH_STALL_S", bad)
        with pytest.raises(InvalidInput, match="EOX_BATCH_STALL_S"):
            stall_timeout()
    with pytest.raises(InvalidInput, match="stall_s"):
        stall_timeout(0)


# -- large rasters on screen --------------------------------------------------------------------
def test_open_for_screen_reads_the_matching_overview(world, tmp_path):
    path = world["items"]["A"].assets["B04"].href  # 600 px, overviews 2 and 4
    full = band(world, "A", "B04")
    whole = open_for_screen(path, None, 150, 150)
    assert whole.shape == (1, 150, 150) and whole.attrs["overview_factor"] == 4
    with rasterio.open(path, overview_level=1) as ov:  # the x4 overview, read directly
        np.testing.assert_array_equal(whole.values[0], ov.read(1))
    x0, y0 = world["origin"]
    part = open_for_screen(path, (x0 + 1000, y0 - 2000, x0 + 3000, y0), 1000, 1000)
    assert part.shape == (1, 200, 200) and part.attrs["overview_factor"] == 1
    np.testing.assert_array_equal(part.values[0], full[:200, 100:300])
    assert part.x.values[0] == x0 + 1005 and part.attrs["crs"] == "EPSG:32632"


def test_connect_starts_a_bounded_local_cluster():
    with connect(workers=1, memory_limit="512MiB") as client:
        info = client.scheduler_info()["workers"]
        assert len(info) == 1
        assert [w["memory_limit"] for w in info.values()] == [512 * 2**20]
        assert client.submit(os.getpid).result() != os.getpid()  # a separate process
