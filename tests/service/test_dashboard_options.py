"""Service options the dashboard uses: histogram bins and arbitrary percentiles of the
statistics, transparent images for tiles without data. Checked against numpy."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from service_data import band_array
from test_tiles import _square


def _window(name: str) -> np.ndarray:
    return band_array(name)[100:260, 100:300].astype(float).ravel()


def test_statistics_bins_and_percentiles_match_numpy(client, chain_id):
    r = client.post(f"/api/chains/{chain_id}/statistics?bins=16&p=1,50,99.5",
                    json=_square(100, 100, 300, 260))
    assert r.status_code == 200, r.text
    for name in ("B04", "B03", "B02"):
        s, vals = r.json()[name], _window(name)
        counts, edges = s["histogram"]["counts"], s["histogram"]["edges"]
        assert len(counts) == 16 and len(edges) == 17
        assert sum(counts) == s["count"]
        assert edges[0] == pytest.approx(s["min"]) and edges[-1] == pytest.approx(s["max"])
        assert set(s["percentiles"]) == {"1", "50", "99.5"}
        for key, p in (("1", 1.0), ("50", 50.0), ("99.5", 99.5)):
            assert s["percentiles"][key] == pytest.approx(np.percentile(vals, p), rel=0.02)
        # the histogram has the shape numpy gives for the same pixels and range
        ref, _ = np.histogram(vals, bins=16, range=(s["min"], s["max"]))
        got = np.asarray(counts, float)
        assert np.abs(ref / ref.sum() - got / got.sum()).sum() < 0.1


def test_statistics_defaults_64_bins_and_the_usual_percentiles(client, chain_id):
    s = client.post(f"/api/chains/{chain_id}/statistics",
                    json=_square(100, 100, 300, 260)).json()["B04"]
    assert len(s["histogram"]["counts"]) == 64
    assert set(s["percentiles"]) == {"2", "5", "25", "50", "75", "95", "98"}


@pytest.mark.parametrize("query,status", [("bins=0", 422), ("bins=5000", 422),
                                          ("p=2,abc", 400), ("p=-1,50", 400),
                                          ("p=50,101", 400), ("p=nan", 400)])
def test_statistics_bad_bins_or_percentiles(client, chain_id, query, status):
    r = client.post(f"/api/chains/{chain_id}/statistics?{query}",
                    json=_square(100, 100, 300, 260))
    assert r.status_code == status, r.text


def test_empty_tile_as_transparent_png(client, chain_id):
    url = f"/api/chains/{chain_id}/tiles/3/0/0.png"
    assert client.get(url).status_code == 204
    r = client.get(url + "?empty=transparent")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert np.asarray(Image.open(io.BytesIO(r.content)).convert("RGBA"))[..., 3].max() == 0
    assert client.get(url + "?empty=nothing").status_code == 422
