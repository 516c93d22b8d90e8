"""Every runtime dependency in pyproject.toml is used (issue #16: "if a dependency is still
unused, drop it"): imported somewhere in engine/, service/, components/ or app/, or listed
below with the reason our code needs it without an import statement."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "service", "components", "app")
#: Dependencies used without an import of their own, and why.
NOT_IMPORTED = {
    "netcdf4": "xarray's default netCDF backend: engine/ingest/cube.py open_dataset(.nc)",
    "h5netcdf": "xarray's netCDF4/HDF5 backend when netCDF4 cannot read a file",
    "cartopy": "GeoViews' projection library; pinned <0.26 for GeoViews' API",
    "hvplot": "the .hvplot accessor of profiles and compute() results (users import "
              "hvplot.pandas/xarray; tests/app/test_hvelements.py, assets/example.ipynb)",
}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imported_top_levels() -> set[str]:
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    found.add(node.module.split(".")[0])
    return found


def test_every_dependency_is_imported_or_has_a_reason():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    modules: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            modules.setdefault(dist.lower().replace("_", "-"), set()).add(module)
    imported = _imported_top_levels()
    unused = {d for d in declared - set(NOT_IMPORTED) if not modules.get(d, set()) & imported}
    assert unused == set(), "declared but never imported: drop them or say why below"
    stale = {d for d in NOT_IMPORTED if modules.get(d, set()) & imported or d not in declared}
    assert stale == set(), "imported (or no longer declared) after all: remove the reason"
    assert all(importlib.util.find_spec(next(iter(modules[d]))) for d in NOT_IMPORTED)
