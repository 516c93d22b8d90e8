"""GET /api/basemap/{z}/{x}/{y}.png: the offline base map (``engine.basemap``): land,
borders and place names from the packaged gazetteer data, the same for every user."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

#: The tiles never change for an installed version: browsers may keep them a day.
CACHE_CONTROL = "public, max-age=86400"


@dataclass
class BasemapRoutes:
    """The offline base map's tiles."""

    router: APIRouter = field(init=False)

    def __post_init__(self) -> None:
        self.router = APIRouter(prefix="/api/basemap", tags=["basemap"])

        @self.router.get("/{z}/{x}/{y}.png", summary="Offline base map tile (PNG)",
                         response_class=Response,
                         responses={200: {"content": {"image/png": {}}}})
        async def tile(z: int = Path(ge=0, le=22), x: int = Path(ge=0),
                       y: int = Path(ge=0)) -> Response:
            from engine.basemap import render_tile

            png = await run_in_threadpool(render_tile, z, x, y)
            return Response(png, media_type="image/png",
                            headers={"Cache-Control": CACHE_CONTROL})
