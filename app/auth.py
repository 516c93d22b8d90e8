"""Access control from Settings: the tile API's policy and the dashboard's login.

``access_policy`` is used by ``app.wiring.build_service``; ``protect_dashboard`` and
``panel_auth_kwargs`` are for the dashboard server (``app/server.py``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from app.settings import Settings
from service.security import ANY_USER, AccessPolicy, BasicAuthMiddleware

log = logging.getLogger(__name__)

#: Per-client limits applied when the server binds a non-loopback address and the
#: settings leave them unset (None).
DEPLOYED_WRITE_PER_MINUTE = 60
DEPLOYED_READ_PER_MINUTE = 3000


def access_policy(settings: Settings) -> AccessPolicy:
    """API keys and rate limits: off on loopback unless set, on by default elsewhere."""
    deployed = not settings.is_loopback
    write = settings.rate_limit_per_minute
    read = settings.tile_rate_limit_per_minute
    if write is None:
        write = DEPLOYED_WRITE_PER_MINUTE if deployed else 0
    if read is None:
        read = DEPLOYED_READ_PER_MINUTE if deployed else 0
    if deployed and not settings.api_keys:
        log.warning("serving on %s without API keys: anyone who can reach it may register "
                    "chains and run functions; set EOX_API_KEYS", settings.address)
    return AccessPolicy(api_keys=tuple(settings.api_keys), read_per_minute=read,
                        write_per_minute=write)


def dashboard_batch_pixels(settings: Settings) -> int:
    """Largest run of the dashboard's Batch tab (pixels x dates).

    Dashboard visitors present no API key, so on a non-loopback address the tab gets the
    limit the API gives keyless callers for the same work (``extract_max_pixels``, as
    POST /api/chains/{id}/extract); the full ``batch_max_pixels`` stays for loopback use
    and for ``eoexplorer run`` on the command line."""
    if settings.is_loopback:
        return settings.batch_max_pixels
    return min(settings.batch_max_pixels, settings.extract_max_pixels)


def dashboard_users(settings: Settings) -> dict[str, str] | None:
    """User -> password from ``basic_auth`` (a password, or a JSON file of users); None: off."""
    value = settings.basic_auth
    if not value:
        return None
    path = Path(value).expanduser()
    if value.endswith(".json") or path.is_file():
        users = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(users, dict) or not users or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in users.items()
        ):
            raise ValueError(f"basic_auth file {path} must be a JSON object {{user: password}}")
        return dict(users)
    return {ANY_USER: value}


def protect_dashboard(app: Any, settings: Settings) -> Any:
    """Add HTTP Basic login to the dashboard pages of ``app`` (a Starlette/FastAPI app that
    serves Panel via bokeh-fastapi) when ``basic_auth`` is set; /api and /healthz stay open.
    Returns ``app``. Call it from ``app/server.py`` after adding the Panel applications."""
    users = dashboard_users(settings)
    if users:
        app.add_middleware(BasicAuthMiddleware, users=users)
    elif not settings.is_loopback:
        log.warning("the dashboard on %s has no login; set EOX_BASIC_AUTH", settings.address)
    return app


def panel_auth_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``pn.serve`` (Panel's Tornado server: basic auth or OAuth)."""
    names = ("basic_auth", "cookie_secret", "oauth_provider", "oauth_key", "oauth_secret",
             "oauth_redirect_uri", "oauth_encryption_key")
    kwargs: dict[str, Any] = {n: getattr(settings, n) for n in names if getattr(settings, n)}
    if settings.oauth_extra_params:
        kwargs["oauth_extra_params"] = dict(settings.oauth_extra_params)
    return kwargs
