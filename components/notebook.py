"""``Map``: the dashboard's components driven from code (a notebook or a launch script).

::

    m = Map(backend=backend)            # from a notebook: ``from app import Map`` (starts the
    m.add_layer(ndvi, name="NDVI")      # tile service in the background)
    m.split(before, after)
    m.add_video("out.mp4")              # an export_video file, played over its bounds
    m.zoom_to_extent(place("Munich"))
    m                                   # renders inline: tabs, map, layer list, legends

The same Shell (tabs, map, layer list, legend) as the served page: a chain added here is
one more named tile layer of the session's map, with its legend under the map.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import panel as pn
import param

from components.backend import Backend
from components.shell import Shell
from components.split import SplitView
from components.state import AppState
from components.tilemath import WORLD, to_lonlat, to_mercator
from components.videolayer import VideoLayer
from engine.chain import Chain
from engine.errors import InvalidInput
from engine.export_html import legend_of


def legend_html(name: str, legend: dict[str, Any] | None) -> str:
    """HTML of an ``engine.export_html.legend_of`` legend, captioned with the layer name."""
    if legend is None:
        return ""
    head = f'<div style="font-weight:600">{html.escape(name)}</div>'
    if legend["kind"] == "colorbar":
        ticks = "".join(f"<span>{html.escape(t)}</span>" for t in legend["ticks"])
        return (
            f'<div class="eox-colorbar" style="width:260px;font:12px sans-serif">{head}'
            f'<div style="margin-bottom:2px">{html.escape(legend["title"])}</div>'
            f'<div style="height:12px;border-radius:2px;background:linear-gradient(to right, '
            f'{", ".join(legend["colors"])})"></div>'
            f'<div style="display:flex;justify-content:space-between">{ticks}</div></div>')
    swatches = "".join(
        f'<span style="margin-right:8px"><i style="display:inline-block;width:10px;'
        f'height:10px;margin-right:3px;background:{b["color"]}"></i>'
        f'{html.escape(b["label"])}</span>' for b in legend["bands"])
    return f'<div style="font:12px sans-serif">{head}{swatches}</div>'


def view_box(lon: float, lat: float, zoom: float) -> tuple[float, float, float, float]:
    """W, S, E, N of zero height that the map shows at exactly zoom ``zoom`` around lon/lat."""
    if not (-180 <= lon <= 180 and -85 <= lat <= 85 and 0 <= zoom <= 24):
        raise InvalidInput(f"zoom_to: lon {lon}, lat {lat}, zoom {zoom} out of range "
                           "(-180..180, -85..85, 0..24)")
    cx, _ = to_mercator(np.array(lon), np.array(lat))
    half = WORLD / 2**zoom / 2
    west, east = to_lonlat(np.array([cx - half, cx + half]), np.array([0.0, 0.0]))[0]
    return (float(west), float(lat), float(east), float(lat))


def _extent(value: Any) -> tuple[float, float, float, float]:
    """W, S, E, N from a bbox, a gazetteer place (``.bbox``), or a point (lon, lat)."""
    bbox = getattr(value, "bbox", value)
    if bbox is None and hasattr(value, "lon"):
        bbox = (value.lon, value.lat)
    try:
        box = tuple(float(v) for v in bbox)
    except (TypeError, ValueError):
        raise InvalidInput(f"zoom_to_extent: expected (W, S, E, N), (lon, lat), a place or a "
                           f"chain, got {value!r}") from None
    if len(box) == 2:  # a point: a few kilometres around it
        d = 0.05
        box = (box[0] - d, box[1] - d / 2, box[0] + d, box[1] + d / 2)
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise InvalidInput(f"zoom_to_extent: expected 4 numbers W, S, E, N, got {value!r}")
    return box  # type: ignore[return-value]


class Map(pn.viewable.Viewer):
    """The dashboard (tabs, map, layers, legends) with a programmatic API for notebooks.

    Args:
        backend: engine handles; its ``api_base`` must be an absolute URL of a running tile
            service when shown outside the served app (``app.Map`` takes care of that).
        sidebar: show the dashboard's tabs next to the map.
        height: height of the map area in pixels.
    """

    backend = param.ClassSelector(class_=Backend, doc="Engine handles and tile URL base.")
    sidebar = param.Boolean(True, doc="Show the tabs (Search, Display, ...) beside the map.")
    height = param.Integer(620, bounds=(200, None), doc="Height of the map area in pixels.")

    def __init__(self, *, shell: Shell | None = None, **params: Any) -> None:
        super().__init__(**params)
        if self.backend is None and shell is None:
            raise InvalidInput("Map needs backend=...; in a notebook use `from app import Map`, "
                               "which starts the tile service in the background")
        #: The dashboard pieces (given: a served session's; else new ones over ``backend``).
        self.shell = shell if shell is not None else Shell(state=AppState(backend=self.backend))
        self.state = self.shell.state
        self.backend = self.state.backend
        #: Chains added with add_layer, by layer name.
        self.layers: dict[str, Chain] = {}
        self.split_view: SplitView | None = None
        #: Videos added with add_video, by layer name.
        self.videos: dict[str, VideoLayer] = {}
        # a zero-height spacer: Bokeh warns about empty layouts
        self._legends = pn.Column(pn.Spacer(height=0), sizing_mode="stretch_width",
                                  name="eox-layer-legends")
        self._split_area = pn.Column(pn.Spacer(height=0), sizing_mode="stretch_width")
        self._video_area = pn.Column(pn.Spacer(height=0), sizing_mode="stretch_width",
                                     name="eox-video-players")
        self._zoomed = False

    # -- layers -------------------------------------------------------------------------
    def add_layer(self, chain: Chain, *, name: str | None = None) -> Map:
        """Show ``chain`` as a named tile layer on top (re-adding a name replaces it).

        The first layer also zooms the map to its data unless a zoom was asked for.
        """
        if not isinstance(chain, Chain):
            raise InvalidInput(f"add_layer takes a chain (coll.process()...), got "
                               f"{type(chain).__name__}")
        name = name or f"{chain.source.collection} {chain.id[:6]}"
        url = self.backend.register(chain)
        self.shell.map.add_tile_layer(name, url)
        self.layers[name] = chain
        self._legends.objects = [
            pn.pane.HTML(legend_html(n, legend_of(c)), margin=(4, 10))
            for n, c in self.layers.items()]
        if not self._zoomed:
            self.zoom_to_extent(chain)
        return self

    def add_video(self, source: str | Path | bytes, bounds: Any = None, *,
                  name: str | None = None, fps: float | None = None,
                  opacity: float = 1.0) -> Map:
        """Lay an MP4/GIF written by ``export_video`` on the map over ``bounds`` (W, S, E, N,
        WGS84; the file's own metadata when None) and play it; its player shows under the
        map. Limits: 200 frames, 1024 px a side (every frame goes to the browser).

        The first layer also zooms the map to the video unless a zoom was asked for.
        """
        layer = self.shell.map.add_video(source, bounds, name=name, fps=fps, opacity=opacity)
        self.videos = {n: v for n, v in self.videos.items() if not v.removed}
        self.videos[layer.name] = layer
        self._video_area.objects = [pn.Spacer(height=0), *self.videos.values()]
        if not self._zoomed:
            self._zoom_box(layer.bounds, user=False)
        return self

    def split(self, left: Chain, right: Chain, *, names: tuple[str, str] | None = None,
              mode: str = "Side by side") -> Map:
        """Two chains side by side (or swiped) on linked maps, above the main map."""
        labels = names or (f"{left.source.collection} {left.id[:6]}",
                           f"{right.source.collection} {right.id[:6]}")
        view = self.state.view_request or self.state.viewport
        self.split_view = SplitView(backend=self.backend, left=left, right=right,
                                    left_label=labels[0], right_label=labels[1], mode=mode,
                                    view=view, height=max(200, self.height - 100))
        self._split_area.objects = [self.split_view]
        if view is None:
            self._zoom_box(self._bounds(left), user=False)
        return self

    # -- view -------------------------------------------------------------------------
    def zoom_to_extent(self, extent: Any) -> Map:
        """Show a bbox (W, S, E, N), a gazetteer place, a point (lon, lat) or a chain's data."""
        user = not isinstance(extent, Chain)
        box = self._bounds(extent) if isinstance(extent, Chain) else _extent(extent)
        self._zoom_box(box, user=user)
        return self

    def zoom_to(self, lon: float, lat: float, zoom: float) -> Map:
        """Centre the map on lon/lat at Web Mercator zoom ``zoom``."""
        self._zoom_box(view_box(float(lon), float(lat), float(zoom)), user=True)
        return self

    def _bounds(self, chain: Chain) -> tuple[float, float, float, float]:
        w, s, e, n = self.backend.renderer.info(chain).bounds
        return (float(w), float(s), float(e), float(n))

    def _zoom_box(self, box: tuple[float, float, float, float], *, user: bool) -> None:
        self._zoomed = self._zoomed or user
        self.state.view_request = tuple(box)
        if self.split_view is not None:
            self.split_view.show(box)

    def hv(self) -> Any:
        """The layers added with ``add_layer`` as a HoloViews overlay of ``gv.WMTS``
        elements (first added at the bottom) from this map's tile service, to compose with
        other HoloViews/GeoViews elements (``m.hv() * coll.footprints()``)."""
        import holoviews as hv

        from engine.hvelements import chain_tiles

        base = self.backend.api_base
        if not base.startswith(("http://", "https://")):
            raise InvalidInput("Map.hv() needs the tile service's absolute URL (the backend's "
                               f"api_base is {base!r}); use `from app import Map`")
        return hv.Overlay([chain_tiles(chain, name=name, service_url=base)
                           for name, chain in self.layers.items()])

    # -- display ----------------------------------------------------------------------
    def main(self) -> pn.Column:
        """The map area: split maps (if any), the map, layer list and legends."""
        main = self.shell.main()
        main.insert(0, self._split_area)
        main.append(self._video_area)
        main.append(self._legends)
        return main

    def embed(self) -> pn.Column:
        """Map, layer legends and legend only (``?embed=true``)."""
        page = self.shell.embed()
        page.append(self._video_area)
        page.append(self._legends)
        return page

    def template(self) -> pn.template.BaseTemplate:
        """The page served by ``launch()``: the dashboard template with this map area."""
        template = self.shell.template()
        template.main.objects = [self.main()]
        return template

    def __panel__(self) -> pn.viewable.Viewable:
        main = self.main()  # stretches both ways, down to min_height in a notebook cell
        main.min_height = self.height
        if not self.sidebar:
            return main
        side = self.shell.sidebar()
        side.width, side.sizing_mode = 440, "fixed"
        return pn.Row(side, main, sizing_mode="stretch_both", min_height=self.height)


__all__ = ["Map", "legend_html", "view_box"]
