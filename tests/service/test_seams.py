"""The service's seams (issue #16): collaborators typed by protocols, not ``Any``, none found
with ``getattr``; the chain routes translate HTTP and leave tile coordination (caches,
single flight, the render limiter, fingerprints, warming) to ``service.tiles.TileProducer``."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing
from pathlib import Path

import pytest

from engine.catalog.base import Catalog
from service import protocols
from service.app import create_service
from service.routes import CatalogRoutes, ChainRoutes, ExtractRoutes, HealthRoutes
from service.routes.basemap import BasemapRoutes
from service.routes.profile import TimeRoutes
from service.tiles import TileProducer

ROOT = Path(__file__).resolve().parents[2]
ROUTE_CLASSES = (ChainRoutes, TimeRoutes, ExtractRoutes, CatalogRoutes, HealthRoutes,
                 BasemapRoutes, TileProducer)
#: Names under which a module holds a collaborator (the renderer, the catalog, ...).
COLLABORATORS = {"catalog", "renderer", "reader", "tiles", "chain_store", "cache", "disk"}


def _mentions_any(hint: object) -> bool:
    return hint is typing.Any or any(_mentions_any(a) for a in typing.get_args(hint))


def _declared(hint: object) -> list[object]:
    """The classes a hint allows, ``None`` left out (``X | None`` -> [X])."""
    args = typing.get_args(hint)
    return [a for a in args if a is not type(None)] if args else [hint]


def _is_protocol_or_class(kind: object) -> bool:
    return inspect.isclass(kind) and (getattr(kind, "_is_protocol", False)
                                      or kind.__module__.split(".")[0] in ("engine", "service"))


@pytest.mark.parametrize("cls", ROUTE_CLASSES, ids=lambda c: c.__name__)
def test_route_collaborators_are_typed_not_any(cls):
    hints = typing.get_type_hints(cls)
    held = {f.name for f in dataclasses.fields(cls) if f.init} & COLLABORATORS
    assert held or cls is BasemapRoutes
    assert {n: hints[n] for n in held if _mentions_any(hints[n])} == {}
    for name in held:
        assert all(_is_protocol_or_class(k) for k in _declared(hints[name])), (name, hints[name])


def test_renderer_and_catalog_seams_are_protocols_or_the_catalog_base():
    hints = typing.get_type_hints(create_service)
    assert _declared(hints["renderer"]) == [protocols.Renderer]
    assert hints["catalog"] is Catalog
    chain_hints = typing.get_type_hints(ChainRoutes)
    assert chain_hints["catalog"] is protocols.CollectionLookup
    assert chain_hints["reader"] is protocols.ChainReader
    assert _declared(typing.get_type_hints(TimeRoutes)["renderer"]) == [protocols.FrameRenderer]
    assert typing.get_type_hints(TileProducer)["renderer"] is protocols.TileSource
    for proto in (protocols.Renderer, protocols.CollectionLookup, protocols.ChainReader,
                  protocols.FrameRenderer, protocols.TileSource):
        assert getattr(proto, "_is_protocol", False), proto


def test_the_renderer_satisfies_the_service_protocol():
    """Every method the protocol names exists on ``TileRenderer`` with a signature that
    accepts the protocol's arguments (a renamed method or argument breaks the seam here,
    not in production)."""
    from engine.render import TileRenderer

    for name, member in inspect.getmembers(protocols.Renderer, inspect.isfunction):
        if name.startswith("_"):
            continue
        ours = inspect.signature(getattr(TileRenderer, name))
        for param in list(inspect.signature(member).parameters.values())[1:]:
            assert param.name in ours.parameters, (name, param.name)
            assert ours.parameters[param.name].kind == param.kind, (name, param.name)
    assert "handles" in typing.get_type_hints(protocols.Renderer)
    assert "self.handles = " in inspect.getsource(TileRenderer.__init__)


def _service_modules() -> list[Path]:
    return [ROOT / "service" / "app.py", ROOT / "service" / "tiles.py",
            *sorted((ROOT / "service" / "routes").glob("*.py"))]


@pytest.mark.parametrize("path", _service_modules(), ids=lambda p: p.name)
def test_no_collaborator_or_setting_is_found_with_getattr(path):
    """``getattr``/``hasattr`` would find a collaborator or a setting by name at run time
    (the extract limit was read from ``app.state`` so); it comes as a typed field instead."""
    calls = [f"{path.name}:{node.lineno} {node.func.id}"
             for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
             and node.func.id in ("getattr", "hasattr")]
    assert calls == []


#: What tile coordination is made of: none of it belongs in the chain routes.
COORDINATION_MODULES = {"threading", "asyncio", "anyio", "concurrent", "functools", "time",
                        "collections", "service.diskcache", "service.lanes.heavy_lane",
                        "service.cache.TileCache", "engine.render.TileRenderer"}
COORDINATION_NAMES = {"Lock", "RLock", "Semaphore", "CapacityLimiter", "Future", "OrderedDict",
                      "lru_cache", "cache", "heavy_lane", "to_thread", "TileCache",
                      "DiskTileCache", "monotonic"}


def test_chain_routes_leave_tile_coordination_to_the_tile_producer():
    tree = ast.parse((ROOT / "service" / "routes" / "chains.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {node.module or ""} | {f"{node.module}.{a.name}" for a in node.names}
    assert {m for m in imported
            if m in COORDINATION_MODULES or m.split(".")[0] in COORDINATION_MODULES} == set()
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert used & COORDINATION_NAMES == set()
    # no module-level state shared between requests (a cache, a set of in-flight tiles)
    mutable = [n.lineno for n in tree.body if isinstance(n, ast.Assign | ast.AnnAssign)
               and isinstance(n.value, ast.Dict | ast.List | ast.Set | ast.Call)
               and not (isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Name)
                        and n.value.func.id == "Path")]
    assert mutable == [] or all(_literal_constant(tree, line) for line in mutable)
    # the routes hold the chain store, a catalog lookup, the producer and a reader: no
    # renderer they could render tiles with themselves
    names = {f.name for f in dataclasses.fields(ChainRoutes) if f.init}
    assert names == {"catalog", "chain_store", "tiles", "reader"}
    assert not {"tile", "encode", "fingerprint"} & set(dir(protocols.ChainReader))
    assert {"fetch", "lookup", "fingerprint", "cached_fingerprint", "warm", "render_stats"} <= \
        set(dir(TileProducer))


def _literal_constant(tree: ast.Module, line: int) -> bool:
    """A module-level assignment at ``line`` is an upper-case constant (an example body)."""
    node = next(n for n in tree.body if getattr(n, "lineno", None) == line)
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return all(isinstance(t, ast.Name) and t.id.isupper() for t in targets)
