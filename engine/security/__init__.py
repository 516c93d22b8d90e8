"""Checks on text a user (or a catalog) controls before it reaches GDAL or HTML."""

from engine.security.gdal_paths import RASTER_DRIVERS, check_gdal_path, open_raster

__all__ = ["RASTER_DRIVERS", "check_gdal_path", "open_raster"]
