"""Chain endpoints: register a chain, then its XYZ tiles, TileJSON, point values, statistics.

Routes only translate HTTP: tile caching, single flight, the render limiter and warming
live in :class:`service.tiles.TileProducer`. Tiles of a chain id never change meaning (the
cache keys carry the scenes' fingerprint): they are served with a strong ETag and
``Cache-Control: immutable``; a cached tile is answered on the event loop without a
thread hop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from engine.chain import Chain
from engine.chain.bands import check_bands, collection_band_names
from engine.chain.executor import get_executor
from engine.chain.steps import Execute
from engine.chain.store import ChainStore
from engine.errors import ChainError, InvalidInput, SandboxError, UnknownCollection
from engine.render import ChainInfo, PointValues, Statistics
from engine.render.results import HISTOGRAM_BINS, MAX_HISTOGRAM_BINS, PERCENTILES
from service.cache import CachedTile
from service.lanes import EMPTY_PNG
from service.models import (
    ChainCreated,
    ImageFormat,
    StatisticsBody,
    TileJSON,
    TileSize,
    check_tile,
    geometry_of,
)
from service.protocols import ChainReader, CollectionLookup
from service.tiles import TileProducer

#: Tiles of a chain never change: browsers and proxies may keep them for a year.
IMMUTABLE = "public, max-age=31536000, immutable"
#: Response header saying what a tile leaves out (scenes beyond the per-tile cap).
NOTICE_HEADER = "X-EOX-Notice"

ChainId = Path(description="Chain id returned by POST /api/chains", min_length=1, max_length=64)

CHAIN_EXAMPLE = {
    "source": {"collection": "sentinel-2-l2a"},
    "steps": [{"name": "bands", "bands": ["B04", "B03", "B02"]},
              {"name": "scale", "min": [0], "max": [3000]}],
}


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _etag_matches(header: str | None, etag: str) -> bool:
    """True if an If-None-Match header names ``etag`` (weak comparison, as RFC 9110 says)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in header.split(","))


def tile_response(entry: CachedTile, fmt: ImageFormat, request: Request, *,
                  transparent: bool = False) -> Response:
    """200 with the image, 204 when the tile has no data (or, with ``transparent``, a
    1 px transparent PNG), 304 when the client has it."""
    headers = {"ETag": entry.etag, "Cache-Control": IMMUTABLE}
    if entry.notice:
        headers[NOTICE_HEADER] = entry.notice
    if _etag_matches(request.headers.get("if-none-match"), entry.etag):
        return Response(status_code=304, headers=headers)
    if not entry.content and transparent and fmt == ImageFormat.png:
        return Response(EMPTY_PNG, media_type=fmt.media_type, headers=headers)
    if not entry.content:
        return Response(status_code=204, headers=headers)
    return Response(entry.content, media_type=fmt.media_type, headers=headers)


@dataclass
class ChainRoutes:
    """Routes under ``/api/chains``: chains are checked against ``catalog`` and kept in
    ``chain_store``; tiles come from ``tiles``, point values, statistics and TileJSON
    info from ``reader``."""

    catalog: CollectionLookup
    chain_store: ChainStore
    tiles: TileProducer
    reader: ChainReader
    router: APIRouter = field(init=False)

    def __post_init__(self) -> None:
        self.router = APIRouter(prefix="/api/chains", tags=["chains"])
        self._register()

    def check_chain(self, chain: Chain) -> None:
        """ChainError unless the chain's collection exists and has the bands it reads, so a
        bad chain is refused when registered rather than on every tile."""
        name = chain.source.collection
        try:
            collection = self.catalog.collection(name)
        except UnknownCollection as exc:
            raise ChainError(
                f"source.collection: unknown collection {name!r}", choices=exc.choices or ()
            ) from None
        known = collection_band_names(collection)
        if known:
            check_bands(chain.read_bands(), known, collection=name)
        else:
            chain.read_bands()
        if get_executor() is None and any(isinstance(s, Execute) for s in chain.steps):
            raise SandboxError("server-side functions are disabled on this server "
                               "(EOX_FUNCTIONS_ENABLED=false): a chain with an execute step "
                               "cannot be registered")

    # -- routes -------------------------------------------------------------------------
    def _register(self) -> None:
        router = self.router

        @router.post(
            "",
            status_code=201,
            response_model=ChainCreated,
            summary="Register a chain; answers its id and tile URL template",
            responses={
                413: {"description": "Body too large"},
                422: {"description": "Invalid chain"},
            },
        )
        def create_chain(
            request: Request,
            body: dict[str, Any] = Body(..., examples=[CHAIN_EXAMPLE]),
        ) -> JSONResponse:
            chain = Chain.from_json(body)
            self.check_chain(chain)
            chain_id = self.chain_store.put(chain)
            base = f"{_base_url(request)}/api/chains/{chain_id}"
            created = ChainCreated(
                id=chain_id,
                tiles=base + "/tiles/{z}/{x}/{y}.png",
                tilejson=base + "/tilejson.json",
            )
            return JSONResponse(created.model_dump(), status_code=201)

        @router.get("/{chain_id}", summary="The chain JSON of a registered chain")
        def get_chain(chain_id: str = ChainId) -> dict[str, Any]:
            return self.chain_store.get(chain_id).model_dump(mode="json")

        @router.get(
            "/{chain_id}/tiles/{z}/{x}/{y}.{fmt}",
            summary="One Web Mercator XYZ tile of the chain",
            response_class=Response,
            responses={
                200: {"content": {"image/png": {}, "image/webp": {}, "image/jpeg": {}}},
                204: {"description": "No data in this tile (outside every item's footprint)"},
                304: {"description": "Not modified (If-None-Match matched the ETag)"},
                400: {"description": "z/x/y outside the grid"},
                404: {"description": "Unknown chain id"},
                424: {"description": "A source file of the catalog is missing or corrupt"},
            },
        )
        async def tile(
            request: Request,
            chain_id: str = ChainId,
            z: int = Path(description="Zoom level"),
            x: int = Path(description="Column"),
            y: int = Path(description="Row"),
            fmt: ImageFormat = Path(description="Image format"),
            tilesize: TileSize = Query(TileSize.s256, description="Tile edge in pixels"),
            empty: str = Query("204", pattern="^(204|transparent)$",
                               description="A tile without data: 204 No Content, or (png "
                               "only) a transparent image, for clients that take a 204 "
                               "for a failed image and retry it"),
        ) -> Response:
            check_tile(z, x, y)
            tiles = self.tiles
            fingerprint = tiles.cached_fingerprint(chain_id)
            if fingerprint is None:
                fingerprint = await run_in_threadpool(tiles.fingerprint, chain_id)
            key = tiles.key(chain_id, fingerprint, z, x, y, int(tilesize), fmt)
            entry = tiles.lookup(key)  # disk reads of small files are fast enough here
            if entry is None:
                entry = await tiles.fetch(key)
            return tile_response(entry, fmt, request, transparent=empty == "transparent")

        @router.get("/{chain_id}/tilejson.json", response_model=TileJSON,
                    summary="TileJSON 3.0 document of the chain")
        def tilejson(
            request: Request,
            chain_id: str = ChainId,
            tile_format: ImageFormat = Query(
                ImageFormat.png, description="Format of the tile URLs"
            ),
            tilesize: TileSize = Query(TileSize.s256, description="Tile edge in pixels"),
        ) -> TileJSON:
            info = self.reader.info(self.chain_store.get(chain_id))
            url = (f"{_base_url(request)}/api/chains/{chain_id}/tiles/{{z}}/{{x}}/{{y}}"
                   f".{tile_format.value}")
            if tilesize != TileSize.s256:
                url += f"?tilesize={int(tilesize)}"
            return TileJSON.of(chain_id, info, url, tilesize=int(tilesize))

        @router.get("/{chain_id}/info", response_model=ChainInfo,
                    summary="Bounds, zoom range, output bands and description of the chain")
        def info(chain_id: str = ChainId) -> ChainInfo:
            return self.reader.info(self.chain_store.get(chain_id))

        @router.get("/{chain_id}/point", response_model=PointValues,
                    response_model_exclude_unset=True,
                    summary="Values of every output band at a point")
        def point(
            chain_id: str = ChainId,
            lon: float = Query(ge=-180, le=180, description="Longitude (WGS84)"),
            lat: float = Query(ge=-90, le=90, description="Latitude (WGS84)"),
        ) -> PointValues:
            return self.reader.point(self.chain_store.get(chain_id), lon, lat)

        @router.post("/{chain_id}/statistics", response_model=Statistics,
                     summary="Per-band statistics inside a polygon")
        def statistics(
            chain_id: str = ChainId,
            body: StatisticsBody = Body(..., description="GeoJSON Polygon/MultiPolygon or Feature"),
            bins: int = Query(HISTOGRAM_BINS, ge=1, le=MAX_HISTOGRAM_BINS,
                              description="Histogram bins between the band's min and max"),
            p: str | None = Query(None, max_length=200, examples=["2,98"],
                                  description="Comma-separated percentiles in 0..100 "
                                  f"(default {','.join(map(str, PERCENTILES))})"),
        ) -> Statistics:
            percentiles = _percentiles(p)
            chain = self.chain_store.get(chain_id)
            return self.reader.statistics(chain, geometry_of(body), bins=bins,
                                          percentiles=percentiles)


def _percentiles(text: str | None) -> tuple[float, ...]:
    """The ``p`` query parameter as numbers in 0..100 (InvalidInput otherwise)."""
    if text is None or not text.strip():
        return PERCENTILES
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InvalidInput(f"p: expected comma-separated numbers, got {text!r}") from None
    if len(values) > 20 or not all(0 <= v <= 100 for v in values):
        raise InvalidInput(f"p: at most 20 percentiles, each in 0..100, got {text!r}")
    return values
