"""The one Settings object (env prefix ``EOX_``), built here and passed down.

Engine and service never read the environment; they receive values from these settings.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from engine.config import EngineSettings


class Settings(EngineSettings):
    """Deployment settings. Every field can be set as ``EOX_<NAME>`` in the environment.

    ``catalog``, ``data_dir`` and ``service_url`` are declared in ``engine.config`` (the
    Python API reads them without importing app)."""

    model_config = SettingsConfigDict(env_prefix="EOX_", extra="forbid")

    address: str = Field("127.0.0.1", description="Interface the server binds to.")
    port: int = Field(5006, ge=1, le=65535, description="Port of `eoexplorer serve`.")
    tiles_port: int = Field(8000, ge=1, le=65535, description="Port of `eoexplorer tiles`.")
    prefix: str = Field("", description="URL prefix when served behind a proxy.")
    allow_websocket_origin: list[str] = Field(
        default_factory=list, description="Extra origins allowed to embed the dashboard."
    )
    cors_origins: list[str] = Field(
        default_factory=lambda: ["*"], description="Origins allowed to GET tiles."
    )
    tile_cache_mb: int = Field(256, ge=0, description="Bound of the in-memory tile cache.")
    tile_disk_cache_mb: int = Field(
        1024, ge=0, description="Bound of the tile cache on disk (data_dir/tile-cache), "
        "shared by every worker and replica on the host; 0 = off."
    )
    tile_max_scenes: int = Field(
        50, ge=1, le=10_000, description="Most scenes mosaicked in one tile read from band "
        "files; a tile over more shows the first ones and says so (X-EOX-Notice header, a "
        "dashboard notification)."
    )
    tile_max_preview_scenes: int = Field(
        500, ge=1, le=100_000, description="Most scenes mosaicked in one tile when all have "
        "local previews (zoomed out); a tile over more says so as above."
    )
    preview_cache_mb: int = Field(
        256, ge=0, description="Local scene previews kept decoded in memory per process, MiB."
    )
    render_concurrency: int | None = Field(
        None, ge=1, le=256, description="Tiles rendered at once per process; None = CPU "
        "count + 1. More requests wait without holding a thread; cache hits never wait."
    )
    gdal_cache_mb: int = Field(
        256, ge=16, description="GDAL block cache per process, MiB (GDAL's default is 5 % "
        "of RAM per process, which adds up over workers)."
    )
    remote_timeout_s: float = Field(
        10.0, ge=1, le=300, description="Longest one HTTP/S3 request for a band file may "
        "take (GDAL_HTTP_TIMEOUT); then the request fails with a 504 naming the host."
    )
    remote_retries: int = Field(
        2, ge=0, le=10, description="Retries of a failed HTTP/S3 request (5xx, 429, reset) "
        "before a 502 naming the host (GDAL_HTTP_MAX_RETRY)."
    )
    remote_cache_mb: int = Field(
        128, ge=1, description="Blocks of remote COGs kept in memory per process, MiB "
        "(CPL_VSIL_CURL_CACHE_SIZE), so neighbouring tiles reuse downloaded ranges."
    )
    remote_file_cache_mb: int = Field(
        4, ge=1, le=256, description="Read-ahead cache per open remote file, MiB "
        "(VSI_CACHE_SIZE; up to 64 files stay open per process)."
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest accepted request body.")
    basemap: str | None = Field(
        None, description="Optional XYZ basemap URL; offline the map works without one."
    )
    workers: int = Field(1, ge=1, le=64, description="Uvicorn worker processes for `tiles`.")
    functions_enabled: bool = Field(
        True, description="Run users' Python functions (execute steps) in the sandbox."
    )
    sandbox_workers: int = Field(
        2, ge=1, le=64, description="User-function calls run at once (one process each)."
    )
    sandbox_timeout_s: float = Field(
        5.0, gt=0, le=600, description="Wall-clock limit of one user-function call."
    )
    sandbox_memory_mb: int = Field(
        2048, ge=256, description="Address-space limit of a sandbox call process."
    )
    sandbox_calls_per_process: int = Field(
        64, ge=1, le=10_000, description="Calls of ONE function (same source, arguments and "
        "input shape) a sandbox process may serve before it exits; 1 = a fresh process per call."
    )
    sandbox_imports: list[str] = Field(
        default_factory=lambda: ["numpy", "scipy.ndimage", "math"],
        description="Modules user functions may import (cv2 is added when installed).",
    )
    dask_scheduler: str | None = Field(
        None, description="Dask scheduler address (tcp://host:8786) for batch runs; "
        "None starts a LocalCluster."
    )
    batch_max_pixels: int = Field(
        2_000_000_000, ge=1, description="Largest batch output (pixels x dates) `run` accepts."
    )
    extract_max_pixels: int = Field(
        36_000_000, ge=1, description="Largest extract (Extract tab and POST "
        "/api/chains/{id}/extract), output pixels; larger areas are refused before anything "
        "is read, with a message saying the size and the limit."
    )
    raster_dirs: list[Path] = Field(
        default_factory=list, description="Folders whose rasters the dashboard may open by "
        "path (large raster layers); empty = the data dir and the working dir."
    )
    # -- cost budget of a chain (engine.chain.budget; README "Security") --
    chain_max_steps: int = Field(32, ge=1, le=10_000, description="Steps in one chain.")
    chain_max_expression_parts: int = Field(
        32, ge=1, le=10_000, description="';'-separated expression parts (output bands).")
    chain_max_expression_terms: int = Field(
        2000, ge=1, description="Terms of all a chain's expressions (numpy operations per pixel).")
    chain_max_bands_x_dates: int = Field(
        512, ge=1, description="Bands read x dates stacked by one request of a chain.")
    tile_max_mb: int = Field(
        256, ge=1, description="Estimated MiB one tile, image or statistics read may allocate.")
    chain_cache_mb: int = Field(
        64, ge=0, description="Parsed chains kept in memory per process (estimated MiB).")
    # -- what the service answers with (service.middleware; README "Security") --
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Host names requests may name (Host header); "
        "empty = localhost, 127.0.0.1, ::1 and the bound address; '*' = any (behind a proxy "
        "that checks it). Others get 400.")
    expose_paths: bool = Field(
        False, description="Show absolute server paths in /healthz, search results, chain "
        "JSON and Show code (off: file names only).")
    # -- access control (see README "Deploying safely"; applied by app/auth.py) --
    api_keys: list[str] = Field(
        default_factory=list,
        description="Keys accepted for the API's write endpoints (Authorization: Bearer <key> "
        "or X-API-Key), as a JSON list in EOX_API_KEYS; empty = writes open (loopback use).",
    )
    rate_limit_per_minute: int | None = Field(
        None, ge=0, description="Writes and statistics per minute per client (key or address); "
        "None = off on a loopback address, 60 otherwise; 0 = unlimited.",
    )
    tile_rate_limit_per_minute: int | None = Field(
        None, ge=0, description="Tile and other GET requests per minute per client; "
        "None = off on a loopback address, 3000 otherwise; 0 = unlimited.",
    )
    basic_auth: str | None = Field(
        None, description="Dashboard password (any user name) or the path of a JSON file "
        "{user: password}; None = no dashboard login.",
    )
    session_secret: str | None = Field(
        None, description="Key signing dashboard session ids and tokens (replicas behind one "
        "balancer share it); None = a random key per process.",
    )
    session_unused_s: float = Field(
        60.0, ge=1.0, description="How long a dashboard page's session waits for the page's "
        "websocket before it is dropped (a later socket makes it again from the page's URL).",
    )
    frame_ancestors: list[str] = Field(
        default_factory=lambda: ["'self'"], description="Pages that may frame the full "
        "dashboard (CSP frame-ancestors sources: 'self', 'none', https://site.example).",
    )
    embed_frame_ancestors: list[str] = Field(
        default_factory=lambda: ["*"], description="Pages that may frame the embed=true map "
        "(CSP frame-ancestors sources); the default lets any site embed it.",
    )
    cookie_secret: str | None = Field(None, description="Panel cookie secret (OAuth).")
    oauth_provider: str | None = Field(None, description="Panel OAuth provider (pn.serve only).")
    oauth_key: str | None = Field(None, description="OAuth client id.")
    oauth_secret: str | None = Field(None, description="OAuth client secret.")
    oauth_redirect_uri: str | None = Field(None, description="OAuth redirect URI.")
    oauth_extra_params: dict[str, str] = Field(
        default_factory=dict, description="Extra OAuth parameters (JSON object)."
    )
    oauth_encryption_key: str | None = Field(None, description="Key encrypting OAuth tokens.")

    @field_validator("prefix")
    @classmethod
    def _prefix_form(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith("/"):
            value = "/" + value
        return value.rstrip("/")

    @property
    def raster_folders(self) -> list[Path]:
        """Folders large raster layers may be read from (``raster_dirs`` or the defaults)."""
        return list(self.raster_dirs) or [self.data_dir, Path.cwd()]

    @property
    def is_loopback(self) -> bool:
        """True when the servers bind a loopback address only (nobody else can connect)."""
        import ipaddress

        if self.address == "localhost":
            return True  # "" binds every interface, like 0.0.0.0 and ::
        try:
            return ipaddress.ip_address(self.address).is_loopback
        except ValueError:
            return False

    @property
    def catalog_is_remote(self) -> bool:
        """True when the catalog is a STAC API URL rather than a local file."""
        return self.catalog.startswith(("http://", "https://"))

    @property
    def chain_db(self) -> Path:
        """SQLite file that stores registered chains: the catalog itself when embedded."""
        if self.catalog_is_remote:
            return self.data_dir / "chains.sqlite"
        return Path(self.catalog)
