"""HoloViews/GeoViews elements: ``chain.hv()`` (gv.WMTS of the chain's tiles, served),
``chain.hv_legend()``, ``Collection.footprints()`` (gv.Polygons with hover columns),
``Map.hv()``, and hvplot on profiles and ``compute()`` results, on the demo data."""

from __future__ import annotations

import geoviews as gv
import holoviews as hv
import pytest
from test_notebook import _tile_with_data, env  # noqa: F401  (fixture)

from engine.errors import InvalidInput

COLL = "sentinel-2-l3a"


@pytest.fixture(scope="module")
def scenes(env):  # noqa: F811
    from engine import Collection

    return Collection(COLL).filter_point(1.229, 43.649).sort("datetime", ascending=False)


def _ndvi(scenes, item_id):
    from engine import Collection

    return (Collection(COLL).ids(item_id).process(mosaic="latest")
            .expression("(B08-B04)/(B08+B04)").scale(-0.2, 0.9).colormap("RdYlGn"))


def test_chain_hv_is_a_wmts_of_served_tiles_with_a_legend(scenes):
    from app import Map

    m = Map()  # starts the tile service in the background: chain.hv() fetches from it
    first = scenes.first()
    ndvi = _ndvi(scenes, first.id)
    element = ndvi.hv()
    assert isinstance(element, gv.WMTS) and element.label == "(B08-B04)/(B08+B04)"
    assert element.data.startswith(m.backend.api_base + f"/chains/{ndvi.id}/tiles/")
    rgba = _tile_with_data(element.data, first.bbox)
    assert (rgba[..., 3] > 0).mean() > 0.2
    legend = ndvi.hv_legend()
    assert isinstance(legend, hv.Image) and legend.label == "(B08-B04)/(B08+B04)"
    assert [t for _, t in legend.opts.get().kwargs["xticks"]] == ["-0.2", "0.35", "0.9"]
    rgb = scenes.ids(first.id).process().bands("B04", "B03", "B02")
    table = rgb.hv_legend()
    assert isinstance(table, hv.Table)
    assert list(table.dimension_values("band")) == ["R B04", "G B03", "B B02"]
    assert len(hv.render(ndvi.hv() * scenes.footprints() + legend).children) == 2
    m.add_layer(rgb, name="RGB").add_layer(ndvi, name="NDVI")
    overlay = m.hv()
    assert [e.label for e in overlay] == ["RGB", "NDVI"]
    assert all(isinstance(e, gv.WMTS) for e in overlay)
    hv.render(overlay * scenes.footprints())


def test_hv_refuses_a_service_url_that_is_not_http(scenes):
    with pytest.raises(InvalidInput, match="http"):
        _ndvi(scenes, scenes.first().id).hv(service_url="ftp://x")


def test_footprints_carry_scene_properties_as_hover_columns(scenes):
    fp = scenes.footprints()
    table = scenes.to_dataframe()
    assert isinstance(fp, gv.Polygons)
    assert [d.name for d in fp.vdims] == ["id", "Date", "Platform", "Tile", "Cloud %"]
    assert len(fp.data) == len(table) > 0
    assert sorted(fp.dimension_values("id", expanded=False)) == sorted(table["id"])
    assert "hover" in fp.opts.get().kwargs["tools"]
    lon_lo, lon_hi = fp.range(0)
    lat_lo, lat_hi = fp.range(1)
    assert lon_lo <= 1.229 <= lon_hi and lat_lo <= 43.649 <= lat_hi


def test_profiles_and_compute_plot_with_hvplot(scenes):
    import hvplot.pandas  # registers DataFrame.hvplot
    import hvplot.xarray  # noqa: F401  (registers DataArray.hvplot)

    df = scenes.limit(4).profile(1.229, 43.649, expression="(B08-B04)/(B08+B04)",
                                 mask_clouds=False)
    curve = df.hvplot.line(x="date", y="value")
    assert isinstance(curve, hv.Curve) and len(curve) == len(df) == 4
    values = scenes.ids(scenes.first().id).process(mosaic="latest").expression(
        "(B08-B04)/(B08+B04)")
    grid = values.compute(bbox=(1.22, 43.64, 1.24, 43.66))
    image = grid.isel(band=0).hvplot.image(x="x", y="y")
    assert isinstance(image, hv.Image)
    assert image.dimension_values(2).size == grid.shape[1] * grid.shape[2]
    hv.render(image + curve)
