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
