"""The layer rules of STYLE.md: app -> components -> engine, service -> engine; engine
imports neither panel nor fastapi (nor service/components/app); no import cycles between
packages; and every module imports on its own.

Two checks: every import statement (also the lazy ones inside functions) read from the
source, and each module imported ALONE in a fresh forked interpreter, after which no
forbidden package may be in ``sys.modules`` (catching what a third-party import drags in).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "service", "components", "app")
WEB = ("panel", "bokeh", "fastapi", "starlette", "uvicorn", "bokeh_fastapi")
#: What each package must not import (directly, lazily, or through a dependency).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "engine": ("service", "components", "app", *WEB),
    "service": ("components", "app", "panel", "bokeh", "bokeh_fastapi"),
    "components": ("app", "service", "fastapi", "starlette", "uvicorn"),
    "app": (),
}
_DATA = ("numpy", "pandas", "pydantic", "pystac", "rasterio", "shapely", "httpx", "xarray",
         "pyproj", "rio_tiler", "morecantile", "dask.array", "matplotlib.pyplot")
#: Third-party libraries each probe interpreter imports before forking (allowed ones only).
PRELOAD: dict[str, tuple[str, ...]] = {
    "engine": _DATA,
    "service": (*_DATA, "fastapi", "uvicorn"),
    "components": (*_DATA, "panel", "holoviews", "geoviews"),
    "app": (*_DATA, "fastapi", "uvicorn", "panel", "holoviews", "geoviews"),
}


def _modules(package: str) -> list[str]:
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _imports(module: str) -> set[str]:
    """Top-level names of every module an import statement in ``module`` names."""
    parts = module.split(".")
    path = ROOT.joinpath(*parts)
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found.add(parts[0] if node.level else (node.module or "").split(".")[0])
    return found


def test_no_import_statement_crosses_a_layer():
    wrong = {m: sorted(_imports(m) & set(FORBIDDEN[p]))
             for p in PACKAGES for m in _modules(p)}
    assert not {m: v for m, v in wrong.items() if v}


def test_no_cycles_between_packages():
    graph = {p: {q for m in _modules(p) for q in _imports(m) if q in PACKAGES and q != p}
             for p in PACKAGES}

    def reaches(start: str, goal: str, seen: frozenset = frozenset()) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n}))
                   for n in graph[start])

    assert not [p for p in PACKAGES if reaches(p, p)], graph


def test_the_rules_cover_every_package():
    """Every package at the root (and every one the wheel ships) is one of PACKAGES, so a
    new top-level package cannot escape the checks here."""
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert on_disk == set(PACKAGES) == set(FORBIDDEN) == set(PRELOAD)
    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    assert sorted(shipped) == sorted(f"{p}*" for p in PACKAGES)
    assert all(_modules(p) for p in PACKAGES)


def _unit(module: str) -> str:
    """A subpackage (``engine.render``) or a package's top-level module (``engine.paths``)."""
    return ".".join(module.split(".")[:2])


def _runtime_imports(body: list[ast.stmt]):
    """Import statements run when the module is imported (not inside functions, not under
    ``if TYPE_CHECKING``)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            test = node.test
            checking = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
            if not checking:
                yield from _runtime_imports(node.body)
            yield from _runtime_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody,
                          *(h.body for h in node.handlers)):
                yield from _runtime_imports(block)


def _import_time_graph() -> dict[str, set[str]]:
    """Subpackage -> subpackages its modules import at import time."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for module in _modules(package):
            path = ROOT.joinpath(*module.split("."))
            is_init = path.is_dir()
            path = path / "__init__.py" if is_init else path.with_suffix(".py")
            if "." not in module:  # the package's own __init__ gathers its parts
                continue
            for node in _runtime_imports(ast.parse(path.read_text(), str(path)).body):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif node.level:
                    base = module.split(".")[:len(module.split(".")) - node.level + is_init]
                    prefix = ".".join([*base, *([node.module] if node.module else [])])
                    names = [prefix, *(f"{prefix}.{a.name}" for a in node.names)]
                else:
                    names = [node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
                for name in names:
                    if name.split(".")[0] in PACKAGES and "." in name:
                        target = _unit(name)
                        if target != _unit(module) and target in _UNITS:
                            graph.setdefault(_unit(module), set()).add(target)
    return graph


_UNITS = {_unit(m) for p in PACKAGES for m in _modules(p) if "." in m}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_time_cycles_between_subpackages():
    """Within a package too (engine.chain, engine.render, ...): what importing a module runs
    forms no cycle, so any module can be imported first (lazy imports inside functions may
    point back)."""
    graph = _import_time_graph()
    assert graph["engine.render"] >= {"engine.chain", "engine.catalog"}  # the graph is real
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles(graph) == []


# A fresh interpreter preloads heavy third-party libraries (not ours, not the web stack)
# and the package itself (its ``__init__``, which importing any of its modules runs first
# anyway), then forks once per module: the child imports that module alone and reports what
# it loaded. Forking (one child per core at a time) keeps this to seconds instead of one
# interpreter start per module.
PROBE = r"""
import importlib, json, os, sys
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)


def start(module, banned):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            __import__(module)
            bad = sorted({n.split(".")[0] for n in sys.modules} & set(banned))
            out = {"module": module, "bad": bad}
        except BaseException as exc:
            out = {"module": module, "error": f"{type(exc).__name__}: {exc}"}
        os.write(write, json.dumps(out).encode())
        os._exit(0)
    os.close(write)
    return pid, read


def finish(pid, read):
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    print(b"".join(chunks).decode(), flush=True)


# as many children at a time as there are cores; results in the order of the modules
running = []
for module, banned in json.loads(sys.argv[2]):
    running.append(start(module, banned))
    if len(running) >= min(os.cpu_count() or 1, 4):
        finish(*running.pop(0))
for child in running:
    finish(*child)
"""


@pytest.mark.parametrize("package", PACKAGES)
def test_each_module_imports_alone_without_upper_layers(package):
    jobs = [(m, FORBIDDEN[package]) for m in _modules(package)]
    assert not set(PRELOAD[package]) & set(FORBIDDEN[package])
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps([*PRELOAD[package], package]),
                           json.dumps(jobs)], cwd=ROOT, check=False,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["module"] for r in results] == [m for m, _ in jobs]
    failed = {r["module"]: r.get("error") or r["bad"] for r in results
              if r.get("error") or r.get("bad")}
    assert not failed


def test_components_and_app_files_stay_small():
    """~400 lines per components/ and app/ module (engine/ and service/: ~450, checked in
    tests/engine/test_render_pipeline.py): a bigger one is split by responsibility."""
    big = {str(p.relative_to(ROOT)): n for package in ("components", "app")
           for p in (ROOT / package).rglob("*.py")
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > 420}
    assert big == {}
