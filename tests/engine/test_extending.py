"""docs/extending.md, section 1, followed: the documented step is the shipped code, and the
`threshold` step works in a chain, in the renderer and through the HTTP service."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from rasterio.transform import Affine
from render_fixtures import make_catalog, make_item, pattern

from engine import Collection
from engine.chain import STEPS, Chain, Threshold
from engine.chain.store import ChainStore
from engine.errors import ChainError
from engine.render import TileRenderer

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "extending.md"
COLL, ITEM = "s2-ext", "S2_EXT_20200601"


def _blocks(text: str) -> dict[str, str]:
    """Fenced python blocks of the doc whose first line names a file (``# path``)."""
    found = {}
    for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL):
        first, _, rest = block.partition("\n")
        if first.startswith("# ") and first.endswith(".py"):
            found[first[2:]] = rest
    return found


def test_the_documented_step_is_the_shipped_step():
    text = DOC.read_text()
    code = _blocks(text)["engine/chain/threshold.py"]
    source = (ROOT / "engine" / "chain" / "threshold.py").read_text()
    assert code.strip() in source  # the class, verbatim
    registration = "from engine.chain.threshold import Threshold as Threshold"
    assert registration in text
    assert registration in (ROOT / "engine" / "chain" / "__init__.py").read_text()


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("ext")
    transform = Affine(20.0, 0, 385_000.0, 0, -20.0, 5_825_000.0)  # UTM 33N, Berlin
    bands = {b: pattern((256, 256), seed=i) for i, b in enumerate(("B04", "B08"))}
    item = make_item(root / "cogs", ITEM, epsg=32633, transform=transform, bands=bands,
                     date=datetime(2020, 6, 1, 10, tzinfo=UTC))
    cat = make_catalog(root / "catalog.sqlite", {COLL: [item]})
    yield cat
    cat.close()


def _ratio(catalog) -> Chain:
    return (Collection(COLL, catalog=catalog).ids(ITEM).process(mosaic="latest")
            .expression("(B08-B04)/(B08+B04)"))


def test_threshold_in_a_chain_and_the_renderer(catalog):
    ratio = _ratio(catalog)
    veg = ratio.then(Threshold(value=0.0)).scale(0, 1).colormap("Greens")
    assert "threshold" in STEPS
    assert Chain.model_validate_json(veg.to_json()).id == veg.id  # chain JSON round trip
    assert ratio.then({"name": "threshold", "value": 0.0}).id == ratio.then(
        Threshold(value=0.0)).id
    renderer = TileRenderer(catalog)
    item = catalog.get_item(COLL, ITEM)
    w, s, e, n = item.bbox
    for lon, lat in [(w + (e - w) * f, s + (n - s) * g) for f, g in ((.3, .3), (.6, .7))]:
        value = renderer.point(ratio, lon, lat).values[0]
        hit = renderer.point(veg, lon, lat).values[0]
        assert hit == (1 if value >= 0.0 else 0), (value, hit)


def test_threshold_refuses_bad_parameters(catalog):
    with pytest.raises(ChainError, match="value"):
        _ratio(catalog).then({"name": "threshold", "value": "high"})
    with pytest.raises(ChainError, match="threshold"):  # the valid names are listed
        _ratio(catalog).then({"name": "treshold", "value": 0.1})


def test_threshold_through_the_http_service(catalog):
    from service import create_service

    veg = _ratio(catalog).then(Threshold(value=0.0)).scale(0, 1).colormap("Greens")
    client = TestClient(create_service(catalog, chain_store=ChainStore(catalog.path)))
    r = client.post("/api/chains", content=veg.to_json(),
                    headers={"Content-Type": "application/json"})
    assert r.status_code in (200, 201), r.text
    info = client.get(f"/api/chains/{veg.id}/tilejson.json").json()
    assert "| threshold(value=0.0) |" in info["description"]
    bad = dict(veg.model_dump(mode="json"))
    bad["steps"] = [*bad["steps"][:1], {"name": "threshold", "value": "high"}]
    r = client.post("/api/chains", json=bad)
    assert r.status_code in (400, 422) and "value" in r.text, r.text
    w, s, e, n = catalog.get_item(COLL, ITEM).bbox
    import morecantile

    t = morecantile.tms.get("WebMercatorQuad").tile((w + e) / 2, (s + n) / 2, 13)
    tile = client.get(f"/api/chains/{veg.id}/tiles/13/{t.x}/{t.y}.png")
    assert tile.status_code == 200 and tile.content.startswith(b"\x89PNG")
    rgba = np.asarray(Image.open(io.BytesIO(tile.content)).convert("RGBA"))
    shown = rgba[rgba[..., 3] > 0][:, :3]
    assert len(shown) > 0.5 * 256 * 256
    assert len(np.unique(shown, axis=0)) == 2  # two classes, two colours of the ramp
