"""User functions end to end through the service built like ``app.wiring.build_service``: the
shipped ``stubble`` and ``maxNDI`` run in the sandbox over small COGs in a real SQLiteCatalog,
and their PNG tiles equal a numpy computation on bands reprojected independently with
rasterio. Rejected and hostile functions give clear 4xx while plain tiles keep being served;
/healthz shows the sandbox; with functions disabled an execute chain is refused."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import morecantile
import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_bounds, from_origin
from rasterio.warp import reproject, transform
from starlette.testclient import TestClient

from app.settings import Settings
from engine import algorithms
from engine.catalog import SQLiteCatalog
from engine.ingest.items import BandAsset, build_collection, make_item

COLLECTION = "s2-functions"
CRS_UTM = CRS.from_epsg(32633)
ORIGIN = (500_000.0, 5_550_000.0)
RES, SIZE = 10.0, 512
BANDS = {"B02": "blue", "B03": "green", "B04": "red", "B06": "rededge", "B08": "nir",
         "B11": "swir16"}
DATES = [datetime(2021, 5, 1, 10, tzinfo=UTC), datetime(2021, 6, 1, 10, tzinfo=UTC),
         datetime(2021, 7, 1, 10, tzinfo=UTC)]
TMS = morecantile.tms.get("WebMercatorQuad")
#: Centre (row, col) of the z14 tile over the scene centre (it covers rows ~110-266, cols
#: ~210-367): the fields below cross their thresholds there.
TILE_ROW, TILE_COL = 188, 288
STUBBLE_INPUT = ["B04", "B06", "B08", "B11"]
MAXNDI_INPUT = ["B11", "B08", "B04", "B03", "B02"]  # maxNDI's default band positions


def band_array(name: str, k: int) -> np.ndarray:
    """Pixels of band ``name`` on date ``k``: smooth fields whose thresholds cut the scene in
    different directions (a swapped band or date shows), nodata 0 in a block."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    r, c = (rows - TILE_ROW) / SIZE, (cols - TILE_COL) / SIZE  # about -0.15..0.15 in the tile
    phase = 2 * np.pi * k / 3
    bump = 0.5 + 0.5 * np.cos(6 * np.pi * c + phase) * np.cos(4 * np.pi * r - phase / 2)
    arr = {
        "B04": 1000 + 3000 * c + 50 * k,             # stubble: < 1000 on the west
        "B06": 1200 + 3000 * r,                       # < 1200 on the north
        "B08": 1200 + 2500 * (r + c) + 900 * bump,    # NDVI differs per date and place
        "B11": 1050 + 4000 * (c - r) + 100 * k,       # 500 < B11 < 1600 near the diagonal
        "B03": 600 + 700 * k + 1000 * r,              # the chosen date shows in green
        "B02": 400 + 1000 * c + 200 * k,
    }[name]
    out = np.clip(arr, 1, 10_000).astype(np.uint16)
    if name == "B08":  # a pond south-east of the centre: low NIR on every date...
        out[200:250, 300:350] = 1100
    if k == 1 and name == "B11":  # ... and low SWIR on date 1: maxNDI's water rule
        out[200:250, 300:350] = 150
    out[170:190, 270:290] = 0
    return out


def write_cog(path: Path, array: np.ndarray) -> Path:
    profile = {"driver": "COG", "dtype": "uint16", "count": 1, "width": SIZE, "height": SIZE,
               "crs": CRS_UTM, "transform": from_origin(*ORIGIN, RES, RES), "nodata": 0,
               "compress": "DEFLATE", "blocksize": 256, "overviews": "AUTO"}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)
    return path


def build_catalog(root: Path) -> Path:
    folder = root / "cogs"
    folder.mkdir(parents=True)
    items = []
    for k, when in enumerate(DATES):
        item_id = f"S2A_33UVR_{when:%Y%m%d}"
        assets = [BandAsset(key=b, href=write_cog(folder / f"{item_id}_{b}.tif",
                                                   band_array(b, k)),
                            eo_band={"name": b, "common_name": common})
                  for b, common in BANDS.items()]
        props = {"platform": "sentinel-2a", "constellation": "sentinel-2",
                 "eo:cloud_cover": 5.0 * k, "processing:level": "L2A"}
        items.append(make_item(item_id, when, assets, properties=props, collection=COLLECTION))
    db = root / "catalog.sqlite"
    with SQLiteCatalog(db) as cat:
        cat.add_collection(build_collection(COLLECTION, items))
        cat.add_items(items, collection=COLLECTION)
    return db


def centre_tile(z: int = 14) -> morecantile.Tile:
    x, y = ORIGIN[0] + RES * SIZE / 2, ORIGIN[1] - RES * SIZE / 2
    (lon,), (lat,) = transform(CRS_UTM, "EPSG:4326", [x], [y])
    return TMS.tile(lon, lat, z)


def reference_band(folder: Path, band: str, k: int, tile: morecantile.Tile) -> np.ma.MaskedArray:
    """Independent reference: the band file reprojected to the tile's Web Mercator grid."""
    path = folder / f"S2A_33UVR_{DATES[k]:%Y%m%d}_{band}.tif"
    with rasterio.open(path) as src:
        dst = np.full((256, 256), np.nan)
        reproject(src.read(1), dst, src_transform=src.transform, src_crs=src.crs, src_nodata=0,
                  dst_transform=from_bounds(*TMS.xy_bounds(tile), 256, 256), dst_crs="EPSG:3857",
                  dst_nodata=np.nan, resampling=rasterio.enums.Resampling.nearest)
    return np.ma.masked_invalid(dst)


def rgba(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)).convert("RGBA"))


def fraction_equal(got: np.ndarray, want: np.ndarray, where: np.ndarray) -> float:
    assert where.sum() > 1000
    return float((got[where] == want[where]).all(axis=-1).mean() if got.ndim == 3
                 else (got[where] == want[where]).mean())


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("user-functions")
    return build_catalog(root), root / "cogs"


def _service(db: Path, root: Path, **options):
    from app.wiring import build_service

    settings = Settings(catalog=str(db), data_dir=root, tile_cache_mb=0, **options)
    return build_service(settings)


@pytest.fixture(scope="module")
def client(data, tmp_path_factory):
    """The service as `eoexplorer tiles` builds it, with 1 sandbox worker and a 3 s limit."""
    from engine.chain import set_executor
    from engine.chain.executor import get_executor
    from engine.sandbox import close_default_pool, configure, set_default_imports

    previous = get_executor()
    app = _service(data[0], tmp_path_factory.mktemp("state"), sandbox_workers=1,
                   sandbox_timeout_s=3.0, sandbox_memory_mb=768)
    try:
        with TestClient(app, raise_server_exceptions=False, base_url="http://localhost") as c:
            caps = c.get("/healthz").json()["sandbox"]
            if not caps.get("available"):
                pytest.skip(f"sandbox workers do not start here: {caps}")
            yield c
    finally:
        set_executor(previous)
        configure(size=2)  # the default pool's arguments before this module
        set_default_imports(None)
        close_default_pool()


def register(c: TestClient, chain) -> str:
    r = c.post("/api/chains", json=chain.model_dump(mode="json"))
    assert r.status_code == 201, r.text
    return r.json()["id"]


def collection(db: Path):
    from engine.collection import Collection

    return Collection(COLLECTION, catalog=SQLiteCatalog(db))


def plain_chain(db: Path):
    return collection(db).ids([f"S2A_33UVR_{DATES[0]:%Y%m%d}"]).process().bands(
        "B04", "B03", "B02").scale(0, 3000)


def tile_url(cid: str, t: morecantile.Tile) -> str:
    return f"/api/chains/{cid}/tiles/{t.z}/{t.x}/{t.y}.png"


# -- the shipped functions, compared with numpy ---------------------------------------------------
def test_stubble_tile_equals_numpy(client, data):
    db, folder = data
    source, name, _ = algorithms.load("stubble")
    chain = (collection(db).ids([f"S2A_33UVR_{DATES[0]:%Y%m%d}"]).process_multi(STUBBLE_INPUT)
             .execute(name, source=source).band(0).scale(0, 1).color_custom(["Lime"]))
    t = centre_tile()
    r = client.get(tile_url(register(client, chain), t))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
    got = rgba(r.content)

    b4, b6, b8, b11 = (reference_band(folder, b, 0, t) for b in STUBBLE_INPUT)
    valid = ~(b4.mask & b6.mask & b8.mask & b11.mask)
    b4, b6, b8, b11 = (b.filled(0) for b in (b4, b6, b8, b11))
    rule = (b4 < 1000) & (b6 < 1200) & (b8 < 1200) & (b11 > 500) & (b11 < 1600)
    assert 0.05 < rule[valid].mean() < 0.6 and (~valid).sum() > 100  # the rule splits the tile
    want_alpha = np.where(rule & valid, 255, 0)
    assert fraction_equal(got[..., 3], want_alpha, np.ones_like(rule)) >= 0.999
    lime = got[(got[..., 3] == 255)][:, :3]
    assert len(lime) > 1000 and (lime == [0, 255, 0]).all()


def test_maxndi_time_stack_tile_equals_numpy(client, data):
    db, folder = data
    source, name, _ = algorithms.load("maxNDI")
    chain = (collection(db).process_multi(MAXNDI_INPUT, times=True)
             .execute(name, source=source).scale(0, 3000))
    t = centre_tile()
    r = client.get(tile_url(register(client, chain), t))
    assert r.status_code == 200, r.text
    got = rgba(r.content)

    stack = np.ma.stack([np.ma.stack([reference_band(folder, b, k, t) for b in MAXNDI_INPUT])
                         for k in range(len(DATES))])  # (time, band, y, x)
    valid = ~np.ma.getmaskarray(stack).all(axis=(0, 1))
    v = stack.filled(0).astype(np.float64)
    b11, b8, b4 = v[:, 0], v[:, 1], v[:, 2]
    with np.errstate(all="ignore"):
        ndvi = np.where((b8 == 0) | (b4 == 0), -1.0, (b8 - b4) / (b8 + b4))
        ndwi = np.where((b8 == 0) | (b11 == 0), -1.0, (b8 - b11) / (b8 + b11))
    best_v, best_w = ndvi.max(axis=0), ndwi.max(axis=0)
    water = 2 * best_v <= best_w
    date = np.where(water, ndwi.argmax(axis=0), ndvi.argmax(axis=0))
    assert len(np.unique(date[valid])) == 3 and 0.01 < water[valid].mean() < 0.5
    rgb = np.take_along_axis(v[:, 2:5], date[None, None], axis=0)[0]  # B04, B03, B02
    want = np.rint(np.clip(rgb / 3000, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    assert fraction_equal(got[..., 3] > 0, valid, np.ones_like(valid)) >= 0.995
    both = valid & (got[..., 3] > 0)
    assert fraction_equal(got[..., :3], want, both) >= 0.995


# -- refused and hostile functions ----------------------------------------------------------------
def execute_chain(db: Path, function: str, source: str):
    return (collection(db).ids([f"S2A_33UVR_{DATES[0]:%Y%m%d}"]).process_multi(STUBBLE_INPUT)
            .execute(function, source=source).band(0).scale(0, 1))


def execute_json(function: str, source: str) -> dict:
    return {"source": {"collection": COLLECTION, "bands": STUBBLE_INPUT},
            "steps": [{"name": "execute", "function": function, "source": source},
                      {"name": "band", "index": 0}, {"name": "scale", "min": [0], "max": [1]}]}


@pytest.mark.parametrize("source, line, reason", [
    ("def f(a):\n    b = ().__class__.__bases__\n    return a\n", 2, "'__bases__' is not allowed"),
    ("import numpy as np\n\n\ndef f(a):\n    np.save('/tmp/x.npy', a)\n    return a\n", 5,
     "'save' is not allowed"),
    ("import os\n\ndef f(a):\n    return a\n", 1, "os"),
    ("def f(a):\n    return open('/etc/passwd').read()\n", 2, "open"),
    ("def f(a):\n    return np.ma.MaskedArray(a).baseclass\n", 2, "'baseclass'"),
    ("def f(a):\n    return a.base\n", 2, "'base'"),
    ("def f(a):\n    np.linalg.test()\n    return a\n", 2, "numpy.linalg.test is not"),
    ("def f(a):\n    return a\n\nf = np.asarray\n", 4, "rebinds 'f'"),
])
def test_rejected_function_is_422_naming_line_and_reason(client, data, source, line, reason):
    r = client.post("/api/chains", json=execute_json("f", source))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["type"] == "FunctionRejected" and f"line {line}" in body["detail"]
    assert reason in body["detail"], body["detail"]
    still_serving(client, data[0])


@pytest.mark.parametrize("source", ["-" * 24000 + "img", ".T" * 24000, "()" * 24000,
                                    "img" + ".T" * 24000])
def test_sources_too_deep_to_parse_are_4xx_not_500(client, data, source):
    r = client.post("/api/chains", json=execute_json("f", source))
    assert r.status_code == 422, (r.status_code, r.text[:300])
    assert r.json()["detail"].startswith("execute: "), r.json()
    still_serving(client, data[0])


HOSTILE_AT_RUN = {
    "loop": ("def f(a):\n    while True:\n        pass\n    return a\n", "time limit"),
    "memory": (("import numpy as np\n\ndef f(a):\n    x = np.ones((60000, 60000))\n"
                "    return a + x[0, 0]\n"), "memory limit"),
    "raises": ("def f(a):\n    return a[99]\n", "line 2"),
    "deep-error-value": (("def f(a):\n    x = []\n    for i in range(200000):\n        x = [x]\n"
                          "    raise ValueError(x)\n"), ("line 5: f() raised ValueError: <the "
                         "exception's value cannot be printed>")),
}


@pytest.mark.parametrize("kind", list(HOSTILE_AT_RUN))
def test_hostile_function_tile_is_4xx_and_plain_tiles_keep_working(client, data, kind):
    source, mentions = HOSTILE_AT_RUN[kind]
    cid = register(client, execute_chain(data[0], "f", source))
    r = client.get(tile_url(cid, centre_tile()))
    assert r.status_code == 422, (r.status_code, r.text[:300])
    assert mentions in r.json()["detail"], r.json()
    still_serving(client, data[0])


def still_serving(c: TestClient, db: Path) -> None:
    """A plain tile right after: correct pixels (B04 of the first date) and a healthy service."""
    t = centre_tile()
    r = c.get(tile_url(register(c, plain_chain(db)), t))
    assert r.status_code == 200
    red = rgba(r.content)[..., 0]
    want = reference_band(Path(db).parent / "cogs", "B04", 0, t)
    exp = np.rint(np.clip(want.filled(0) / 3000, 0, 1) * 255)
    assert fraction_equal(red, exp, ~want.mask) >= 0.99
    assert c.get("/healthz").json()["status"] == "ok"


def test_healthz_shows_the_sandbox_capabilities(client):
    caps = client.get("/healthz").json()["sandbox"]
    assert caps["available"] is True and caps["workers"] == 1
    assert caps["timeout_s"] == 3.0 and caps["memory_mb"] == 768
    assert "numpy" in caps["allowed_imports"]
    assert caps["calls_per_process"] == 64  # EOX_SANDBOX_CALLS_PER_PROCESS's default
    assert "ONE function" in caps["design"] and "zygote" in caps["design"]
    if caps["seccomp"]:  # what a probe child, restricted like a call's, could not do
        assert caps["blocked"] == {k: True for k in ("open", "listdir", "write", "socket",
                                                     "fork", "exec", "signal_parent")}
        assert caps["no_fs_read"] and caps["no_signals"] and caps["zygote_threads"] == 1


def test_functions_disabled_refuses_execute_chains(data, tmp_path, client):
    from engine.chain import set_executor
    from engine.chain.executor import get_executor

    previous = get_executor()
    try:
        app = _service(data[0], tmp_path, functions_enabled=False)
        with TestClient(app, raise_server_exceptions=False, base_url="http://localhost") as c:
            assert c.get("/healthz").json()["sandbox"]["available"] is False
            source, name, _ = algorithms.load("stubble")
            r = c.post("/api/chains", json=execute_json(name, source))
            assert r.status_code == 422, r.text
            assert "functions are disabled" in r.json()["detail"]
            assert c.post("/api/chains", json=plain_chain(data[0]).model_dump(
                mode="json")).status_code == 201
    finally:
        set_executor(previous)
