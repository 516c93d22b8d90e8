"""What the Functions tab offers and checks without running anything: the template, the
shipped examples and the bands they need, the functions a source defines, the arguments box."""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from typing import Any

from components.layerspec import FUNCTION_LAYER
from engine import algorithms
from engine.errors import InvalidInput

TEMPLATE = '''import numpy as np


def my_function(img, threshold=1500):
    """img: (bands, rows, cols), or (dates, bands, rows, cols) for a time stack."""
    return (img[0] > threshold).astype(np.uint8)
'''

#: How an output is drawn: one band through a colour (0 transparent -> colour), one band
#: through a colormap, or three bands as RGB; each after scale(min, max).
DISPLAYS = {"Mask in one colour": "colour", "One band, colormap": "colormap",
            "RGB (3 bands)": "rgb"}
#: Layer name of the function's output on the map.
LAYER = FUNCTION_LAYER
OWN = "(your own)"


@dataclass(frozen=True)
class Example:
    """How a shipped algorithm is fed and shown: input bands (by common name, so any
    collection that has them qualifies), time stack, display."""

    bands: tuple[str, ...]
    times: bool = False
    display: str = "colour"
    vmin: float = 0.0
    vmax: float = 1.0
    colour: str = "Lime"
    colormap: str = "viridis"
    kwargs: dict[str, Any] = field(default_factory=dict)


EXAMPLES: dict[str, Example] = {
    # B06 (Sentinel-2's second red edge) has no common name of its own
    "stubble": Example(("red", "B06", "nir", "swir16"), colour="Lime"),
    "maxNDI": Example(("swir16", "nir", "red", "green", "blue"), times=True, display="rgb",
                      vmin=0, vmax=3000),
    "ndvi": Example(("red", "nir"), display="colormap", vmin=-1, vmax=1, colormap="RdYlGn"),
    "cloudmask": Example(("blue", "green", "red", "nir", "swir16"), display="colormap",
                         vmin=0, vmax=4, colormap="tab10"),
    "morphclean": Example(("nir",), colour="Yellow", kwargs={"threshold": 2500}),
}


def missing_bands(example: str, bands: list[str]) -> list[str]:
    """The bands ``example`` needs that a collection with ``bands`` lacks."""
    have = {b.lower() for b in bands}
    needs = EXAMPLES[example].bands if example in EXAMPLES else ()
    return [b for b in needs if b.lower() not in have]


def offered_examples(bands: list[str]) -> list[str]:
    """The shipped examples a collection with ``bands`` can feed (all their bands)."""
    return [OWN, *(name for name in algorithms.list() if not missing_bands(name, bands))]


def defined_functions(source: str) -> list[str]:
    """Names of the top-level functions ``source`` defines (parsed, not run); [] if it does
    not parse."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]


def parse_kwargs(text: str) -> dict[str, Any]:
    """The arguments box: a JSON object of keyword arguments ("" = none)."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"arguments: not a JSON object ({exc.msg}), e.g. "
                           '{"threshold": 1500}') from None
    if not isinstance(value, dict):
        raise InvalidInput('arguments: give a JSON object, e.g. {"threshold": 1500}')
    return value


@dataclass(frozen=True)
class TestResult:
    """What a test run gave: the output's shape and dtype, or the error."""

    ok: bool
    message: str
    lineno: int | None = None

    __test__ = False  # not a pytest class


__all__ = ["DISPLAYS", "EXAMPLES", "LAYER", "OWN", "TEMPLATE", "Example", "TestResult",
           "defined_functions", "missing_bands", "offered_examples", "parse_kwargs"]
