"""Input discovery: which kind each path is, and the items (plans) it will produce.

Planning is cheap (names, headers, time coordinates) so that items already in the catalog
are skipped before any conversion; building a plan writes the COGs and makes the item.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pystac

from engine.errors import IngestError, InvalidInput
from engine.ingest.cog import CogWriter

RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".jp2", ".j2k", ".img", ".vrt", ".hdf", ".h5"})
CUBE_SUFFIXES = frozenset({".nc", ".nc4", ".cdf", ".netcdf", ".zarr"})
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class BuildContext:
    """What building an item needs: where COGs go, the writer, and property overrides."""

    collection: str
    data_dir: Path
    writer: CogWriter
    properties: dict[str, Any] = field(default_factory=dict)

    def cog_path(self, item_id: str, band: str) -> Path:
        """``data_dir/cogs/<collection>/<item id>/<band>.tif``."""
        return self.data_dir / "cogs" / self.collection / item_id / f"{safe_name(band)}.tif"


@dataclass
class ItemPlan:
    """One item to make: its id (known before any heavy work) and how to build it."""

    item_id: str
    build: Callable[[BuildContext], pystac.Item]


@dataclass
class IngestSource:
    """One input (file, folder of bands, cube, STAC JSON) and the items it gives."""

    path: str
    plans: list[ItemPlan] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    close: Callable[[], None] | None = None  # releases an open dataset, if any


def safe_name(text: str) -> str:
    """A file-system and URL safe id/name."""
    return _SAFE_ID.sub("_", text).strip("_") or "item"


def parse_dates(values: Sequence[Any]) -> list[datetime]:
    """``band_dates`` as UTC datetimes; accepts ISO strings, dates and datetimes."""
    out = []
    for value in values:
        if isinstance(value, datetime):
            dt = value
        elif isinstance(value, date):
            dt = datetime(value.year, value.month, value.day)
        elif isinstance(value, str):
            try:
                dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))  # noqa: FURB162 - 2020-01-01Z
            except ValueError as err:
                raise InvalidInput(f"band date {value!r} is not an ISO date (YYYY-MM-DD)") from err
        else:
            raise InvalidInput(f"band date {value!r} is not a date")
        out.append(dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC))
    return out


def discover(
    paths: Sequence[str | Path],
    *,
    band_dates: Sequence[Any] | None,
    band_names: Sequence[str] | None,
) -> tuple[list[IngestSource], list[tuple[str, str]], list[tuple[str, str]]]:
    """Plan every input. Returns (sources, failed (path, reason), warnings (path, text))."""
    from engine.ingest import cube, eopatch, rasters, stacjson  # they import this module

    dates = parse_dates(band_dates) if band_dates is not None else None
    sources: list[IngestSource] = []
    failed: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []

    def plan(path: Path, planner: Callable[[], IngestSource]) -> None:
        try:
            sources.append(planner())
        except INPUT_ERRORS as err:
            failed.append((str(path), describe(err, path)))

    cubes: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            failed.append((str(path), "no such file or folder"))
        elif _is_cube(path):
            cubes.append(path)
        elif eopatch.is_eopatch(path):
            plan(path, lambda p=path: eopatch.plan_eopatch(p))
        elif path.is_dir():
            _plan_folder(path, plan, warnings, dates=dates, band_names=band_names)
        elif path.suffix.lower() == ".json":
            plan(path, lambda p=path: stacjson.plan_stac_json(p))
        else:
            plan(path, lambda p=path: rasters.plan_raster(p, dates=dates, band_names=band_names))
    for group in cube.group_cubes(cubes):  # one product split by resolution: one item a date
        plan(group[0], lambda g=group: cube.plan_cubes(g))
    return sources, failed, warnings


def _plan_folder(
    folder: Path,
    plan: Callable[[Path, Callable[[], IngestSource]], None],
    warnings: list[tuple[str, str]],
    *,
    dates: list[datetime] | None,
    band_names: Sequence[str] | None,
) -> None:
    """A folder: STAC JSONs, cubes, EOPatches, then rasters grouped into per-band scenes."""
    from engine.ingest import cube, eopatch, rasters, stacjson  # they import this module
    from engine.ingest.naming import split_band

    files: list[Path] = []
    cubes: list[Path] = []
    stores: list[Path] = []
    patches: list[Path] = []
    for path in sorted(folder.rglob("*")):
        if any(store in path.parents for store in stores):
            continue  # inside a Zarr store or an EOPatch
        if _is_cube(path):
            stores.append(path)
            cubes.append(path)
        elif eopatch.is_eopatch(path):
            stores.append(path)
            patches.append(path)
        elif path.is_file() and not path.name.startswith("."):
            files.append(path)
    consumed: set[Path] = set()
    stac_dirs: set[Path] = set()
    for path in files:
        if path.suffix.lower() == ".json" and stacjson.looks_like_item(path):
            consumed.add(path)
            consumed.update(stacjson.local_files(path))
            stac_dirs.add(path.parent)
            plan(path, lambda p=path: stacjson.plan_stac_json(p))
    for group in cube.group_cubes(cubes):  # one product split by resolution: one item a date
        plan(group[0], lambda g=group: cube.plan_cubes(g))
    for path in patches:
        plan(path, lambda p=path: eopatch.plan_eopatch(p))
    groups: dict[tuple[Path, str], list[tuple[Path, str]]] = defaultdict(list)
    for path in files:
        if path in consumed:
            continue
        if path.parent in stac_dirs:  # the folder's STAC items say what its files are
            warnings.append((str(path), "ignored: not an asset of the STAC item(s) beside it"))
            continue
        if path.suffix.lower() not in RASTER_SUFFIXES:
            warnings.append((str(path), "ignored: not a raster, cube or STAC item file"))
            continue
        split = split_band(path.stem)
        if split is None or dates is not None:
            plan(path, lambda p=path: rasters.plan_raster(p, dates=dates, band_names=band_names))
        else:
            key, band = split
            groups[(path.parent, key or path.parent.name)].append((path, band))
    for (parent, key), members in groups.items():
        plan(parent, lambda k=key, m=members: rasters.plan_band_files(k, m))
    if (
        not cubes
        and not patches
        and not groups
        and not any(p in consumed or p.suffix.lower() in RASTER_SUFFIXES for p in files)
    ):
        plan(folder, _raiser(IngestError(f"{folder}: no raster, cube or STAC item in the folder")))


def _raiser(err: Exception) -> Callable[[], IngestSource]:
    def raise_() -> IngestSource:
        raise err

    return raise_


def _is_cube(path: Path) -> bool:
    if path.suffix.lower() in CUBE_SUFFIXES:
        return True
    return path.is_dir() and any((path / n).exists() for n in (".zgroup", "zarr.json", ".zattrs"))


def describe(err: BaseException, path: str | Path | None = None) -> str:
    """A one-line reason for the report (without the path it is reported with)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, json.JSONDecodeError):
        return f"not valid JSON: {text}"
    if path is not None and text.startswith(f"{path}: "):
        text = text[len(f"{path}: ") :]
    return text


def _input_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean 'this input cannot be taken' (reported), not a bug (raised)."""
    from rasterio.errors import CRSError, RasterioError

    from engine.errors import EOXError

    return (
        EOXError,
        RasterioError,
        CRSError,
        OSError,
        ValueError,  # includes JSONDecodeError and xarray decoding errors
        KeyError,
        pystac.STACError,
        pystac.STACTypeError,
    )


INPUT_ERRORS = _input_errors()
