"""Python source that rebuilds a chain with the public API (``Collection(...)...process()``).

The dashboard's "Show code" and the notebook tell users how to get the same view in a
script: running the returned text builds a chain with the same ``id`` (the same canonical
JSON). A chain the fluent API cannot express exactly is written as ``Chain.from_json(...)``
rather than approximated.
"""

from __future__ import annotations

import json
from typing import Any

from engine.chain import Chain
from engine.chain.model import Source
from engine.timeutil import format_datetime

#: Steps written as fluent calls of the same name (the others as ``.then({...})``).
_FLUENT = ("bands", "band", "expression", "scale", "mask", "colormap", "color_custom",
           "opacity", "reduce")


class _Inexpressible(Exception):
    """Internal: the source cannot be written with Collection's methods exactly."""


def _lit(value: Any) -> str:
    """A Python literal for a JSON-mode value (dicts, lists, str, numbers, bool, None)."""
    return repr(value)


def _when(value: Any) -> str | None:
    return None if value is None else format_datetime(value)


def _source_calls(src: Source) -> list[str]:
    """``Collection`` method calls after the constructor, then the ``process`` call."""
    calls: list[str] = []
    if src.bbox is not None:
        calls.append(f".filter_bbox({_lit(list(src.bbox))})")
    if src.intersects is not None:
        geom = json.loads(json.dumps(src.intersects))
        coords = geom.get("coordinates")
        if geom.get("type") == "Point" and isinstance(coords, list) and len(coords) == 2:
            calls.append(f".filter_point({_lit(coords[0])}, {_lit(coords[1])})")
        else:
            calls.append(f".filter_geometry({_lit(geom)})")
    if src.start is not None or src.end is not None:
        calls.append(f".filter_date({_lit(_when(src.start))}, {_lit(_when(src.end))})")
    for f in src.filters:
        value = f.value
        if isinstance(value, list):
            value = [_plain(v) for v in value]
        else:
            value = _plain(value)
        calls.append(f".filter({_lit(f.prop)}, {_lit(f.op)}, {_lit(value)})")
    if src.ids is not None:
        calls.append(f".ids({', '.join(_lit(i) for i in src.ids)})")
    if len(src.sortby) > 1:
        raise _Inexpressible("several sort keys")
    for prop, ascending in src.sortby:
        calls.append(f".sort({_lit(prop)}, ascending={ascending!r})")
    if src.limit is not None:
        calls.append(f".limit({src.limit!r})")
    options = []
    if src.mosaic != "first":
        options.append(f"mosaic={src.mosaic!r}")
    if src.mosaic_expression is not None:
        options.append(f"mosaic_expression={src.mosaic_expression!r}")
    if src.bands is not None:
        if src.times:
            options.insert(0, "times=True")
        calls.append(f".process_multi({_lit(list(src.bands))}"
                     + "".join(", " + o for o in options) + ")")
    elif src.times:
        raise _Inexpressible("a time stack without bands")
    else:
        calls.append(f".process({', '.join(options)})")
    return calls


def _plain(value: Any) -> Any:
    from datetime import datetime

    return format_datetime(value) if isinstance(value, datetime) else value


def _step_call(step: Any) -> str:
    data = step.model_dump(mode="json")
    name = data.pop("name")
    if name not in _FLUENT:
        return f".then({_lit({'name': name, **data})})"
    if name == "bands":
        return f".bands({', '.join(_lit(b) for b in data['bands'])})"
    if name == "band":
        return f".band({data['index']!r})"
    if name == "expression":
        return f".expression({_lit(data['expression'])})"
    if name == "scale":
        gamma = "" if data["gamma"] == 1.0 else f", gamma={data['gamma']!r}"
        if data["p"] is not None:
            return f".scale(p={_lit(tuple(data['p']))}{gamma})"
        return f".scale({_lit(data['min'])}, {_lit(data['max'])}{gamma})"
    if name == "mask":
        args = [_lit(v) for v in data["values"] or []]
        if data["cloud"]:
            args.append("cloud=True")
        if data["classes"] is not None:
            args.append(f"classes={_lit(data['classes'])}")
        return f".mask({', '.join(args)})"
    if name == "colormap":
        return f".colormap({_lit(data['colormap'])})"
    if name == "color_custom":
        return f".color_custom({_lit(data['colors'])})"
    if name == "opacity":
        return f".opacity({data['opacity']!r})"
    return f".reduce({_lit(data['method'])})"  # reduce


def chain_code(chain: Chain, *, catalog: str | None = None, variable: str = "chain") -> str:
    """Python source that builds ``chain`` (same id) with the public API.

    Args:
        chain: the chain to write out.
        catalog: the catalog location (file or STAC API URL) the code opens; None uses the
            process default catalog (``EOX_CATALOG``).
        variable: the name the chain is assigned to.

    Returns:
        Source text ready to paste into a notebook; its last line evaluates the chain.
    """
    lines = ["from engine import Collection"]
    if catalog is not None:
        lines.append("from engine.catalog import open_catalog")
    try:
        calls = _source_calls(chain.source)
    except _Inexpressible:
        calls = []
    if not calls:  # a source Collection cannot express: its JSON, exactly
        return "\n".join([
            "from engine.chain import Chain", "",
            f"{variable} = Chain.from_json({_lit(chain.to_json())})", variable, ""])
    lines.append("")
    opened = ""
    if catalog is not None:
        lines.append(f"catalog = open_catalog({_lit(str(catalog))})")
        opened = ", catalog=catalog"
    lines.append(f"{variable} = (")
    lines.append(f"    Collection({_lit(chain.source.collection)}{opened})")
    lines += ["    " + c for c in calls]
    lines += ["    " + _step_call(s) for s in chain.steps]
    lines += [")", variable, ""]
    return "\n".join(lines)


__all__ = ["chain_code"]
