"""One self-contained HTML page showing a chain's tiles: pan/zoom map, legend, description.

The page inlines Leaflet (vendored under ``engine/assets/leaflet``, BSD-2-Clause) and its
configuration, so it opens from disk with no CDN; only the tiles come from the tile service
at ``service_url``. Leaflet rather than hand-written canvas tiling: it is small (~150 KB),
battle-tested for XYZ tiles (retina, wrapping, zoom animation, touch) and has no
dependencies, so the file stays one readable page.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.chain import Chain, ColorCustom, Colormap, Expression, Scale
from engine.errors import InvalidInput

#: Version of the vendored Leaflet (engine/assets/leaflet, from `npm pack leaflet@1.9.4`).
LEAFLET_VERSION = "1.9.4"

_ASSETS = resources.files("engine") / "assets"
_SWATCH = {3: ("#e53935", "#43a047", "#1e88e5")}


def _asset(*parts: str) -> str:
    return _ASSETS.joinpath(*parts).read_text(encoding="utf-8")


def _leaflet_css() -> str:
    """Leaflet's CSS with its images inlined as data URIs (the page has no sibling files)."""
    css = _asset("leaflet", "leaflet.css")

    def inline(match: re.Match[str]) -> str:
        data = _ASSETS.joinpath("leaflet", "images", match.group(1)).read_bytes()
        return f"url(data:image/png;base64,{base64.b64encode(data).decode()})"

    return re.sub(r"url\(images/([\w.-]+\.png)\)", inline, css)


def _analytic_names(chain: Chain) -> list[str] | None:
    """Band names before the first visual step (what the legend talks about)."""
    names: list[str] | None = list(chain.read_bands())
    for step in chain.steps:
        if names is None or step.kind == "visual":
            break
        names = step.band_names_out(names)
    return names


def legend_of(chain: Chain, *, band_names: list[str] | None = None) -> dict[str, Any] | None:
    """The legend of a chain's display: a colorbar for a colormapped band, else band names.

    Args:
        chain: the displayed chain.
        band_names: output band names when known (e.g. from TileJSON); read from the chain
            otherwise.

    Returns:
        ``{"kind": "colorbar", "title", "colors", "ticks"}`` or
        ``{"kind": "bands", "title", "bands": [{"label", "color"}]}``; None if nothing to say.
    """
    import matplotlib
    import matplotlib.colors as mcolors

    names = _analytic_names(chain) or band_names or []
    ramp = None
    scale = None
    for step in chain.steps:
        if isinstance(step, Scale):
            scale = step
        elif isinstance(step, Colormap | ColorCustom):
            ramp = step
    if ramp is not None:
        if isinstance(ramp, Colormap):
            cmap = matplotlib.colormaps[ramp.colormap]
            colors = [mcolors.to_hex(cmap(i / 15)) for i in range(16)]
        else:
            colors = [mcolors.to_hex(c) for c in ramp.colors]
            if len(colors) == 1:
                colors = ["#00000000", colors[0]]
        if scale is not None and scale.min is not None and scale.max is not None:
            lo, hi = float(scale.min[0]), float(scale.max[0])
            ticks = [f"{lo:g}", f"{(lo + hi) / 2:g}", f"{hi:g}"]
        elif scale is not None and scale.p is not None:
            ticks = [f"p{scale.p[0]:g}", "", f"p{scale.p[1]:g}"]
        else:
            ticks = ["0", "", "255"]
        exprs = [s.expression for s in chain.steps if isinstance(s, Expression)]
        title = exprs[-1] if exprs else ", ".join(names)
        return {"kind": "colorbar", "title": title, "colors": colors, "ticks": ticks}
    if not names:
        return None
    swatches = _SWATCH.get(len(names), ("#9e9e9e",) * len(names))
    labels = ("R", "G", "B") if len(names) == 3 else ("",) * len(names)
    return {
        "kind": "bands",
        "title": "RGB" if len(names) == 3 else "Bands",
        "bands": [{"label": f"{lab} {n}".strip(), "color": col}
                  for lab, n, col in zip(labels, names, swatches, strict=True)],
    }


def render_html(
    chain: Chain,
    *,
    tiles: str,
    bounds: tuple[float, float, float, float] | list[float],
    minzoom: int = 0,
    maxzoom: int = 22,
    service_url: str = "",
    title: str | None = None,
    center: tuple[float, float] | None = None,
    zoom: float | None = None,
    band_names: list[str] | None = None,
    overlays: Sequence[tuple[str, str]] = (),
) -> str:
    """The page's HTML text, for a chain whose tiles are at the XYZ template ``tiles``.

    Args:
        chain: the chain shown (its description and legend go in the page).
        tiles: absolute XYZ URL template with ``{z}``, ``{x}``, ``{y}``.
        bounds: W, S, E, N (WGS84) of the data; the map opens on them.
        minzoom: lowest zoom the service renders natively.
        maxzoom: highest native zoom; the map magnifies beyond it.
        service_url: shown in the page, for whoever opens the file later.
        title: page title; the chain's description by default.
        center: lon, lat to open on instead of the bounds (with ``zoom``).
        zoom: zoom to open on with ``center``.
        band_names: output band names when known (legend).
        overlays: (name, absolute XYZ template) of layers drawn over the chain's (a user
            function's output), listed in a layer switcher.
    """
    if center is not None and zoom is None:
        raise InvalidInput("export_html: give zoom= together with center=")
    description = chain.describe()
    config = {
        "tiles": tiles,
        "bounds": [float(v) for v in bounds],
        "minzoom": int(minzoom),
        "maxzoom": int(maxzoom),
        "center": [float(v) for v in center] if center is not None else None,
        "zoom": float(zoom) if zoom is not None else None,
        "title": title or f"EO Explorer: {chain.source.collection}",
        "description": description,
        "chain_id": chain.id,
        "chain": json.loads(chain.to_json()),
        "service_url": service_url,
        "exported": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "legend": legend_of(chain, band_names=band_names),
        "overlays": [{"name": str(name), "tiles": str(url)} for name, url in overlays],
    }
    values = {
        "LEAFLET_CSS": _leaflet_css(),
        "LEAFLET_JS": _asset("leaflet", "leaflet.js"),
        "LEAFLET_VERSION": LEAFLET_VERSION,
        "TITLE": html.escape(config["title"]),
        "CONFIG": script_json(config),
        "CSP": html.escape(page_policy(tiles), quote=True),
    }
    # one pass over the template: a value holding "@@CONFIG@@" is never substituted again
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], _asset("export_template.html"))


#: The template's placeholders, ``@@NAME@@``.
_PLACEHOLDER = re.compile(r"@@(LEAFLET_CSS|LEAFLET_JS|LEAFLET_VERSION|TITLE|CONFIG|CSP)@@")


def page_policy(tiles: str) -> str:
    """The page's Content-Security-Policy: its own inline script and styles, images from
    the tile service's origin and data URIs, nothing else (no requests elsewhere, no
    plugins, no forms); a ``<meta>`` policy cannot say frame-ancestors."""
    parts = urlsplit(tiles)
    origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") else ""
    return ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            f"img-src data: {origin}".rstrip() + "; base-uri 'none'; form-action 'none'")
#: Characters that must not appear raw in JSON inside a ``<script>`` element: ``<`` (no
#: ``</script>``, no ``<!--<script>`` that puts the HTML parser in its double-escaped
#: state and swallows the rest of the page), ``>``, ``&`` and the JS line separators.
_SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                  "\u2029": "\\u2029"}


def script_json(value: Any) -> str:
    """JSON text safe inside an HTML ``<script>`` element, whatever its strings hold
    (``JSON.parse`` of the element's text gives ``value`` back)."""
    text = json.dumps(value, ensure_ascii=False)
    return re.sub("[<>&\u2028\u2029]", lambda m: _SCRIPT_UNSAFE[m.group(0)], text)


def register_with_service(chain: Chain, base: str, *, register: bool, api_key: str | None,
                  timeout: float) -> dict[str, Any]:
    """Register ``chain`` on the service (if asked) and read its TileJSON."""
    import httpx

    headers = {"X-API-Key": api_key} if api_key else {}
    try:
        with httpx.Client(base_url=base, timeout=timeout, headers=headers) as client:
            if register:
                r = client.post("/api/chains", content=chain.to_json(),
                                headers={"Content-Type": "application/json"})
                _check(r, "registering the chain")
            r = client.get(f"/api/chains/{chain.id}/tilejson.json")
            _check(r, "reading the chain's TileJSON")
            return r.json()
    except httpx.HTTPError as exc:
        raise InvalidInput(f"export_html: cannot reach the tile service at {base}: {exc}") \
            from None


def _check(response: Any, action: str) -> None:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise InvalidInput(f"export_html: the tile service answered {response.status_code} "
                           f"{action}: {detail}")


def export_html(
    chain: Chain,
    path: str | Path,
    *,
    service_url: str | None = None,
    register: bool = True,
    api_key: str | None = None,
    title: str | None = None,
    center: tuple[float, float] | None = None,
    zoom: float | None = None,
    timeout: float = 30.0,
) -> Path:
    """Write one self-contained HTML page showing ``chain``'s tiles from ``service_url``.

    Args:
        chain: the chain to show.
        path: the .html file written (atomically).
        service_url: base URL of a running tile service (``eoexplorer serve``/``tiles``),
            e.g. ``http://127.0.0.1:5006``; the page fetches tiles from it. None: the
            settings' ``EOX_SERVICE_URL``, else the service this process started (a
            notebook ``Map``), else ``http://127.0.0.1:5006`` (``engine.config``).
        register: POST the chain to the service first (so it knows the chain id).
        api_key: the service's API key, when its writes need one.
        title: page title (default: the collection).
        center: lon, lat to open on (default: the data's bounds), with ``zoom``.
        zoom: zoom to open on.
        timeout: seconds per request to the service.

    Returns:
        The path written.
    """
    if service_url is None:
        from engine.config import default_service_url

        service_url = default_service_url()
    base = service_url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise InvalidInput(f"export_html: service_url must be an http(s) URL, got {service_url!r}")
    base = base.removesuffix("/api")
    info = register_with_service(chain, base, register=register, api_key=api_key, timeout=timeout)
    page = render_html(
        chain,
        tiles=f"{base}/api/chains/{chain.id}/tiles/{{z}}/{{x}}/{{y}}.png",
        bounds=info["bounds"], minzoom=info.get("minzoom", 0), maxzoom=info.get("maxzoom", 22),
        service_url=base, title=title, center=center, zoom=zoom,
        band_names=list(info.get("bands") or []) or None,
    )
    out = Path(path)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


__all__ = ["LEAFLET_VERSION", "export_html", "legend_of", "render_html", "script_json"]
