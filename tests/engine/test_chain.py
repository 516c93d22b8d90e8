"""Chains as data: fluent building, JSON round trip and id, step behaviour, errors, store."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import matplotlib
import numpy as np
import pytest
from render_fixtures import make_catalog, make_item, pattern
from rio_tiler.models import ImageData

from engine.catalog import Query
from engine.chain import (
    STEPS,
    Chain,
    ColorCustom,
    Colormap,
    Mask,
    Opacity,
    Scale,
    Source,
    TimeStack,
    set_executor,
)
from engine.chain.store import ChainStore
from engine.collection import Collection
from engine.errors import ChainError, NotFound, SandboxError


@pytest.fixture(scope="module")
def coll(tmp_path_factory):
    from rasterio.transform import from_origin

    tmp = tmp_path_factory.mktemp("chain")
    bands = {n: pattern((32, 32), i) for i, n in enumerate(["B02", "B03", "B04", "B08", "SCL"])}
    item = make_item(tmp / "a", "A", epsg=32632, transform=from_origin(700000, 5320000, 10, 10),
                     bands=bands, date=datetime(2020, 5, 1, tzinfo=UTC))
    cat = make_catalog(tmp / "catalog.sqlite", {"s2": [item]})
    return Collection("s2", catalog=cat)


def source() -> Source:
    return Source.from_query(Query("s2", bbox=(11.0, 48.0, 12.0, 49.0),
                                   start=datetime(2020, 1, 1, tzinfo=UTC)))


def img(*bands: np.ndarray, names: list[str]) -> ImageData:
    return ImageData(np.ma.MaskedArray(np.stack(bands)), band_names=names)


def stubble(arr, a, b, c, d, e):  # a JEO-lab style user function (only its source is sent)
    return (arr[0] > a).astype("uint8")


# -- building, JSON, id ---------------------------------------------------------------------
def test_fluent_api_mirrors_jeolab(coll):
    p = coll.filter_bbox((11, 47, 13, 49)).process().bands("B08", "B04", "B03").scale(0, 3000)
    assert [s.name for s in p.steps] == ["bands", "scale"]
    assert p.source.collection == "s2" and p.source.bbox == (11.0, 47.0, 13.0, 49.0)
    q = coll.process_multi(["B04", "B06" if False else "B02", "B08"]).execute(
        stubble, 1000, 1200, 1200, 500, 1600).band(0).scale(0, 1).color_custom(["Lime"])
    ex = q.steps[0]
    assert ex.function == "stubble" and ex.args == [1000, 1200, 1200, 500, 1600]
    assert "def stubble(arr, a, b, c, d, e)" in ex.source
    r = coll.process().expression("(B08-B04)/(B08+B04)").scale(-1, 1).colormap("RdYlGn")
    assert r.read_bands() == ("B08", "B04")
    assert p.steps == () or p is not coll.process()  # fluent calls return new chains


def test_json_round_trip_and_stable_id(coll):
    p = coll.process(mosaic="least_cloudy").expression("(B08-B04)/(B08+B04)").scale(
        p=(2, 98)).colormap("RdYlGn").opacity(0.5)
    text = p.to_json()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert p.id == hashlib.sha256(text.encode()).hexdigest()
    back = Chain.from_json(text)
    assert back == p and back.id == p.id and back.to_json() == text
    # key order and whitespace of the input do not change the identity
    shuffled = json.dumps(dict(reversed(list(json.loads(text).items()))), indent=2)
    assert Chain.from_json(shuffled).id == p.id
    assert Chain.from_json(json.loads(text)).id == p.id
    assert coll.process().bands("B04").id != coll.process().bands("B03").id


def test_source_round_trips_the_query(coll):
    c = (coll.filter_bbox((11, 47, 13, 49)).filter_date("2020-01-01", "2020-12-31")
         .filter("eo:cloud_cover", "<=", 20).sort("datetime", ascending=False).limit(5))
    chain = c.process().bands("B04")
    assert Chain.from_json(chain.to_json()).source.to_query() == c.query


def test_registry_knows_every_step():
    assert set(STEPS.names()) >= {"bands", "band", "expression", "execute", "scale", "mask",
                                   "colormap", "color_custom", "opacity", "reduce"}


# -- steps on arrays --------------------------------------------------------------------------
def test_scale_per_band_pair_and_percentiles():
    a = np.arange(100, dtype=np.uint16).reshape(10, 10)
    f = a.astype(float)
    out = Scale(min=[0, 50], max=[99, 99])(img(a, a, names=["x", "y"]))
    np.testing.assert_array_equal(out.array[0], np.rint(a / 99 * 255).astype(np.uint8))
    np.testing.assert_array_equal(out.array[1], np.rint(np.clip((f - 50) / 49, 0, 1) * 255))
    lo, hi = np.percentile(a, [2, 98])
    out = Scale(p=(2, 98))(img(a, names=["x"]))
    np.testing.assert_array_equal(out.array[0], np.rint(np.clip((a - lo) / (hi - lo), 0, 1) * 255))
    g = Scale(min=0, max=99, gamma=2.0)(img(a, names=["x"]))
    np.testing.assert_array_equal(g.array[0], np.rint((a / 99) ** 0.5 * 255))


def test_mask_by_values_and_cloud_band():
    data = np.full((4, 4), 500, np.uint16)
    scl = np.array([[4, 3, 8, 9], [10, 4, 5, 6], [4, 4, 4, 4], [1, 2, 7, 11]], np.uint16)
    out = Mask(cloud=True)(img(data, scl, names=["B04", "SCL"]))
    assert out.band_names == ["B04"]
    np.testing.assert_array_equal(out.array.mask[0], np.isin(scl, [3, 8, 9, 10]))
    fm = np.array([[0, 1, 2, 3], [4, 255, 0, 0], [0] * 4, [0] * 4], np.uint16)
    out = Mask(cloud=True)(img(data, fm, names=["red", "fmask"]))
    np.testing.assert_array_equal(out.array.mask[0], np.isin(fm, [2, 3, 4]))
    out = Mask(values=[500])(img(data, names=["B04"]))
    assert out.array.mask.all()


def test_colormap_and_color_custom_and_opacity():
    a = np.array([[0, 128, 255]], np.uint8)
    out = Colormap(colormap="RdYlGn")(img(a, names=["ndvi"]))
    lut = (np.asarray(matplotlib.colormaps["RdYlGn"](np.linspace(0, 1, 256))) * 255).round()
    np.testing.assert_array_equal(out.array.data[:, 0, :].T, lut[[0, 128, 255]])
    lime = ColorCustom(colors=["Lime"])(img(np.array([[0, 255]], np.uint8), names=["m"]))
    assert lime.array.data[:, 0, 1].tolist() == [0, 255, 0, 255]  # opaque lime
    assert lime.array.data[3, 0, 0] == 0  # 0 is transparent
    half = Opacity(opacity=0.5)(lime)
    assert half.array.data[3, 0, 1] == 128
    assert Opacity(opacity=128).fraction() == pytest.approx(128 / 255)


def test_time_stack_reduce_and_execute():
    arr = np.ma.MaskedArray(np.arange(24, dtype=np.float32).reshape(3, 1, 2, 4))
    arr[2, 0, 0, 0] = np.ma.masked
    dates = tuple(datetime(2020, m, 1, tzinfo=UTC) for m in (1, 2, 3))
    stack = TimeStack(arr, dates, ("B04",))
    chain = Chain(source=source()).reduce("max")
    out = chain.apply(stack)
    assert isinstance(out, ImageData)
    np.testing.assert_array_equal(out.array[0], np.ma.max(arr, axis=0)[0])
    assert out.array[0, 0, 0] == 8  # the masked 16 is skipped
    ex = Chain(source=source()).execute("tmax", source="def tmax(a):\n    return a.max(0)\n")
    with pytest.raises(SandboxError, match="server-side functions are not enabled"):
        ex.apply(stack)
    calls = []

    def executor(step, array, *, band_names, dates):
        calls.append((step.function, band_names, dates))
        return np.ma.max(array, axis=0)

    previous = set_executor(executor)
    try:
        out = ex.apply(stack)
    finally:
        set_executor(previous)
    np.testing.assert_array_equal(out.array[0], np.ma.max(arr, axis=0)[0])
    assert calls == [("tmax", ["B04"], dates)]


# -- errors ------------------------------------------------------------------------------------
def test_unknown_band_lists_collection_bands(coll):
    with pytest.raises(ChainError) as err:
        coll.process().bands("B04", "B99")
    assert "unknown band 'B99'" in str(err.value) and "nir" in err.value.choices
    with pytest.raises(ChainError, match="unknown band 'XX'"):
        coll.process().expression("XX * 2")
    with pytest.raises(ChainError, match="unknown band"):
        coll.process_multi(["B04", "nope"])
    assert coll.process().bands("nir", "red").read_bands() == ("nir", "red")


@pytest.mark.parametrize("build, fragment", [
    (lambda c: c.process().colormap("NotAColormap"), "unknown colormap 'NotAColormap'"),
    (lambda c: c.process().bands("B04").color_custom(["notacolour"]), "unknown colour"),
    (lambda c: c.process().expression("__import__('os').system('ls')"),
     "call \"__import__('os').system\" is not allowed"),
    (lambda c: c.process().expression("(B04 - "), "malformed expression"),
    (lambda c: c.process().bands("B04").scale(p=(98, 2)), "percentiles"),
    (lambda c: c.process().bands("B04").scale(p=(-1, 50)), "percentiles"),
    (lambda c: c.process().bands("B04").scale(p=(2, 101)), "percentiles"),
    (lambda c: c.process().bands("B04").scale(0, 0), "equal"),
    (lambda c: c.process().bands("B04").scale(0), "give min and max"),
    (lambda c: c.process().bands("B04").scale([0, 0], [1]), "must match"),
    (lambda c: c.process().bands("B04").opacity(300), "less than or equal"),
    (lambda c: c.process().bands("B04").mask(), "give values"),
    (lambda c: c.process(mosaic="best"), "unknown mosaic method 'best'"),
    (lambda c: c.process().band(-1), "greater than or equal"),
    (lambda c: c.process().execute("f", source="def g(): pass"), "no top-level function 'f'"),
    (lambda c: c.process().execute("f", source="def f(:"), "does not parse"),
    (lambda c: c.process().execute("f", {1, 2}, source="def f(a, s): pass"), "must be numbers"),
])
def test_bad_steps(coll, build, fragment):
    with pytest.raises(ChainError) as err:
        build(coll)
    assert fragment in str(err.value)


def test_bad_json():
    good = Chain(source=source()).bands("B04").scale(0, 1).model_dump(mode="json")
    with pytest.raises(ChainError, match="unknown step 'sharpen'") as err:
        Chain.from_json({**good, "steps": [{"name": "sharpen"}]})
    assert "bands" in err.value.choices
    with pytest.raises(ChainError, match="malformed"):
        Chain.from_json("{not json")
    with pytest.raises(ChainError, match="invalid chain"):
        Chain.from_json({**good, "steps": [{"name": "scale", "min": 0, "max": 1, "zz": 3}]})
    with pytest.raises(ChainError, match="invalid chain at source"):
        Chain.from_json({"steps": []})
    with pytest.raises(ChainError, match="unknown colormap"):
        Chain.from_json({**good, "steps": [{"name": "colormap", "colormap": "nope"}]})


def test_chain_without_bands_says_how_to_start():
    with pytest.raises(ChainError, match="start with bands"):
        Chain(source=source()).scale(0, 1).read_bands()


# -- store -------------------------------------------------------------------------------------
def test_store_in_catalog_file(coll, tmp_path):
    store = ChainStore(coll.catalog.path)
    chain = coll.process().bands("B04", "B03", "B02").scale(0, 3000)
    cid = store.put(chain)
    assert cid == chain.id and store.put(chain) == cid
    again = ChainStore(coll.catalog.path)  # a new process would see it
    assert again.get(cid) == chain and cid in again
    with pytest.raises(NotFound):
        again.get("0" * 16)
    assert coll.catalog.collection("s2").id == "s2"  # the catalog still works in the same file


def test_common_band_names_is_what_every_scene_has():
    from datetime import UTC, datetime

    import pystac

    from engine.chain.bands import common_band_names

    def item(name, bands):
        it = pystac.Item(name, None, None, datetime(2020, 1, 1, tzinfo=UTC), {})
        for key, common in bands:
            band = {"name": key, **({"common_name": common} if common else {})}
            it.add_asset(key, pystac.Asset(f"{name}_{key}.tif", media_type=pystac.MediaType.COG,
                                           roles=["data"], extra_fields={"eo:bands": [band]}))
        return it

    s2 = item("s2", [("B04", "red"), ("B08", "nir"), ("SCL", None)])
    s2b = item("s2b", [("b04", "red"), ("B08", "nir")])  # other case, no SCL
    s1 = item("s1", [("VV", None), ("VH", None)])
    undescribed = item("x", [])
    assert common_band_names([s2, s2b]) == ["B04", "red", "B08", "nir"]
    assert common_band_names([s2, undescribed]) == ["B04", "red", "B08", "nir", "SCL"]
    assert common_band_names([s2, s1]) == []
    assert common_band_names([undescribed]) == [] and common_band_names([]) == []
