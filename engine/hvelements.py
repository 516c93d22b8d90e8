"""HoloViews/GeoViews elements of chains and collections, to compose with ``*`` and ``+``.

::

    import geoviews as gv
    ndvi.hv() * coll.footprints()             # tiles from the tile service + scene outlines
    ndvi.hv() + ndvi.hv_legend()              # the layer beside its legend

GeoViews and HoloViews are imported when a function here is called (they take seconds to
import and the tile service never needs them). Tiles come from a running tile service:
``service_url`` or the default of ``engine.config.default_service_url`` (``EOX_SERVICE_URL``,
the service a notebook ``Map`` started, or ``eoexplorer serve``'s address). No
``gv.feature`` (it downloads Natural Earth).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import InvalidInput

if TYPE_CHECKING:
    from engine.chain import Chain
    from engine.collection import Collection

#: Scene properties shown as hover columns of :func:`footprints` (``to_dataframe`` names).
FOOTPRINT_COLUMNS: tuple[str, ...] = ("id", "Date", "Platform", "Tile", "Cloud %")


def tiles_url(chain: Chain, *, service_url: str | None = None, register: bool = True,
              api_key: str | None = None, timeout: float = 30.0) -> tuple[str, dict[str, Any]]:
    """The chain's XYZ URL (``{Z}/{X}/{Y}``) on the tile service, and its TileJSON.

    Registers the chain there first (``register``), so the service knows its id.
    """
    from engine.config import default_service_url
    from engine.export_html import register_with_service

    base = (service_url or default_service_url()).rstrip("/").removesuffix("/api")
    if not base.startswith(("http://", "https://")):
        raise InvalidInput(f"service_url must be an http(s) URL, got {base!r}")
    info = register_with_service(chain, base, register=register, api_key=api_key,
                                 timeout=timeout)
    return f"{base}/api/chains/{chain.id}/tiles/{{Z}}/{{X}}/{{Y}}.png", info


def chain_tiles(chain: Chain, *, name: str | None = None, service_url: str | None = None,
                **options: Any) -> Any:
    """A ``gv.WMTS`` element of the chain's tiles, labelled with ``name`` (default: the
    legend's title), spanning the data's bounds. ``options``: see :func:`tiles_url`."""
    import geoviews as gv

    from engine.export_html import legend_of

    url, info = tiles_url(chain, service_url=service_url, **options)
    legend = legend_of(chain, band_names=list(info.get("bands") or []) or None)
    label = name or (legend["title"] if legend else chain.source.collection)
    w, s, e, n = (float(v) for v in info["bounds"])
    return gv.WMTS(url, name=f"eox-{chain.id[:12]}", label=label,
                   extents=(w, s, e, n)).opts(global_extent=False)


def chain_legend(chain: Chain) -> Any:
    """The chain's legend as a HoloViews element: a colour ramp with the stretch's values
    on its axis (``hv.Image``), or the band names of an RGB/band display (``hv.Table``)."""
    import holoviews as hv
    import numpy as np

    from engine.export_html import legend_of

    legend = legend_of(chain)
    if legend is None:
        raise InvalidInput("this chain's display has no legend (no bands to name)")
    if legend["kind"] == "colorbar":
        ramp = np.linspace(0.0, 1.0, 256)[None, :]
        ticks = [(i / (len(legend["ticks"]) - 1), t) for i, t in enumerate(legend["ticks"]) if t]
        return hv.Image(ramp, bounds=(0, 0, 1, 1), kdims=["value", "legend"],
                        label=legend["title"]).opts(
            cmap=legend["colors"], xticks=ticks, yaxis=None, height=70, width=320,
            toolbar=None, title=legend["title"])
    rows = [(b["label"], b["color"]) for b in legend["bands"]]
    return hv.Table(rows, kdims=["band"], vdims=["colour"], label=legend["title"])


def footprints(collection: Collection) -> Any:
    """A ``gv.Polygons`` of the collection's scene outlines (WGS84), one per item, with
    :data:`FOOTPRINT_COLUMNS` as value dimensions (hover columns)."""
    import geoviews as gv
    import pandas as pd
    from shapely.geometry import shape

    from engine.collection import items_dataframe

    items = collection.items()
    frame = items_dataframe(items)
    rows = []
    for item, (_, row) in zip(items, frame.iterrows(), strict=True):
        if item.geometry is None:
            continue
        values = {col: row[col] for col in FOOTPRINT_COLUMNS}
        when = values["Date"]
        values["Date"] = "" if pd.isna(when) else pd.Timestamp(when).isoformat()
        rows.append({"geometry": shape(item.geometry), **values})
    vdims = list(FOOTPRINT_COLUMNS)
    return gv.Polygons(rows, vdims=vdims, label=collection.name).opts(
        tools=["hover"], fill_alpha=0.1, line_width=1.5)
