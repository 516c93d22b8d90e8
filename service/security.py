"""Access control of the tile service: API keys for writes, per-client rate limits, and an
optional HTTP Basic guard for the dashboard pages served on the same app.

Requests under ``/api/`` fall in three classes (:func:`classify`):

* ``read``: GET/HEAD (tiles, TileJSON, point, chain JSON, search). Never needs a key, so
  tile URLs stay shareable; charged to the (high) read budget.
* ``compute``: requests that only read but cost CPU (POST ``/api/chains/{id}/statistics``,
  GET ``/api/profile``). No key needed; charged to the (low) write budget.
* ``write``: every other POST/PUT/PATCH/DELETE (registering chains, extracts, timelapses,
  batch runs). Needs a key when keys are configured; charged to the write budget.

Keys come as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Budgets are token
buckets per client: the API key when a valid one is given, else the client address (behind
a proxy, run uvicorn with ``--proxy-headers --forwarded-allow-ips`` so that is the real one).
Pure ASGI, so tile responses are not re-buffered; websockets and paths outside ``/api/``
(dashboard, /healthz, /docs) are not limited here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import (
    Forbidden,
    RateLimited,
    ServiceError,
    Unauthorized,
    error_body,
    status_for,
)
from service.middleware import scope_path

log = logging.getLogger(__name__)

#: POST endpoints that only read (a chain's statistics or time profile, a polygon's index
#: profile): no key needed, charged to the compute budget like the profile GET.
READ_ONLY_POSTS = re.compile(r"/api/(chains/[^/]+/(statistics|profile)|profile)$")
#: GET endpoints that read every scene of a collection: charged to the write budget.
COSTLY_GETS = re.compile(r"/api/profile$")
SAFE_METHODS = frozenset({"GET", "HEAD"})


class Access(str, Enum):
    """What a request does, for access control and for choosing its budget."""

    read = "read"
    compute = "compute"
    write = "write"


def _api_path(scope: Scope) -> str | None:
    """The request path below the root path when it is an API path, else None."""
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path if path.startswith("/api/") or path == "/api" else None


def classify(method: str, path: str) -> Access | None:
    """The access class of an API request; None for CORS preflights (always let through)."""
    method = method.upper()
    if method == "OPTIONS":
        return None
    if method in SAFE_METHODS:
        return Access.compute if COSTLY_GETS.search(path.rstrip("/")) else Access.read
    if method == "POST" and READ_ONLY_POSTS.search(path.rstrip("/")):
        return Access.compute
    return Access.write


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The API key of a request (``Authorization: Bearer`` first, then ``X-API-Key``)."""
    bearer = header = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                bearer = token.strip()
        elif name == b"x-api-key" and value.strip():
            header = value.decode("latin-1").strip()
    return bearer or header


class TokenBucket:
    """``capacity`` tokens refilled at ``per_minute`` per minute; one request takes one."""

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, per_minute: int, capacity: int, now: float) -> None:
        self.capacity = float(capacity)
        self.rate = per_minute / 60.0
        self.tokens = float(capacity)
        self.stamp = now

    def take(self, now: float) -> float:
        """0 when a token was taken; else the seconds until one will be there."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """Token buckets per (budget, client), at most ``max_clients`` of them (least recently
    seen dropped first), so a flood of addresses cannot grow memory without bound.

    Args:
        read_per_minute: requests per minute per client for ``read``; 0 = unlimited.
        write_per_minute: the same for ``write`` and ``compute``; 0 = unlimited.
        burst_seconds: a full bucket holds this many seconds of the rate (at least 1 token),
            so a map that loads 40 tiles at once is not throttled.
        max_clients: bound of the bucket table.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(self, *, read_per_minute: int = 0, write_per_minute: int = 0,
                 burst_seconds: float = 10.0, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if read_per_minute < 0 or write_per_minute < 0:
            raise ValueError("rate limits must be >= 0 (0 = unlimited)")
        self.per_minute = {"read": read_per_minute, "write": write_per_minute}
        self.burst_seconds = burst_seconds
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()
        self._lock = threading.Lock()
        self.refused = 0

    @staticmethod
    def budget(access: Access) -> str:
        """The budget a class of request is charged to."""
        return "read" if access is Access.read else "write"

    def check(self, access: Access, client: str) -> float:
        """Charge one request; 0 when allowed, else the seconds to wait."""
        budget = self.budget(access)
        rate = self.per_minute[budget]
        if rate == 0:
            return 0.0
        now = self.clock()
        key = (budget, client)
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                capacity = max(1, math.floor(rate * self.burst_seconds / 60.0))
                bucket = self._buckets[key] = TokenBucket(rate, capacity, now)
                while len(self._buckets) > self.max_clients:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
            wait = bucket.take(now)
            if wait:
                self.refused += 1
            return wait

    def __len__(self) -> int:
        return len(self._buckets)

    def stats(self) -> dict[str, int]:
        """Counters for /healthz."""
        return {"read_per_minute": self.per_minute["read"],
                "write_per_minute": self.per_minute["write"],
                "clients": len(self._buckets), "refused": self.refused}


@dataclass(frozen=True)
class AccessPolicy:
    """Who may write and how fast anyone may call the API.

    Args:
        api_keys: keys accepted for writes; empty means writes are open (loopback use).
        read_per_minute: per-client budget of reads (tiles...); 0 = unlimited.
        write_per_minute: per-client budget of writes and statistics; 0 = unlimited.
        max_clients: bound of the rate limiter's table.
    """

    api_keys: tuple[str, ...] = field(default=(), repr=False)
    read_per_minute: int = 0
    write_per_minute: int = 0
    max_clients: int = 10_000
    _digests: tuple[bytes, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = tuple(k for k in self.api_keys if k)
        object.__setattr__(self, "api_keys", keys)
        object.__setattr__(self, "_digests", tuple(_digest(k) for k in keys))

    @property
    def open(self) -> bool:
        """True when nothing is enforced (no keys, no limits)."""
        return not self.api_keys and not self.read_per_minute and not self.write_per_minute

    def valid_key(self, key: str | None) -> bool:
        """True when ``key`` is one of the keys (constant time per key)."""
        if key is None:
            return False
        d = _digest(key)
        return any(hmac.compare_digest(d, known) for known in self._digests)

    def describe(self) -> dict[str, object]:
        """For /healthz: what is enforced, never the keys."""
        return {"write_keys_required": bool(self.api_keys),
                "read_per_minute": self.read_per_minute,
                "write_per_minute": self.write_per_minute}


def _reject(exc: ServiceError, headers: Mapping[str, str]) -> JSONResponse:
    return JSONResponse(error_body(exc.message, type(exc).__name__),
                        status_code=status_for(exc), headers=dict(headers))


class SecurityMiddleware:
    """Enforce an :class:`AccessPolicy` on ``/api/`` requests before the app reads them."""

    def __init__(self, app: ASGIApp, *, policy: AccessPolicy,
                 limiter: RateLimiter | None = None) -> None:
        self.app = app
        self.policy = policy
        self.limiter = limiter if limiter is not None else RateLimiter(
            read_per_minute=policy.read_per_minute, write_per_minute=policy.write_per_minute,
            max_clients=policy.max_clients)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.policy.open:
            await self.app(scope, receive, send)
            return
        path = _api_path(scope)
        access = classify(scope.get("method", "GET"), path) if path is not None else None
        if access is None:
            await self.app(scope, receive, send)
            return
        key = presented_key(scope.get("headers", ()))
        valid = self.policy.valid_key(key)
        if access is Access.write and self.policy.api_keys and not valid:
            if key is None:
                exc: ServiceError = Unauthorized(
                    "this endpoint needs an API key: send 'Authorization: Bearer <key>' "
                    "or 'X-API-Key: <key>'")
            else:
                exc = Forbidden("the API key is not valid for this service")
            await _reject(exc, {"WWW-Authenticate": 'Bearer realm="eoexplorer"'})(
                scope, receive, send)
            return
        if valid:
            client = "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]  # type: ignore[union-attr]
        else:
            client = "ip:" + ((scope.get("client") or ("unknown", 0))[0] or "unknown")
        wait = self.limiter.check(access, client)
        if wait:
            retry = max(1, math.ceil(wait))
            budget = self.limiter.budget(access)
            exc = RateLimited(
                f"too many {budget} requests: at most "
                f"{self.limiter.per_minute[budget]} per minute per client; retry in {retry} s",
                retry_after=retry)
            log.debug("rate limited %s on %s", client, path)
            await _reject(exc, {"Retry-After": str(retry)})(scope, receive, send)
            return
        await self.app(scope, receive, send)


# -- the dashboard's optional HTTP Basic guard ----------------------------------------------
#: User name meaning "any user name" (a single shared password).
ANY_USER = "*"


class BasicAuthMiddleware:
    """HTTP Basic authentication for the dashboard served on the same ASGI app.

    Panel's own ``basic_auth``/OAuth only exist on its Tornado server; ``eoexplorer serve``
    runs Panel inside FastAPI, so this guards its pages and websocket instead. Paths under
    ``exempt`` (the tile API, /healthz) stay open so shared tile URLs keep working; the
    API has its own keys. ``users`` maps user name to password (``"*"``: any user name).
    """

    def __init__(self, app: ASGIApp, *, users: Mapping[str, str],
                 realm: str = "EO Explorer",
                 exempt: tuple[str, ...] = ("/api/", "/healthz")) -> None:
        if not users:
            raise ValueError("BasicAuthMiddleware needs at least one user")
        self.app = app
        self.users = {name: _digest(pw) for name, pw in users.items()}
        self.realm = realm
        self.exempt = exempt

    def _allowed(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        for name, value in headers:
            if name != b"authorization":
                continue
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "basic":
                return False
            try:
                user, sep, password = base64.b64decode(token.strip(), validate=True) \
                    .decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            if not sep:
                return False
            known = self.users.get(user, self.users.get(ANY_USER))
            return known is not None and hmac.compare_digest(_digest(password), known)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope_path(scope)
        if path.startswith(self.exempt) or self._allowed(scope.get("headers", ())):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await receive()  # websocket.connect; closing before accept answers HTTP 403
            await send({"type": "websocket.close", "code": 1008})
            return
        body = error_body("the dashboard needs a user name and password", "Unauthorized")
        await JSONResponse(body, status_code=401, headers={
            "WWW-Authenticate": f'Basic realm="{self.realm}", charset="UTF-8"'})(
            scope, receive, send)
