"""Campaign files and launch() keywords: validation messages, layers, `serve --config`."""

from __future__ import annotations

import json

import pytest

from app import cli
from app.config import campaign_from, load_campaign, valid_keys
from app.settings import Settings
from engine.chain import Chain
from engine.errors import InvalidInput

CHAIN = {"source": {"collection": "sentinel-2-l1c", "ids": ["A"], "mosaic": "latest"},
         "steps": [{"name": "bands", "bands": ["B04", "B03", "B02"]},
                   {"name": "scale", "min": [0], "max": [3000]}]}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for key in Settings.model_fields:
        monkeypatch.delenv(f"EOX_{key.upper()}", raising=False)


def test_unknown_key_names_it_suggests_and_lists_valid_keys():
    with pytest.raises(InvalidInput) as err:
        campaign_from({"prot": 5006}, source="campaign.toml")
    text = str(err.value)
    assert "campaign.toml: unknown key 'prot' (did you mean 'port'?)" in text
    assert set(err.value.choices) == set(valid_keys())
    assert {"port", "catalog", "center", "zoom", "layers"} <= set(err.value.choices)


@pytest.mark.parametrize("values, key", [
    ({"port": "http"}, "port"),
    ({"zoom": "far", "center": [1, 2]}, "zoom"),
    ({"zoom": 40, "center": [1, 2]}, "zoom"),
    ({"center": [500, 2], "zoom": 3}, "center"),
    ({"tile_cache_mb": -1}, "tile_cache_mb"),
])
def test_bad_values_name_the_key(values, key):
    with pytest.raises(InvalidInput, match=f"invalid value for '{key}") as err:
        campaign_from(values, source="launch()")
    assert "port" in err.value.choices


def test_center_needs_zoom():
    with pytest.raises(InvalidInput, match="'center' and 'zoom' together"):
        campaign_from({"center": (11.5, 48.1)})


def test_campaign_file_with_layers(tmp_path):
    (tmp_path / "chains").mkdir()
    (tmp_path / "chains" / "tc.json").write_text(json.dumps(CHAIN))
    inline = {**CHAIN, "steps": [{"name": "expression", "expression": "B08-B04"},
                                 {"name": "scale", "min": [-1], "max": [1]}]}
    lines = ['catalog = "cat/catalog.sqlite"', "port = 5099", "center = [11.57, 48.14]",
             "zoom = 9.5", 'title = "Campaign"', "",
             "[[layers]]", 'name = "True colour"', 'chain = "chains/tc.json"', "",
             "[[layers]]", 'name = "Index"', f"chain = '{json.dumps(inline)}'"]
    path = tmp_path / "campaign.toml"
    path.write_text("\n".join(lines))
    campaign = load_campaign(path)
    assert campaign.settings.port == 5099
    assert campaign.settings.catalog == str(tmp_path / "cat" / "catalog.sqlite")  # file-relative
    view = campaign.view
    assert view.center == (11.57, 48.14) and view.zoom == 9.5 and view.title == "Campaign"
    assert [lay.name for lay in view.layers] == ["True colour", "Index"]
    assert view.layers[0].chain == Chain.from_json(CHAIN)
    assert view.layers[1].chain.steps[0].expression == "B08-B04"
    # command-line options win over the file
    assert load_campaign(path, overrides={"port": 6001}).settings.port == 6001


def test_campaign_file_errors(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("port = \n")
    with pytest.raises(InvalidInput, match="c.toml: not valid TOML"):
        load_campaign(path)
    path.write_text('[[layers]]\nname = "x"\nchain = "missing.json"\n')
    with pytest.raises(InvalidInput, match="cannot read the chain file .*missing.json"):
        load_campaign(path)
    path.write_text('[[layers]]\nname = "x"\ncolour = "red"\nchain = "a.json"\n')
    with pytest.raises(InvalidInput, match=r"layers\[0\].*unknown \['colour'\]"):
        load_campaign(path)
    path.write_text('[[layers]]\nchain = { source = { collection = "s" }, steps = 3 }\n')
    with pytest.raises(InvalidInput, match=r"layers\[0\]: .*steps must be a list"):
        load_campaign(path)
    with pytest.raises(InvalidInput, match="cannot read the campaign file"):
        load_campaign(tmp_path / "absent.toml")


def test_layers_forms():
    chain = Chain.from_json(CHAIN)
    for value in ([chain], [("tc", chain)], {"tc": chain}, [{"name": "tc", "chain": CHAIN}]):
        layers = campaign_from({"layers": value}).view.layers
        assert len(layers) == 1 and layers[0].chain == chain
    with pytest.raises(InvalidInput, match="'layers' must be a list"):
        campaign_from({"layers": chain})


def test_serve_config_passes_settings_and_view(tmp_path, monkeypatch, capsys):
    path = tmp_path / "campaign.toml"
    path.write_text('port = 5123\ncenter = [11.5, 48.1]\nzoom = 8\n')
    seen = {}

    def fake_serve(settings, *, demo=False, view=None):
        seen.update(settings=settings, view=view, demo=demo)
        return 0

    monkeypatch.setattr("app.server.serve", fake_serve)
    assert cli.main(["serve", "--config", str(path), "--address", "127.0.0.2"]) == 0
    assert seen["settings"].port == 5123 and seen["settings"].address == "127.0.0.2"
    assert seen["view"].center == (11.5, 48.1) and seen["view"].zoom == 8

    path.write_text("porte = 1\n")
    assert cli.main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'porte' (did you mean 'port'?)" in err and "Valid choices" in err
