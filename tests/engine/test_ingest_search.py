"""``eoexplorer ingest https://.../search?...``: a remote STAC API search streamed page by
page into the embedded catalog (hrefs kept), resumed after an interruption without
fetching the committed pages again, and a clear error naming the host when the API fails.
Against a real STAC API server on 127.0.0.1 (tests/engine/stacapi_server.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pystac
import pytest
from stacapi_server import serve_stac_api

from app.cli import main
from engine.catalog import Query, SQLiteCatalog
from engine.errors import IngestError, InvalidInput
from engine.ingest import ingest_search
from engine.ingest.items import build_collection
from engine.ingest.remote import state_path
from tests.http_storage import free_port

N_ITEMS = 25


def _items() -> list[pystac.Item]:
    out = []
    for k in range(N_ITEMS):
        lon = 10.0 + 0.1 * k
        geom = {"type": "Polygon", "coordinates": [[[lon, 47], [lon + .1, 47], [lon + .1, 47.1],
                                                    [lon, 47.1], [lon, 47]]]}
        item = pystac.Item(f"S2B_T{k:02d}", geom, [lon, 47, lon + .1, 47.1],
                           datetime(2022, 7, 1, tzinfo=UTC) + timedelta(days=k),
                           properties={"platform": "sentinel-2b", "constellation": "sentinel-2",
                                       "eo:cloud_cover": float(k)})
        for key in ("red", "nir"):
            item.add_asset(key, pystac.Asset(
                f"https://sentinel-cogs.example/{item.id}/{key}.tif",
                media_type=pystac.MediaType.COG, roles=["data"],
                extra_fields={"eo:bands": [{"name": key, "common_name": key}],
                              "raster:bands": [{"nodata": 0, "scale": 0.0001,
                                                "offset": -0.1}]}))
        out.append(item)
    return out


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    items = _items()
    with serve_stac_api({"sentinel-2-l2a": items}, [build_collection("sentinel-2-l2a", items)],
                        tmp_path_factory.mktemp("api")) as url:
        yield url


def _search(api: str) -> str:
    return f"{api}/search?collections=sentinel-2-l2a&limit=10"


def test_search_is_ingested_page_by_page_with_remote_hrefs(api, tmp_path):
    pages = []
    with SQLiteCatalog(tmp_path / "c.sqlite") as cat:
        report = ingest_search(cat, _search(api), collection="s2", data_dir=tmp_path,
                               on_page=lambda n, added: pages.append((n, added)))
        assert sorted(report.added) == [f"S2B_T{k:02d}" for k in range(N_ITEMS)]
        assert pages == [(1, 10), (2, 20)]  # the third page is the last
        stored = cat.search(Query("s2"))
        assert len(stored) == N_ITEMS
        item = cat.get_item("s2", "S2B_T03")
        assert item.assets["red"].href == "https://sentinel-cogs.example/S2B_T03/red.tif"
        assert item.assets["red"].extra_fields["raster:bands"][0]["offset"] == -0.1
        assert not state_path(tmp_path, _search(api), "s2").exists()
        again = ingest_search(cat, _search(api), collection="s2", data_dir=tmp_path)
        assert again.added == [] and len(again.skipped) == N_ITEMS


def test_interrupted_ingest_resumes_from_the_next_page(api, tmp_path):
    def stop_after_first(n, added):
        raise KeyboardInterrupt  # Ctrl-C once the first page is committed

    url = _search(api)
    with SQLiteCatalog(tmp_path / "c.sqlite") as cat:
        with pytest.raises(KeyboardInterrupt):
            ingest_search(cat, url, collection="s2", data_dir=tmp_path, on_page=stop_after_first)
        assert len(cat.search(Query("s2"))) == 10
        state = json.loads(state_path(tmp_path, url, "s2").read_text())
        assert state["pages"] == 1 and state["next"]["href"]
        report = ingest_search(cat, url, collection="s2", data_dir=tmp_path)
        # page 1 was not fetched again: nothing "already present", the 15 others added
        assert len(report.added) == N_ITEMS - 10 and report.skipped == []
        assert len(cat.search(Query("s2"))) == N_ITEMS
        assert not state_path(tmp_path, url, "s2").exists()


def test_api_failures_name_the_host(api, tmp_path):
    port = free_port()  # nothing listens there
    with SQLiteCatalog(tmp_path / "c.sqlite") as cat:
        with pytest.raises(IngestError, match=rf"STAC API at 127.0.0.1:{port} failed on page "
                                              r"1 .*run the same command again"):
            ingest_search(cat, f"http://127.0.0.1:{port}/search", collection="s2",
                          data_dir=tmp_path)
        with pytest.raises(IngestError, match=r"failed on page 1 .*HTTP 404"):
            ingest_search(cat, f"{api}/no-such-endpoint", collection="s2", data_dir=tmp_path)
        with pytest.raises(IngestError, match="not a STAC ItemCollection"):
            ingest_search(cat, f"{api}/collections", collection="s2", data_dir=tmp_path)
        with pytest.raises(InvalidInput, match="not a STAC API URL"):
            ingest_search(cat, "ftp://host/search", collection="s2", data_dir=tmp_path)


def test_cli_ingests_a_search_url(api, tmp_path, capsys):
    db = tmp_path / "c.sqlite"
    code = main(["ingest", _search(api), "--collection", "s2", "--catalog", str(db),
                 "--data-dir", str(tmp_path)])
    assert code == 0
    assert f"added {N_ITEMS}" in capsys.readouterr().out
    code = main(["ingest", _search(api), "extra.tif", "--collection", "s2", "--catalog",
                 str(db), "--data-dir", str(tmp_path)])
    assert code != 0
    assert "ingested alone" in capsys.readouterr().err
