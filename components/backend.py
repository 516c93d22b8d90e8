"""What the UI talks to: the catalog, the chain store, the renderer and the tile URL base.

One ``Backend`` per process (built by ``app/``); sessions only read it. Chains are registered
in-process (the same store the tile service reads), so the browser fetches their tiles from
the service's URLs on the page's own origin without a loopback HTTP call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.catalog.base import Catalog
from engine.chain import Chain
from engine.chain.bands import check_bands, collection_band_names
from engine.chain.store import ChainStore
from engine.errors import ChainError, UnknownCollection


@dataclass(frozen=True)
class Backend:
    """Engine handles shared by every session of a process.

    Args:
        catalog: the catalog searched and rendered.
        chain_store: where chains are registered (the tile service reads the same store).
        renderer: an ``engine.render.TileRenderer`` (statistics of the visible pixels).
        api_base: URL of the service's ``/api`` relative to the page ("api" on one origin).
        basemap: optional XYZ basemap URL template; None means no basemap (offline).
        functions_enabled: whether server-side user functions (sandbox) can run.
    """

    catalog: Catalog
    chain_store: ChainStore
    renderer: Any
    api_base: str = "api"
    basemap: str | None = None
    functions_enabled: bool = False

    def collection_names(self) -> list[str]:
        """Ids of the catalog's collections."""
        return [c.id for c in self.catalog.collections()]

    def band_names(self, collection: str) -> list[str]:
        """Every name a band of the collection answers to (asset keys and common names)."""
        return collection_band_names(self.catalog.collection(collection))

    def register(self, chain: Chain) -> str:
        """Check and store ``chain``; return its XYZ tile URL template ({X} {Y} {Z})."""
        name = chain.source.collection
        try:
            coll = self.catalog.collection(name)
        except UnknownCollection as exc:
            raise ChainError(f"unknown collection {name!r}", choices=exc.choices or ()) from None
        known = collection_band_names(coll)
        if known:
            check_bands(chain.read_bands(), known, collection=name)
        else:
            chain.read_bands()
        chain_id = self.chain_store.put(chain)
        return self.tile_url(chain_id)

    def tile_url(self, chain_id: str) -> str:
        """The XYZ template of a registered chain, in Bokeh's {X}/{Y}/{Z} form."""
        return f"{self.api_base}/chains/{chain_id}/tiles/{{Z}}/{{X}}/{{Y}}.png"

    def statistics(self, chain: Chain, geometry: dict) -> dict:
        """Per-band statistics of ``chain`` inside ``geometry`` (see TileRenderer.statistics)."""
        return self.renderer.statistics(chain, geometry)
