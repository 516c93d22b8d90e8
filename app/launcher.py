"""Scripted launches and notebooks: the dashboard (or the tile service) in a background thread.

::

    from app import launch, Map
    server = launch(catalog=".cache/demo/catalog.sqlite", center=(11.5, 48.1), zoom=9,
                    layers=[("NDVI", ndvi)], show=False)
    server.url; server.stop()

    m = Map(); m.add_layer(ndvi, name="NDVI"); m      # in a notebook

``launch`` validates its keywords like a campaign file (``app.config``): an unknown key or
a bad value raises ``InvalidInput`` naming it and listing the valid keys.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import webbrowser
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

from app.config import Campaign, View, campaign_from
from app.settings import Settings
from components.backend import Backend
from components.notebook import Map as _Map
from components.shell import Shell
from engine.config import note_running_service
from engine.errors import InvalidInput

log = logging.getLogger(__name__)


def _bind(address: str, port: int) -> socket.socket:
    """A listening-ready socket on address:port (port 0: a free one), or InvalidInput."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"cannot listen on {address}:{port}: {exc.strerror}") from None
    return sock


class Server:
    """An ASGI app served by uvicorn in a daemon thread; ``url`` and ``stop()``.

    Use as a context manager to stop it on exit.
    """

    def __init__(self, app: Any, *, sock: socket.socket, path: str = "/",
                 name: str = "eox-server") -> None:
        import uvicorn

        self._sock = sock
        host, self.port = sock.getsockname()[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
        #: Base URL of the page (or the service) served.
        self.url = f"http://{shown}:{self.port}{path}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [sock]}, daemon=True, name=name)

    def start(self, *, timeout: float = 30.0) -> Server:
        """Start serving; returns once the socket accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise InvalidInput(f"the server on {self.url} exited while starting "
                                   "(see the log above)")
            if time.monotonic() > deadline:
                self.stop()
                raise InvalidInput(f"the server on {self.url} did not start within {timeout} s")
            time.sleep(0.02)
        return self

    @property
    def running(self) -> bool:
        """True while the server thread serves."""
        return self._thread.is_alive() and not self._server.should_exit

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop serving, wait for the thread and free the port."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Server {self.url} {'running' if self.running else 'stopped'}>"


# -- sessions ------------------------------------------------------------------------------


def apply_view(shell: Shell, view: View, *, move: bool = True) -> _Map:
    """Add the view's layers to a session's shell; with ``move``, also its centre/zoom/place.

    Returns the ``Map`` over the shell (its template shows the layers' legends).
    """
    m = _Map(shell=shell)
    for layer in view.layers:
        m.add_layer(layer.chain, name=layer.name)
    if move:
        if view.place is not None:
            from engine.gazetteer import place

            m.zoom_to_extent(place(view.place))
        if view.center is not None and view.zoom is not None:
            m.zoom_to(view.center[0], view.center[1], view.zoom)
    if view.title:
        shell.title = view.title
    return m


def launch(
    catalog: str | Path | None = None,
    *,
    center: tuple[float, float] | None = None,
    zoom: float | None = None,
    place: str | None = None,
    layers: Iterable[Any] | dict[str, Any] | None = None,
    title: str | None = None,
    port: int | None = None,
    address: str = "127.0.0.1",
    show: bool = False,
    **options: Any,
) -> Server:
    """Serve the dashboard (and the tile service) from a background thread.

    Args:
        catalog: catalog file or STAC API URL (default: the settings', ``EOX_CATALOG``).
        center: lon, lat new sessions open on (with ``zoom``).
        zoom: Web Mercator zoom level.
        place: a gazetteer place to open on instead of centre/zoom.
        layers: chains shown as named layers: ``[chain, ("name", chain), ...]`` or
            ``{"name": chain}`` (chains, chain JSON dicts or .json file paths).
        title: page title.
        port: port to listen on (None: a free one).
        address: interface to bind.
        show: open the page in the default web browser.
        **options: any other Settings field (``basemap=``, ``data_dir=``...).

    Returns:
        The running :class:`Server` (``.url``, ``.stop()``).
    """
    values: dict[str, Any] = {**options, "address": address}
    for key, value in (("catalog", catalog), ("center", center), ("zoom", zoom),
                       ("place", place), ("layers", layers), ("title", title)):
        if value is not None:
            values[key] = str(value) if key == "catalog" else value
    if port is not None:
        values["port"] = port
    campaign = campaign_from(values, source="launch()")
    return serve_campaign(campaign, port=port or 0, show=show)


def serve_campaign(campaign: Campaign, *, port: int = 0, show: bool = False) -> Server:
    """Serve a validated campaign in the background (``port`` 0: a free one)."""
    from app.server import build_asgi

    settings = campaign.settings
    sock = _bind(settings.address, port)
    settings = settings.model_copy(update={"port": sock.getsockname()[1]})
    try:
        app = build_asgi(settings, view=None if campaign.view.is_empty else campaign.view)
        server = Server(app, sock=sock, path=settings.prefix + "/", name="eox-launch").start()
    except BaseException:
        sock.close()
        raise
    log.info("EO Explorer is serving on %s", server.url)
    if show:
        webbrowser.open(server.url)
    return server


# -- notebooks ------------------------------------------------------------------------------

_services: dict[str, tuple[Server, Backend]] = {}
_services_lock = threading.Lock()


def background_backend(settings: Settings, *, service_url: str | None = None) -> Backend:
    """A Backend whose tile URLs are absolute: ``service_url`` if given (a service over the
    same catalog and data dir, so it reads the chains registered here), else a tile service
    started once per process on a free loopback port."""
    from app.state import backend_over
    from app.wiring import build_service

    key = settings.model_dump_json() + "|" + (service_url or "")
    with _services_lock:
        if key in _services:
            return _services[key][1]
        service = build_service(settings)
        server = None
        if service_url is None:
            server = Server(service, sock=_bind("127.0.0.1", 0), name="eox-tiles").start()
            api = server.url.rstrip("/") + "/api"
            note_running_service(server.url)  # chain.export_html(path) uses it
        else:
            api = service_url.rstrip("/").removesuffix("/api") + "/api"
        backend = backend_over(service, settings, api_base=api)
        _services[key] = (server, backend)  # type: ignore[assignment]
        return backend


def stop_background() -> None:
    """Stop the tile services started for notebooks (tests; a kernel exits without it)."""
    with _services_lock:
        for server, _ in _services.values():
            if server is not None:
                server.stop()
        _services.clear()
        note_running_service(None)


class Map(_Map):
    """The dashboard in a notebook, with the tile service started in the background.

    Args:
        catalog: catalog file or STAC API URL (default: ``EOX_CATALOG`` / the settings').
        service_url: a running tile service over the same catalog to fetch tiles from;
            None starts one in this process.
        **params: ``sidebar``, ``height`` (see ``components.notebook.Map``).
    """

    def __init__(self, catalog: str | Path | None = None, *, service_url: str | None = None,
                 settings: Settings | None = None, **params: Any) -> None:
        from app.config import settings_from
        from app.create import load_extensions

        if settings is None:
            settings = settings_from({"catalog": str(catalog)} if catalog else {},
                                     source="Map()")
        load_extensions()
        super().__init__(backend=background_backend(settings, service_url=service_url),
                         **params)


__all__ = ["Map", "Server", "apply_view", "background_backend", "launch", "serve_campaign",
           "stop_background"]
