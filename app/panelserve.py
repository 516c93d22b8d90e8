"""The dashboard under Panel's own server: ``panel serve app/dashboard.py``.

Panel's flags then apply as Panel users know them (``--port``, ``--prefix``,
``--allow-websocket-origin``, ``--oauth-*``, ``--basic-auth``, ``--num-procs``). Panel's
Tornado server cannot host the tile service (an ASGI app), so the page fetches tiles from
the service at ``EOX_SERVICE_URL`` (an ``eoexplorer tiles`` over the same catalog and data
dir), or, when that is unset, from one this process starts on a free loopback port on the
first session (as the notebook ``Map`` does; one per process with ``--num-procs``). Tile
URLs are then absolute, so a prefix or proxy in front of Panel does not touch them; the
service answers cross-origin GETs (``EOX_CORS_ORIGINS``, default ``*``).
"""

from __future__ import annotations

from typing import Any

from app.settings import Settings


def served_app(settings: Settings | None = None) -> Any:
    """One session's page for ``panel serve`` (settings from the ``EOX_`` environment)."""
    from app.create import served_page
    from app.launcher import background_backend
    from app.server import deliver_changes_after_pull

    settings = settings or Settings()
    deliver_changes_after_pull()  # Bokeh's session, as under `eoexplorer serve` (issue 5)
    backend = background_backend(settings, service_url=settings.service_url)
    return served_page(settings, backend=backend)
