"""Extract endpoint: a registered chain inside a polygon, at native resolution, as a file.

``POST /api/chains/{id}/extract`` answers a COG (CRS, nodata) or a PNG. The file is built in
a private temporary folder (in the thread pool) and removed once sent; a failed extract
leaves nothing behind and answers the error table's status (400 too large / bad polygon,
404 unknown chain, 424 no data there, 422 bad body). The size limit is the
``extract_max_pixels`` setting (``EOX_EXTRACT_MAX_PIXELS``).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Body
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from engine import extract as ex
from engine.catalog.base import Catalog
from engine.chain.store import ChainStore
from service.models import StatisticsBody, geometry_of
from service.routes.chains import ChainId


class ExtractBody(BaseModel):
    """What to extract: where, in which format, the chain's output or its source bands."""

    model_config = ConfigDict(extra="forbid")
    geometry: StatisticsBody = Field(description="GeoJSON Polygon/MultiPolygon or Feature "
                                                 "(WGS84 lon/lat)")
    format: Literal["cog", "png"] = Field("cog", description="cog: GeoTIFF (COG) with CRS "
                                          "and nodata; png: 8-bit colours")
    what: Literal["rendered", "bands"] = Field(
        "rendered", description="rendered: the chain's output; bands: the original band "
        "values the chain reads")
    crs: str | None = Field(None, max_length=200, description="Output CRS (default: the "
                            "first scene's)", examples=["EPSG:32633"])
    resolution: float | None = Field(None, gt=0, allow_inf_nan=False,
                                     description="Pixel size in CRS units (default: native)")


EXTRACT_EXAMPLE = {
    "geometry": {"type": "Polygon", "coordinates": [[[15.0, 50.05], [15.02, 50.05],
                                                     [15.02, 50.07], [15.0, 50.05]]]},
    "format": "cog", "what": "rendered",
}


@dataclass
class ExtractRoutes:
    """``POST /api/chains/{id}/extract`` over a catalog and the chain store.

    Args:
        max_pixels: largest extract in output pixels (larger: 400 saying size and limit);
            ``create_service(extract_max_pixels=)``, from the ``extract_max_pixels``
            setting in ``app.wiring.build_service``.
    """

    catalog: Catalog
    chain_store: ChainStore
    max_pixels: int = ex.MAX_PIXELS
    router: APIRouter = field(init=False)

    def __post_init__(self) -> None:
        self.router = APIRouter(prefix="/api/chains", tags=["chains"])
        self._register()

    def build(self, chain_id: str, body: ExtractBody, *,
              max_pixels: int | None = None) -> tuple[ex.ExtractResult, Path]:
        """Run the extract into a fresh temporary folder; the folder is removed on error.

        The size is checked (``max_pixels``, default the routes' own) before any folder is
        made or any pixel read.
        """
        chain = self.chain_store.get(chain_id)
        job = ex.prepare(chain, geometry_of(body.geometry), fmt=body.format, what=body.what,
                         crs=body.crs, resolution=body.resolution, catalog=self.catalog,
                         max_pixels=self.max_pixels if max_pixels is None else max_pixels)
        folder = Path(tempfile.mkdtemp(prefix="eox-extract-"))
        try:
            result = ex.run(job, folder / f"{chain_id}-{body.what}{ex.SUFFIXES[body.format]}")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return result, folder

    def _register(self) -> None:
        @self.router.post(
            "/{chain_id}/extract",
            summary="The chain inside a polygon at native resolution, as a COG or PNG file",
            response_class=FileResponse,
            responses={
                200: {"content": {"image/tiff": {}, "image/png": {}}},
                400: {"description": "Bad polygon, or the extract is larger than the limit"},
                404: {"description": "Unknown chain id"},
                422: {"description": "Invalid body, or PNG of non-8-bit values"},
                424: {"description": "No scene of the chain has data there"},
            },
        )
        async def extract(chain_id: str = ChainId,
                          body: ExtractBody = Body(..., examples=[EXTRACT_EXAMPLE])) -> Any:
            result, folder = await run_in_threadpool(self.build, chain_id, body)
            headers = {"X-Extract-Size": f"{result.width}x{result.height}",
                       "X-Extract-CRS": result.crs,
                       "X-Extract-Bands": ",".join(result.band_names)}
            if result.note:
                headers["X-Extract-Note"] = result.note.encode("ascii", "replace").decode()
            return FileResponse(result.path, media_type=ex.MEDIA_TYPES[result.fmt],
                                filename=result.path.name, headers=headers,
                                background=BackgroundTask(shutil.rmtree, folder, True))
