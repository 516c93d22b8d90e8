"""The one Settings object (env prefix ``EOX_``), built here and passed down.

Engine and service never read the environment; they receive values from these settings.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.paths import default_catalog_path, default_data_dir


class Settings(BaseSettings):
    """Deployment settings. Every field can be set as ``EOX_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="EOX_", extra="forbid")

    catalog: str = Field(
        default_factory=lambda: str(default_catalog_path()),
        description="Embedded catalog file (SQLite) or the URL of a STAC API.",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where converted COGs, demo downloads and local state live.",
    )
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
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest accepted request body.")
    basemap: str | None = Field(
        None, description="Optional XYZ basemap URL; offline the map works without one."
    )
    workers: int = Field(1, ge=1, le=64, description="Uvicorn worker processes for `tiles`.")

    @field_validator("prefix")
    @classmethod
    def _prefix_form(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith("/"):
            value = "/" + value
        return value.rstrip("/")

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
