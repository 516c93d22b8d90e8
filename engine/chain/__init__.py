"""Processing chains: a source (catalog query + mosaic rule) and validated steps, as data.

>>> chain = coll.process().bands("B08", "B04", "B03").scale(0, 3000)
>>> Chain.from_json(chain.to_json()) == chain
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.chain.executor import get_executor, set_executor
from engine.chain.expression import FUNCTIONS, ParsedExpression, parse_expression
from engine.chain.model import MOSAIC_METHODS, Chain, FilterSpec, Source
from engine.chain.raster import Raster, TimeStack
from engine.chain.steps import (
    FMASK_CLOUD_CLASSES,
    SCL_CLOUD_CLASSES,
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
    StepRegistry,
)
from engine.chain.threshold import Threshold as Threshold  # registers the step (extending.md)

if TYPE_CHECKING:
    from engine.collection import Collection

__all__ = [
    "FMASK_CLOUD_CLASSES", "FUNCTIONS", "MOSAIC_METHODS", "SCL_CLOUD_CLASSES", "STEPS",
    "Band", "Bands", "Chain", "ColorCustom", "Colormap", "Execute", "Expression",
    "FilterSpec", "Mask", "Opacity", "ParsedExpression", "Raster", "Reduce", "Scale",
    "Source", "Step", "StepRegistry", "TimeStack", "get_executor", "parse_expression",
    "process", "process_multi", "set_executor",
]


def process(collection: Collection, *, mosaic: str = "first",
            mosaic_expression: str | None = None) -> Chain:
    """An empty chain on ``collection`` (an engine.collection.Collection); add steps fluently."""
    return _start(collection, bands=None, times=False, mosaic=mosaic,
                  mosaic_expression=mosaic_expression)


def process_multi(collection: Collection, bands, *, times: bool = False, mosaic: str = "first",
                  mosaic_expression: str | None = None) -> Chain:
    """A chain reading ``bands`` in order; ``times=True`` gives steps a (t, b, y, x) stack."""
    if isinstance(bands, str):
        bands = [bands]
    return _start(collection, bands=tuple(bands), times=times, mosaic=mosaic,
                  mosaic_expression=mosaic_expression)


def _start(collection: Collection, **options) -> Chain:
    from engine.chain.bands import collection_band_names
    from engine.chain.model import _wrap

    query = collection.query
    source = _wrap(lambda: Source.from_query(query, **options))
    known = collection_band_names(collection.catalog.collection(query.collection)) or None
    return Chain.for_source(source, known_bands=known)
