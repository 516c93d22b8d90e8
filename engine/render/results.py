"""Typed results of the renderer's point, statistics and info requests.

Pydantic models: the service uses them as ``response_model`` (their schemas appear in
``/openapi.json``) and their JSON is what the routes answered as plain dicts before.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field, RootModel

PERCENTILES: tuple[int, ...] = (2, 5, 25, 50, 75, 95, 98)
#: Histogram bins of ``statistics`` by default, and the most a caller may ask for.
HISTOGRAM_BINS = 64
MAX_HISTOGRAM_BINS = 1024


class PointValues(BaseModel):
    """Values of every output band at a point: one list, or one list per date (time
    stacks, with ``dates``); ``None`` where masked."""

    coordinates: tuple[float, float] = Field(description="lon, lat (WGS84)")
    bands: list[str] | None = Field(description="Output band names (None: unknown)")
    values: list[float | None] | list[list[float | None]]
    dates: list[str | None] | None = Field(
        None, description="ISO dates of a time stack's layers (absent otherwise)")
    items: list[str] = Field(description="Ids of the scenes read")


class Histogram(BaseModel):
    counts: list[int]
    edges: list[float]


class BandStatistics(BaseModel):
    """Statistics of one band's valid pixels (all None and count 0 when there are none)."""

    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    count: int
    percentiles: dict[str, float | None] = Field(
        description='Keyed like "2" or "99.5" (see percentile_key)')
    histogram: Histogram


class Statistics(RootModel[dict[str, BandStatistics] | dict[str, dict[str, BandStatistics]]]):
    """``{band: stats}``, or for time stacks ``{date: {band: stats}}``."""

    def as_dict(self) -> dict:
        """Plain dicts (what the dashboard's stretch tools read)."""
        return self.model_dump()


class ChainInfo(BaseModel):
    """What a TileJSON needs: WGS84 bounds, zoom range, output bands, a description."""

    bounds: list[float] = Field(description="west, south, east, north (WGS84)")
    minzoom: int
    maxzoom: int
    band_names: list[str] | None
    description: str
    scenes: int = Field(description="Scenes the chain's source finds")


def percentile_key(p: float) -> str:
    """How a percentile is named in statistics: "2" for 2.0, "99.5" for 99.5."""
    return str(int(p)) if float(p).is_integer() else repr(float(p))


def value_or_none(v: object) -> float | None:
    """A masked pixel as None, any other as a float."""
    return None if v is np.ma.masked else float(v)  # type: ignore[arg-type]


def band_statistics(names: list[str], array: np.ma.MaskedArray, outside: np.ndarray, *,
                    bins: int = HISTOGRAM_BINS, percentiles: Sequence[float] = PERCENTILES
                    ) -> dict[str, BandStatistics]:
    """Statistics per band of ``array`` (bands, h, w) over the pixels not ``outside`` (and
    not masked, finite)."""
    out = {}
    for i, name in enumerate(names):
        band = np.ma.MaskedArray(array.data[i], mask=np.ma.getmaskarray(array)[i] | outside)
        vals = band.compressed().astype(np.float64)
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            out[name] = BandStatistics(
                min=None, max=None, mean=None, std=None, count=0,
                percentiles={percentile_key(p): None for p in percentiles},
                histogram=Histogram(counts=[], edges=[]))
            continue
        counts, edges = np.histogram(vals, bins=bins)
        pct = np.percentile(vals, percentiles)
        out[name] = BandStatistics(
            min=float(vals.min()), max=float(vals.max()), mean=float(vals.mean()),
            std=float(vals.std()), count=int(vals.size),
            percentiles={percentile_key(p): float(v)
                         for p, v in zip(percentiles, pct, strict=True)},
            histogram=Histogram(counts=counts.tolist(), edges=edges.tolist()))
    return out
