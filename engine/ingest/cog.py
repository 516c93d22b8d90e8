"""Writing single-band Cloud-Optimized GeoTIFFs, with a record of what was written.

GDAL's own COG driver is used for every conversion: rio-cogeo's ``cog_translate`` fails
on Sentinel-2 JPEG2000 bands ("Cannot invert geotransform") and, measured on the demo
data, the COG driver was also faster (13 S2 JP2 bands in 1.3 s; 40 small Landsat tiles
0.12 s vs 0.19 s).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.io import MemoryFile
from rio_cogeo.cogeo import cog_validate

#: Creation options of every COG we write.
COG_OPTIONS: dict[str, str] = {
    "compress": "DEFLATE",
    "blocksize": "512",
    "overviews": "AUTO",
    "bigtiff": "IF_SAFER",
}


class CogWriter:
    """Writes COGs and remembers them, so an ingest that fails can remove what it wrote."""

    def __init__(self) -> None:
        self.written: list[Path] = []
        self.created_dirs: list[Path] = []

    def from_file(
        self,
        src_path: str | Path,
        dst: Path,
        *,
        band: int | None = 1,
        nodata: float | None = None,
        categorical: bool = False,
        src_count: int | None = None,
        src_nodata: float | None = None,
    ) -> Path:
        """Copy band ``band`` (None: all bands) of a GDAL-readable file to a COG at ``dst``.

        ``nodata`` sets a nodata value when the source declares none (e.g. Sentinel-2's 0);
        ``src_count``/``src_nodata``, when the caller knows them, save opening the file twice.
        """
        count = src_count
        if count is None:
            with rasterio.open(src_path) as src:
                count = src.count
                src_nodata = src.nodatavals[(band or 1) - 1]
        options = []
        if band is not None and count > 1:
            options.append(f"bands={band}")
        if src_nodata is None and nodata is not None:
            options.append(f"a_nodata={nodata:g}")
        source = f"vrt://{Path(src_path).resolve()}?{'&'.join(options)}" if options else src_path
        with rasterio.open(source) as src:
            return self._copy(src, dst, categorical=categorical)

    def from_array(
        self,
        array: np.ndarray,
        dst: Path,
        *,
        crs: rasterio.crs.CRS,
        transform: rasterio.Affine,
        nodata: float | None,
        categorical: bool = False,
        scale: float | None = None,
        offset: float | None = None,
    ) -> Path:
        """Write a 2-D array as a COG (used for netCDF/Zarr cube slices)."""
        height, width = array.shape
        profile = {
            "driver": "GTiff",
            "height": height,
            "width": width,
            "count": 1,
            "dtype": array.dtype.name,
            "crs": crs,
            "transform": transform,
            "nodata": nodata,
        }
        with MemoryFile() as mem:
            with mem.open(**profile) as tmp:
                tmp.write(array, 1)
                if scale is not None or offset is not None:
                    tmp.scales = (float(1.0 if scale is None else scale),)
                    tmp.offsets = (float(0.0 if offset is None else offset),)
            with mem.open() as src:
                return self._copy(src, dst, categorical=categorical)

    def _copy(self, src: rasterio.io.DatasetReader, dst: Path, *, categorical: bool) -> Path:
        missing = [d for d in (dst.parent, *dst.parent.parents) if not d.exists()]
        self.created_dirs.extend(reversed(missing))
        dst.parent.mkdir(parents=True, exist_ok=True)
        part = dst.with_name(dst.name + ".part")
        self.written.append(part)
        options = dict(COG_OPTIONS)
        # Masks/classes must keep their values in overviews; reflectance is averaged.
        options["overview_resampling"] = "nearest" if categorical else "average"
        if np.dtype(src.dtypes[0]).kind in "iu":
            options["predictor"] = "2"
        elif np.dtype(src.dtypes[0]).kind == "f":
            options["predictor"] = "3"
        rasterio.shutil.copy(src, part, driver="COG", **options)
        os.replace(part, dst)
        self.written.append(dst)
        return dst

    def remove(self, paths: list[Path] | None = None) -> None:
        """Delete written files (all, or the given ones) and the folders left empty."""
        targets = self.written if paths is None else paths
        folders = {p.parent for p in targets} | set(self.created_dirs)
        for path in targets:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # not empty (or gone): keep it
                folder.rmdir()
        if paths is None:
            self.written = []
        else:
            drop = set(paths)
            self.written = [p for p in self.written if p not in drop]


def is_cog(path: str | Path) -> bool:
    """True if the file is a tiled GeoTIFF that validates as Cloud-Optimized.

    Small striped GeoTIFFs pass rio-cogeo's validation; we convert them anyway so every
    asset we publish as ``profile=cloud-optimized`` is internally tiled.
    """
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        return False
    with rasterio.open(path) as src:
        layout = src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")
        if not (src.profile.get("tiled") or layout == "COG"):
            return False
    valid, _errors, _warnings = cog_validate(str(path), quiet=True)
    return bool(valid)
