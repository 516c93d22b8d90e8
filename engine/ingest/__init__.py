"""Ingest of raster data into the catalog: files, band folders, stacks, cubes, STAC JSON.

Every input becomes STAC items with one single-band COG per band (see the item conventions);
``ingest_paths`` commits them in one transaction and reports what it could not take.
"""

from __future__ import annotations

from engine.ingest.cloud import cloud_cover_array, cloud_cover_file
from engine.ingest.remote import ingest_search
from engine.ingest.run import ingest_paths

__all__ = ["cloud_cover_array", "cloud_cover_file", "ingest_paths", "ingest_search"]
