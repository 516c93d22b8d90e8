"""The ingest pipeline: plan every input, skip known items, build the rest, commit once.

All-or-nothing: items are written to the catalog in one transaction at the end; any error
or interrupt before or during it removes the COGs this run wrote and restores the
collection, so the catalog and the data folder are as they were. A run killed outright
(SIGKILL, power cut) cannot clean up: the next run removes its partial files first.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pystac
import rasterio
from tqdm import tqdm

from engine.catalog.base import Catalog, IngestReport
from engine.chain.aliases import base_family
from engine.chain.bands import collection_families, item_family
from engine.errors import IngestError, InvalidInput, UnknownCollection
from engine.ingest.cog import CogWriter
from engine.ingest.items import build_collection
from engine.ingest.sources import INPUT_ERRORS, BuildContext, IngestSource, describe, discover

log = logging.getLogger(__name__)
_COLLECTION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def ingest_paths(
    catalog: Catalog,
    paths: Sequence[str | Path] | str | Path,
    *,
    collection: str | pystac.Collection,
    data_dir: str | Path,
    band_dates: Sequence[Any] | None = None,
    band_names: Sequence[str] | None = None,
    properties: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> IngestReport:
    """Ingest rasters, band folders, multi-date stacks, netCDF/Zarr cubes or STAC JSONs.

    Args:
        catalog: a writable catalog.
        paths: files or folders (folders are scanned recursively).
        collection: collection id, or a pystac.Collection used as template when new.
        data_dir: converted COGs go to ``data_dir/cogs/<collection>/<item id>/<band>.tif``.
        band_dates: for multi-band files whose bands are several dates (date-major order).
        band_names: band names of one date (or of a multi-band file).
        properties: item properties that override what names tell (e.g. processing:level).
        progress: show a tqdm progress bar.

    Returns:
        What was added, skipped (already present) and failed (with the reason).
    """
    name = collection.id if isinstance(collection, pystac.Collection) else str(collection)
    check_collection_id(name)
    template = collection if isinstance(collection, pystac.Collection) else None
    if isinstance(paths, str | Path):
        paths = [paths]
    # One GDAL environment for the whole run: per-open environment set-up was a third of
    # the time of ingesting many small files.
    with _ingest_lock(Path(data_dir).expanduser().resolve(), started=time.time()), \
            rasterio.Env():
        return _ingest(
            catalog,
            list(paths),
            name,
            template,
            Path(data_dir),
            band_dates,
            band_names,
            dict(properties or {}),
            progress=progress,
        )


def check_collection_id(name: str) -> None:
    """InvalidInput unless ``name`` is a usable collection id."""
    if not _COLLECTION_ID.match(name):
        raise InvalidInput(f"invalid collection id {name!r}: use letters, digits, '.', '_', '-'")


def _is_partial(name: str) -> bool:
    """A file a killed writer leaves: ``<band>.tif.part``, or GDAL's overviews being built
    for it, ``<band>.tif.part.ovr.tmp``."""
    return name.endswith(".part") or (".part." in name and name.endswith(".tmp"))


def clean_partial_files(data_dir: str | Path, *, older_than: float) -> list[Path]:
    """Delete the partial COGs that killed ingests left under ``data_dir/cogs`` (files last
    modified before ``older_than``, a POSIX time) and the folders they leave empty.

    Only safe while no other ingest writes to the same data dir: ``ingest_paths`` calls it
    only when it holds the data dir's ingest lock alone.

    Returns:
        The files removed.
    """
    cogs = Path(data_dir) / "cogs"
    removed: list[Path] = []
    if not cogs.is_dir():
        return removed
    for dirpath, dirnames, filenames in os.walk(cogs, topdown=False):
        for name in filenames:
            if not _is_partial(name):
                continue
            path = Path(dirpath) / name
            try:
                if path.lstat().st_mtime < older_than:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:
                continue
        if removed and Path(dirpath) != cogs and not os.listdir(dirpath):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
    if removed:
        log.warning("removed %d partial file(s) left by an interrupted ingest under %s",
                    len(removed), cogs)
    return removed


@contextlib.contextmanager
def _ingest_lock(data_dir: Path, *, started: float):
    """Hold the data dir's ingest lock (shared: ingests may run side by side) for a run;
    when no other ingest holds it, first clean what killed runs left. The lock is a
    ``flock`` on the data dir itself (no lock file to leave behind); the kernel releases
    it when the process dies, even by SIGKILL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another ingest is writing to %s: its partial files are left alone",
                     data_dir)
        else:
            clean_partial_files(data_dir, older_than=started)
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _ingest(
    catalog: Catalog,
    paths: list[str | Path],
    name: str,
    template: pystac.Collection | None,
    data_dir: Path,
    band_dates: Sequence[Any] | None,
    band_names: Sequence[str] | None,
    properties: dict[str, Any],
    *,
    progress: bool,
) -> IngestReport:
    report = IngestReport()
    writer = CogWriter()
    ctx = BuildContext(
        collection=name,
        data_dir=data_dir.expanduser().resolve(),
        writer=writer,
        properties=properties,
    )
    sources: list[IngestSource] = []
    committed = False
    try:
        sources, failed, warnings = discover(paths, band_dates=band_dates, band_names=band_names)
        report.failed.extend(failed)
        report.warnings.extend(warnings)
        for source in sources:
            report.warnings.extend((source.path, w) for w in source.warnings)
        todo = _select(catalog, name, sources, report)
        items = _build_all(todo, ctx, report, progress=progress)
        check_one_sensor(catalog, name, items)
        if items:
            report.warnings.extend(commit_items(catalog, name, template, items,
                                                preview_dir=data_dir / "previews"))
            committed = True
            report.added.extend(item.id for item in items)
    except BaseException:
        if not committed:  # the catalog is as before: so must the data folder be
            writer.remove()
        raise
    finally:
        for source in sources:
            if source.close is not None:
                source.close()
    for path, reason in report.failed:
        log.info("ingest into %s: %s failed: %s", name, path, reason)
    log.info(
        "ingest into %s: %d added, %d skipped, %d failed",
        name,
        len(report.added),
        len(report.skipped),
        len(report.failed),
    )
    return report


def check_one_sensor(catalog: Catalog, name: str, items: list[pystac.Item]) -> None:
    """IngestError when the items and the collection hold more than one sensor family
    (Sentinel-2, Landsat, Sentinel-1, DEM): band names such as B04 or SR_B4 mean
    different bands on each, so one collection per sensor."""
    found: dict[str | None, str] = {}
    try:
        coll = catalog.collection(name)
    except UnknownCollection:
        coll = None
    if coll is not None:
        for fam in collection_families(coll):
            if fam is not None:
                found.setdefault(base_family(fam), f"collection {name!r}")
    for item in items:
        fam = item_family(item)
        if fam is not None:
            found.setdefault(base_family(fam), f"item {item.id!r}")
    if len(found) > 1:
        what = ", ".join(f"{fam} ({where})" for fam, where in sorted(found.items(), key=str))
        raise IngestError(
            f"collection {name!r} would mix sensors: {what}. Band names mean different "
            "bands on each; ingest each sensor into its own collection (--collection)")


def _select(
    catalog: Catalog, name: str, sources: list[IngestSource], report: IngestReport
) -> list[IngestSource]:
    """Drop plans whose item is already in the catalog (skipped) or planned twice (failed)."""
    seen: dict[str, str] = {}
    todo = []
    for source in sources:
        keep = []
        for plan in source.plans:
            if plan.item_id in seen:
                report.failed.append(
                    (source.path, f"item id {plan.item_id} also comes from {seen[plan.item_id]}")
                )
            elif catalog.has_item(name, plan.item_id):
                report.skipped.append(plan.item_id)
            else:
                seen[plan.item_id] = source.path
                keep.append(plan)
        if keep:
            todo.append(IngestSource(path=source.path, plans=keep))
    return todo


def _build_all(
    todo: list[IngestSource], ctx: BuildContext, report: IngestReport, *, progress: bool
) -> list[pystac.Item]:
    """Build every planned item; an input that fails loses all its items and COGs."""
    items: list[pystac.Item] = []
    total = sum(len(s.plans) for s in todo)
    with tqdm(
        total=total, disable=not progress, unit="item", desc=f"ingest {ctx.collection}"
    ) as bar:
        for source in todo:
            mark = len(ctx.writer.written)
            built = []
            try:
                for plan in source.plans:
                    built.append(plan.build(ctx))
                    bar.update(1)
            except INPUT_ERRORS as err:
                ctx.writer.remove(ctx.writer.written[mark:])
                report.failed.append((source.path, describe(err, source.path)))
                bar.update(len(source.plans) - len(built))
                continue
            items.extend(built)
    return items


def commit_items(
    catalog: Catalog, name: str, template: pystac.Collection | None, items: list[pystac.Item],
    *, preview_dir: Path | None = None, failed_hosts: set[str] | None = None,
) -> list[tuple[str, str]]:
    """Write the collection (extent/summaries grown) and the items; undo on failure.
    With ``preview_dir``, remote band files first get local low-resolution previews
    (:mod:`engine.render.previews`), so low zooms never read remote storage; returns
    the warnings of files that got none."""
    warnings: list[tuple[str, str]] = []
    if preview_dir is not None:
        from engine.render.previews import add_previews

        warnings = add_previews(items, preview_dir, failed_hosts=failed_hosts)[1]
    try:
        existing: pystac.Collection | None = catalog.collection(name)
    except UnknownCollection:
        existing = None
    catalog.add_collection(build_collection(name, items, base=existing or template))
    try:
        catalog.add_items(items, collection=name)
    except BaseException:
        if existing is not None:
            catalog.add_collection(existing)
        else:
            catalog.remove_collection(name)
        raise
    return warnings
