"""`eoexplorer serve`: the dashboard and the tile service on one port.

The tile service is a FastAPI app; the Panel dashboard is added to it with
``panel.io.fastapi.add_applications`` (bokeh-fastapi), and uvicorn serves both, so the
browser fetches tiles from the page's own origin (``api/...`` relative URLs).
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from app.settings import Settings

log = logging.getLogger(__name__)


def _write(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def serialize_websocket_writes() -> None:
    """Send each Bokeh message's websocket frames together (once per process).

    bokeh-fastapi's ``WSHandler.send_message`` writes a message as 3+ frames with no lock
    (Bokeh's tornado handler has one); Panel writes patches from its own tasks while the
    receive loop writes replies, so frames of two messages interleave, the browser drops
    them, and later patches refer to models it never got ("reference pXXXX isn't known":
    tabs opened on a fresh page stayed empty).
    """
    import asyncio

    from bokeh_fastapi.handler import WSHandler

    if getattr(WSHandler, "_eox_serialized", False):
        return
    send = WSHandler.send_message

    async def send_message(self: Any, message: Any) -> int:
        lock = self.__dict__.get("_eox_send_lock")
        if lock is None:  # not named write_lock: Panel reads tornado internals of that
            lock = self.__dict__["_eox_send_lock"] = asyncio.Lock()
        async with lock:
            return await send(self, message)

    WSHandler.send_message = send_message
    WSHandler._eox_serialized = True


def build_asgi(settings: Settings, *, view: Any = None) -> Any:
    """The FastAPI app serving the tile service under /api and the dashboard at /.

    ``view`` (``app.config.View``): layers and centre/zoom every new session opens on.
    """
    from panel.io.fastapi import add_applications

    from app.create import create_app, load_extensions
    from app.origins import WebsocketOriginGuard
    from app.state import resources, warm_first_view

    load_extensions()
    serialize_websocket_writes()
    res = resources(settings)
    service = res.service
    threading.Thread(target=warm_first_view, args=(res,), name="eox-first-view",
                     daemon=True).start()
    origins = [f"{h}:{settings.port}" for h in ("localhost", "127.0.0.1", settings.address)]
    origins += list(settings.allow_websocket_origin)

    def page() -> Any:
        return create_app(settings, view=view)

    # bokeh-fastapi takes websocket_origin but does not check it: this does
    service.add_middleware(WebsocketOriginGuard, allowed=sorted(set(origins)))

    add_applications(
        {"/": page},
        app=service,
        title="EO Explorer",
        websocket_origin=sorted(set(origins)),
    )
    return service


def prepare_demo_data(settings: Settings) -> None:
    """Download and ingest the demo collections unless they are there already."""
    from app.wiring import catalog_from
    from engine.demo import prepare_demo

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    reports = prepare_demo(catalog_from(settings), data_dir=settings.data_dir,
                           progress=sys.stderr.isatty())
    for name, report in reports.items():
        for path, reason in report.failed:
            log.warning("demo %s: could not ingest %s: %s", name, path, reason)


def serve(settings: Settings, *, demo: bool = False, view: Any = None) -> int:
    """Prepare (optionally) the demo data, then serve until interrupted (``view``: what
    sessions open on, from a campaign file)."""
    import uvicorn

    if demo:
        prepare_demo_data(settings)
    app = build_asgi(settings, view=view)
    base = f"http://{settings.address}:{settings.port}{settings.prefix}"
    _write(f"EO Explorer is serving on {base}/")
    _write(f"  API: {base}/api/collections   OpenAPI: {base}/openapi.json   health: {base}/healthz")
    # The prefix is the FastAPI app's root_path: paths under it route with it stripped (a
    # proxy that keeps /eox) and paths without it route as they are (one that strips it).
    # Not uvicorn's root_path, which would prepend it to every path.
    uvicorn.run(app, host=settings.address, port=settings.port, log_level="warning")
    return 0
