"""Exports tab: a standalone HTML page of the view, the share link, an iframe snippet and the
Python code that rebuilds the displayed chain.

The link is the page's own URL, which ``app.urlstate`` keeps in step with the view (centre,
zoom, scenes, and the chain id, whose JSON holds bands and stretch); so this tab only reads
``pn.state.location`` and never builds URLs from state itself.
"""

from __future__ import annotations

import html
import io
import logging
import math
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import numpy as np
import panel as pn
import param
from panel.io.location import Location

from components.icons import icon
from components.layerspec import FUNCTION_LAYER
from components.state import AppState
from components.tilemath import WORLD, to_lonlat, to_mercator
from engine.codegen import chain_code
from engine.errors import EOXError, InvalidInput
from engine.export_html import render_html
from engine.security.redact import shown_path

log = logging.getLogger(__name__)

_COPY_JS = """
const text = src.value;
if (navigator.clipboard && window.isSecureContext) {
  navigator.clipboard.writeText(text);
} else {
  const area = document.createElement("textarea");
  area.value = text; document.body.appendChild(area); area.select();
  document.execCommand("copy"); area.remove();
}
"""


def embed_url(link: str) -> str:
    """``link`` with ``embed=true``: the map and legend only, for an iframe."""
    parts = urlsplit(link)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "embed"]
    query.append(("embed", "true"))
    return urlunsplit(parts._replace(query=urlencode(query, safe=",.-:")))


def iframe_snippet(link: str, *, width: int = 900, height: int = 720) -> str:
    """An ``<iframe>`` showing the embed view of ``link``."""
    src = html.escape(embed_url(link), quote=True)
    return (f'<iframe src="{src}" width="{width}" height="{height}" style="border:0" '
            f'loading="lazy" title="EO Explorer map" allowfullscreen></iframe>')


def view_of_viewport(viewport: tuple[float, float, float, float]) -> tuple[tuple[float, float],
                                                                           float]:
    """(lon, lat) centre and Web Mercator zoom of a W, S, E, N viewport."""
    w, s, e, n = viewport
    (x0, x1), (y0, y1) = to_mercator(np.array([w, e]), np.array([s, n]))
    lon, lat = to_lonlat((x0 + x1) / 2, (y0 + y1) / 2)
    zoom = math.log2(WORLD / max(float(x1 - x0), 1e-3))
    return (round(float(lon), 5), round(float(lat), 5)), round(zoom, 2)


class ExportsPanel(pn.viewable.Viewer):
    """The Exports tab of a session: export HTML, copy link, embed snippet, show code."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")
    link = param.String("", doc="URL reproducing the view (the page's own, kept in sync).")
    code = param.String("", doc="Python that rebuilds the displayed chain.")
    location = param.ClassSelector(class_=Location, default=None, allow_None=True,
                                   doc="The page's location (default: the session's).")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._link = pn.widgets.TextInput(name="Link to this view", disabled=True,
                                          sizing_mode="stretch_width")
        self._copy = pn.widgets.Button(name="Copy link", button_type="primary", icon=icon("link"),
                                       description="Copy the URL of this view")
        self._copy.js_on_click(args={"src": self._link}, code=_COPY_JS)
        self._embed = pn.widgets.TextAreaInput(name="Embed in a web page (iframe)", height=90,
                                               disabled=True, sizing_mode="stretch_width")
        self._copy_embed = pn.widgets.Button(name="Copy embed code", button_type="light",
                                             icon=icon("code"))
        self._copy_embed.js_on_click(args={"src": self._embed}, code=_COPY_JS)
        self._download = pn.widgets.FileDownload(
            callback=self._html_file, filename="eoexplorer.html", button_type="primary",
            label="Export standalone HTML", icon=icon("download"), sizing_mode="stretch_width",
            description="One HTML file (map, legend, description) that opens from disk and "
                        "fetches tiles from this server")
        self._show = pn.widgets.Toggle(name="Show code", icon=icon("brand-python"),
                                       button_type="light")
        self._code = pn.widgets.CodeEditor(value="", language="python", readonly=True,
                                           height=260, sizing_mode="stretch_width",
                                           visible=False)
        self._show.param.watch(self._toggle_code, "value")
        if self.location is None:
            self.location = pn.state.location
        if self.location is not None:
            self.location.param.watch(lambda e: self._update_link(), ["search", "href"])
        self._update_link()
        self._link_changed()
        self._update_code()

    # -- link ---------------------------------------------------------------------------
    def page_url(self) -> str:
        """The page's URL as the browser shows it (empty outside a served page)."""
        loc = self.location
        if loc is None or not loc.href:
            return ""
        base = loc.href.split("?", 1)[0].split("#", 1)[0]
        return base + (loc.search or "")

    def _update_link(self) -> None:
        self.link = self.page_url()

    @param.depends("link", watch=True)
    def _link_changed(self) -> None:
        self._link.value = self.link
        self._embed.value = iframe_snippet(self.link) if self.link else ""
        for w in (self._copy, self._copy_embed):
            w.disabled = not self.link

    # -- code ---------------------------------------------------------------------------
    @param.depends("state.chain", "state.viewport", watch=True)
    def _update_code(self) -> None:
        self.code = self.build_code()
        self._code.value = self.code

    def build_code(self) -> str:
        """Python that rebuilds the displayed chain (same id) and shows it on a ``Map``."""
        s = self.state
        if s.chain is None:
            return "# Nothing is displayed yet: select a scene in the Search tab."
        location = s.backend.catalog.location or None
        if location and not str(location).startswith(("http://", "https://")):
            location = str(Path(location).resolve())
        if location and shown_path(str(location)) != str(location):
            # the server's path is hidden (EOX_EXPOSE_PATHS): the code opens the default
            # catalog (EOX_CATALOG), never a made-up ".../catalog.sqlite"
            location = None
        text = chain_code(s.chain, catalog=str(location) if location else None)
        lines = [text.rstrip().rsplit("\n", 1)[0], "",
                 "# show it on a map (in a notebook)", "from app import Map", ""]
        lines.append(f"m = Map(catalog={str(location)!r})" if location else "m = Map()")
        lines.append(f"m.add_layer(chain, name={s.chain.source.collection!r})")
        if s.viewport is not None:
            (lon, lat), zoom = view_of_viewport(s.viewport)
            lines.append(f"m.zoom_to({lon!r}, {lat!r}, {zoom!r})")
        lines += ["m", ""]
        return "\n".join(lines)

    def _toggle_code(self, event: param.parameterized.Event) -> None:
        self._code.visible = bool(event.new)

    # -- standalone HTML ----------------------------------------------------------------
    def tiles_template(self, chain_id: str | None = None) -> str:
        """Absolute XYZ URL ({z}/{x}/{y}) of the displayed chain's tiles (or another's)."""
        s = self.state
        if s.chain is None:
            raise InvalidInput("nothing is displayed: select a scene first")
        rel = s.backend.tile_url(chain_id or s.chain.id)
        rel = rel.replace("{Z}", "{z}").replace("{X}", "{x}").replace("{Y}", "{y}")
        if rel.startswith(("http://", "https://")):
            return rel
        page = self.page_url()
        if not page:
            raise InvalidInput("the page's address is unknown, so the tiles' URL is too: "
                               "export from the served dashboard or give the backend an "
                               "absolute api_base")
        return urljoin(page, rel)

    def html_page(self) -> str:
        """The standalone page of the displayed chain at the current view."""
        s = self.state
        tiles = self.tiles_template()
        info = s.backend.renderer.info(s.chain)
        center = zoom = None
        if s.viewport is not None:
            center, zoom = view_of_viewport(s.viewport)
        return render_html(
            s.chain, tiles=tiles, bounds=info.bounds, minzoom=info.minzoom,
            maxzoom=info.maxzoom, service_url=tiles.split("/api/chains/")[0],
            center=center, zoom=zoom, band_names=info.band_names,
            title=f"EO Explorer: {s.chain.source.collection}",
            overlays=[(FUNCTION_LAYER, self.tiles_template(s.function_layer))]
            if s.function_layer else ())

    def _html_file(self) -> io.BytesIO | None:
        try:
            page = self.html_page()
        except EOXError as exc:
            self.state.fail(exc, "Export HTML")
            return None
        self._download.filename = f"eoexplorer-{self.state.chain.id}.html"
        return io.BytesIO(page.encode("utf-8"))

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown("**Share this view**", margin=(0, 10)),
            self._link, self._copy,
            self._embed, self._copy_embed,
            pn.pane.Markdown("**Standalone page**", margin=(10, 10, 0, 10)),
            self._download,
            pn.pane.Markdown("**Python**", margin=(10, 10, 0, 10)),
            self._show, self._code,
            sizing_mode="stretch_width",
        )


__all__ = ["ExportsPanel", "embed_url", "iframe_snippet", "view_of_viewport"]
