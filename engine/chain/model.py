"""The chain: a source (a catalog query + mosaic rule) and a list of steps; immutable data.

Its canonical JSON (sorted keys, no whitespace) is its identity: ``chain.id`` is its full
sha256 (64 hex digits; ids stored earlier with 16 digits stay readable), so tile URLs,
caches and share links agree and two chains never share an id.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import textwrap
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from engine.catalog.base import OPERATORS, Filter, Query
from engine.chain.bands import check_bands
from engine.chain.budget import check_chain_cost, check_steps
from engine.chain.executor import chain_scope
from engine.chain.expression import parse_expression
from engine.chain.raster import Raster
from engine.chain.steps import (
    STEPS,
    Band,
    Bands,
    ColorCustom,
    Colormap,
    Execute,
    Expression,
    Mask,
    Opacity,
    Reduce,
    Scale,
    Step,
)
from engine.errors import ChainError
from engine.timeutil import to_utc

#: Mosaic rules across scenes: which scene gives each pixel.
MOSAIC_METHODS: tuple[str, ...] = ("first", "latest", "least_cloudy", "median", "max")


class FilterSpec(BaseModel):
    """A serialised :class:`engine.catalog.base.Filter`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    prop: str
    op: str
    value: Any

    @field_validator("op")
    @classmethod
    def _op(cls, v: str) -> str:
        if v not in OPERATORS:
            raise ChainError(f"unknown filter operator {v!r}", choices=OPERATORS)
        return v


_GEOMETRY_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon",
                   "MultiPolygon", "GeometryCollection")


def _depth(value: Any, limit: int = 8) -> int:
    """Nesting depth of lists/dicts, counted no further than ``limit`` + 1."""
    depth, level = 0, [value]
    while level and depth <= limit:
        nxt = []
        for v in level:
            if isinstance(v, dict):
                nxt.extend(v.values())
            elif isinstance(v, list | tuple):
                nxt.extend(v)
        level, depth = nxt, depth + 1 if nxt else depth
    return depth


class Source(BaseModel):
    """Where pixels come from: a catalog query, the mosaic rule and the time-stack switch.

    ``bands`` (from ``process_multi``) fixes the bands read, in order; otherwise the first
    band-defining step (bands/expression) says which bands to read.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    collection: str = Field(min_length=1)
    bbox: tuple[float, float, float, float] | None = None
    intersects: dict[str, Any] | None = None
    start: datetime | None = None
    end: datetime | None = None
    filters: tuple[FilterSpec, ...] = ()
    sortby: tuple[tuple[str, bool], ...] = ()
    limit: int | None = Field(default=None, ge=1)
    ids: tuple[str, ...] | None = None
    bands: tuple[str, ...] | None = Field(default=None, max_length=256)
    mosaic: Literal["first", "latest", "least_cloudy", "median", "max"] = "first"
    mosaic_expression: str | None = None
    times: bool = False

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return to_utc(v) if v is not None else None

    @field_validator("intersects")
    @classmethod
    def _geometry(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        """A GeoJSON geometry (bounded nesting), refused here rather than on every tile."""
        if v is not None and (v.get("type") not in _GEOMETRY_TYPES
                              or _depth(v.get("coordinates", v.get("geometries"))) > 6):
            raise ChainError("source.intersects must be a GeoJSON geometry "
                             "({type, coordinates})", choices=_GEOMETRY_TYPES)
        return v

    @field_validator("mosaic", mode="before")
    @classmethod
    def _mosaic(cls, v: Any) -> Any:
        if v not in MOSAIC_METHODS:
            raise ChainError(f"unknown mosaic method {v!r}", choices=MOSAIC_METHODS)
        return v

    @model_validator(mode="after")
    def _check(self) -> Source:
        if self.mosaic_expression is not None:
            if self.mosaic != "max":
                raise ChainError("mosaic_expression only applies to mosaic='max'")
            parse_expression(self.mosaic_expression)
        if self.bands is not None and not self.bands:
            raise ChainError("process_multi needs at least one band")
        return self

    @classmethod
    def from_query(cls, query: Query, **options: Any) -> Source:
        """A source reading the items ``query`` finds."""
        return cls(
            collection=query.collection, bbox=query.bbox, intersects=query.intersects,
            start=query.start, end=query.end,
            filters=tuple(FilterSpec(prop=f.prop, op=f.op, value=f.value)
                          for f in query.filters),
            sortby=query.sortby, limit=query.limit, ids=query.ids, **options,
        )

    def to_query(self) -> Query:
        """The catalog query for this source."""
        return Query(
            collection=self.collection, bbox=self.bbox, intersects=self.intersects,
            start=self.start, end=self.end,
            filters=tuple(Filter(f.prop, f.op, tuple(f.value) if isinstance(f.value, list)
                                 else f.value) for f in self.filters),
            sortby=tuple(self.sortby), limit=self.limit, ids=self.ids,
        )


def _wrap(fn: Callable[[], Any]) -> Any:
    """Run a pydantic constructor, turning ValidationError into ChainError."""
    try:
        return fn()
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        raise ChainError(f"invalid chain{' at ' + loc if loc else ''}: {err['msg']}") from None


class Chain(BaseModel):
    """An immutable processing chain. Build it fluently from a Collection::

        coll.process().bands("B08", "B04", "B03").scale(0, 3000)
        coll.process().expression("(B08-B04)/(B08+B04)").scale(-1, 1).colormap("RdYlGn")

    Every fluent method returns a NEW chain.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Source
    steps: tuple[SerializeAsAny[Step], ...] = ()

    # Bands the collection knows (for early errors); not part of the identity.
    _known_bands: tuple[str, ...] | None = PrivateAttr(default=None)

    @field_validator("steps", mode="before")
    @classmethod
    def _parse_steps(cls, v: Any) -> Any:
        if not isinstance(v, list | tuple):
            raise ChainError("steps must be a list")
        check_steps(len(v))  # before parsing them: 30k steps held the render slots
        return tuple(STEPS.parse(s) for s in v)

    @model_validator(mode="after")
    def _cost(self) -> Chain:
        check_chain_cost(self)
        return self

    # -- identity and serialisation ---------------------------------------------------
    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False)

    @property
    def id(self) -> str:
        """The sha256 of the canonical JSON, 64 hex digits (a shorter id could be claimed
        by a second, crafted chain)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def __eq__(self, other: object) -> bool:
        """Chains are equal when their canonical JSON is (early-check hints aside)."""
        return isinstance(other, Chain) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.to_json())

    @classmethod
    def from_json(cls, data: str | bytes | dict) -> Chain:
        """Parse a chain from JSON text or a dict; ChainError on anything malformed."""
        if isinstance(data, str | bytes):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise ChainError(f"chain JSON is malformed: {exc}") from None
        if not isinstance(data, dict):
            raise ChainError("a chain must be a JSON object with 'source' and 'steps'")
        return _wrap(lambda: cls.model_validate(data))

    @classmethod
    def for_source(cls, source: Source, *, known_bands: Sequence[str] | None = None) -> Chain:
        """An empty chain on ``source``; ``known_bands`` enables early band checks."""
        chain = cls(source=source)
        chain._known_bands = tuple(known_bands) if known_bands else None
        if known_bands and source.bands:
            check_bands(source.bands, known_bands, collection=source.collection)
        if known_bands and source.mosaic_expression:
            check_bands(parse_expression(source.mosaic_expression).band_names, known_bands,
                        collection=source.collection)
        return chain

    # -- structure ----------------------------------------------------------------------
    def then(self, step: Step | dict) -> Chain:
        """A new chain with ``step`` appended (validated against known bands if any)."""
        parsed = _wrap(lambda: STEPS.parse(step))  # a bad parameter: ChainError naming it
        new = self.model_copy(update={"steps": (*self.steps, parsed)})
        check_chain_cost(new)
        new._known_bands = self._known_bands
        if self._known_bands and self.source.bands is None and not self.steps:
            names = parsed.source_bands()
            if names:
                check_bands(names, self._known_bands, collection=self.source.collection)
        return new

    def read_bands(self) -> tuple[str, ...]:
        """The band names to read from each scene, in order (before cloud masking)."""
        if self.source.bands is not None:
            return self.source.bands
        if not self.steps:
            raise ChainError("the chain reads no bands: start with bands(...), "
                             "expression(...) or process_multi([...])")
        names = self.steps[0].source_bands()
        if not names:
            raise ChainError(f"the chain reads no bands: its first step is "
                             f"{self.steps[0].name!r}; start with bands(...), expression(...) "
                             "or use process_multi([...])")
        return names

    def cloud_masks(self) -> list[Mask]:
        """The ``mask(cloud=True)`` steps (applied per scene, before mosaicking)."""
        return [s for s in self.steps if isinstance(s, Mask) and s.cloud]

    def apply(self, img: Raster, *, analytic_only: bool = False,
              skip_cloud: bool = False) -> Raster:
        """Run the steps on ``img``; optionally stop at the first visual step.

        ``skip_cloud`` leaves out cloud masking (already done per scene by the renderer),
        but still applies a cloud step's ``values``.
        """
        with chain_scope(self):  # execute steps run in processes bound to this chain
            for step in self.steps:
                if analytic_only and step.kind == "visual":
                    break
                if skip_cloud and isinstance(step, Mask) and step.cloud:
                    if step.values:
                        img = Mask(values=step.values)(img)
                    continue
                img = step(img)
        return img

    def describe(self) -> str:
        """One line for humans: ``collection | step(params) | ...``."""
        parts = [self.source.collection + (f" [{self.source.mosaic}]")]
        for s in self.steps:
            params = s.model_dump(exclude={"name", "source"}, exclude_defaults=True)
            text = ", ".join(f"{k}={v}" for k, v in params.items())
            parts.append(f"{s.name}({text})")
        return " | ".join(parts)

    # -- fluent steps -------------------------------------------------------------------
    def bands(self, *names: str) -> Chain:
        """Select bands by name (``bands("B08", "B04", "B03")``)."""
        if len(names) == 1 and isinstance(names[0], list | tuple):
            names = tuple(names[0])
        return self.then(_wrap(lambda: Bands(bands=list(names))))

    def band(self, index: int) -> Chain:
        """Select one band by 0-based index."""
        return self.then(_wrap(lambda: Band(index=index)))

    def expression(self, expression: str) -> Chain:
        """Band math (safe evaluator); ``;`` separates several output bands."""
        return self.then(_wrap(lambda: Expression(expression=expression)))

    def execute(self, function: Callable | str, *args: Any, source: str | None = None,
                **kwargs: Any) -> Chain:
        """Run a user function (in the sandbox executor) on the pixel array.

        ``function`` is a Python function (its source is sent) or a name with ``source=``.
        """
        if callable(function):
            name = function.__name__
            try:
                src = textwrap.dedent(inspect.getsource(function))
            except (OSError, TypeError) as exc:
                raise ChainError(f"execute: cannot get the source of {name}: {exc}") from None
            try:  # the pixel array comes first, then the user's arguments
                inspect.signature(function).bind(None, *args, **kwargs)
            except TypeError as exc:
                raise ChainError(f"execute: {name}() cannot be called with these arguments: "
                                 f"{exc}") from None
        else:
            name, src = str(function), source
            if src is None:
                raise ChainError("execute: give the function's source with source=...")
        return self.then(_wrap(lambda: Execute(function=name, source=src, args=list(args),
                                               kwargs=kwargs)))

    def scale(self, min: Any = None, max: Any = None, *,  # names mirror JEO-lab
              p: tuple[float, float] | None = None, gamma: float = 1.0) -> Chain:
        """Stretch to 8 bits: ``scale(0, 3000)``, per band lists, or ``scale(p=(2, 98))``."""
        return self.then(_wrap(lambda: Scale(min=min, max=max, p=p, gamma=gamma)))

    def mask(self, *values: float, cloud: bool = False,
             classes: Sequence[int] | None = None) -> Chain:
        """Mask pixels equal to ``values``, and/or cloudy pixels (``cloud=True``)."""
        if len(values) == 1 and isinstance(values[0], list | tuple):
            values = tuple(values[0])
        return self.then(_wrap(lambda: Mask(values=list(values) or None, cloud=cloud,
                                            classes=list(classes) if classes else None)))

    def colormap(self, name: str) -> Chain:
        """Colour one 8-bit band with a matplotlib colormap."""
        return self.then(_wrap(lambda: Colormap(colormap=name)))

    def color_custom(self, colors: Sequence[str]) -> Chain:
        """Colour one 8-bit band with a gradient through CSS colours (``["Lime"]``)."""
        if isinstance(colors, str):
            colors = [colors]
        return self.then(_wrap(lambda: ColorCustom(colors=list(colors))))

    def opacity(self, value: float) -> Chain:
        """Output opacity, 0-1 or 0-255."""
        return self.then(_wrap(lambda: Opacity(opacity=value)))

    def reduce(self, method: str = "max") -> Chain:
        """Reduce a time stack over time (max, min, mean, median, sum, std, count)."""
        return self.then(_wrap(lambda: Reduce(method=method)))

    # -- batch runs (engine.batch) ------------------------------------------------------
    def compute(self, **options: Any) -> Any:
        """This chain over an area as a Dask-backed xarray.DataArray (engine.batch.compute)."""
        from engine.batch import compute

        return compute(self, **options)

    def to_cog(self, path: Any, **options: Any) -> Any:
        """Compute over an area into a COG, atomically (engine.batch.to_cog)."""
        from engine.batch import to_cog

        return to_cog(self, path, **options)

    def extract(self, geometry: Any, path: Any, **options: Any) -> Any:
        """This chain inside a polygon at native resolution, to a COG/PNG, atomically
        (engine.extract.extract; ``what="bands"`` for the original band values)."""
        from engine.extract import extract

        return extract(self, geometry, path, **options)

    def to_zarr(self, path: Any, **options: Any) -> Any:
        """Compute over an area into a Zarr store, atomically (engine.batch.to_zarr)."""
        from engine.batch import to_zarr

        return to_zarr(self, path, **options)

    def export_html(self, path: Any, *, service_url: str | None = None, **options: Any) -> Any:
        """One self-contained HTML page (map, legend, description) showing this chain's
        tiles from the service at ``service_url`` (default: the settings',
        ``EOX_SERVICE_URL``; see engine.export_html.export_html)."""
        from engine.export_html import export_html

        return export_html(self, path, service_url=service_url, **options)

    # -- HoloViews/GeoViews (engine.hvelements) ---------------------------------------
    def hv(self, *, name: str | None = None, service_url: str | None = None,
           **options: Any) -> Any:
        """A ``gv.WMTS`` element of this chain's tiles from the tile service (compose with
        ``*``/``+``); ``hv_legend()`` is its legend (engine.hvelements.chain_tiles)."""
        from engine.hvelements import chain_tiles

        return chain_tiles(self, name=name, service_url=service_url, **options)

    def hv_legend(self) -> Any:
        """This chain's legend as a HoloViews element (engine.hvelements.chain_legend)."""
        from engine.hvelements import chain_legend

        return chain_legend(self)
