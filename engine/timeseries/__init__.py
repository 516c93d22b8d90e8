"""Time: index profiles at a point or over a polygon, and timelapse video exports.

>>> coll.profile(-106.91, 40.288, "(nir-red)/(nir+red)")      # one row per scene
>>> export_video(coll, lambda c: c.process().bands("swir1", "nir", "red").scale(0, 4000),
...              "out.mp4", bbox=(-106.925, 40.28, -106.903, 40.297), width=512)
"""

from engine.timeseries.profiles import (
    CLOUD_CLASSES,
    DEFAULT_EXPRESSION,
    PROFILE_COLUMNS,
    PROFILE_POLYGON_COLUMNS,
    clear_count,
    profile,
)
from engine.timeseries.video import (
    FORMATS,
    MAX_FRAMES,
    MAX_SIDE,
    MAX_TOTAL_PIXELS,
    collection_of,
    export_video,
    per_date,
)

__all__ = [
    "CLOUD_CLASSES", "DEFAULT_EXPRESSION", "FORMATS", "MAX_FRAMES", "MAX_SIDE",
    "MAX_TOTAL_PIXELS", "PROFILE_COLUMNS", "PROFILE_POLYGON_COLUMNS", "clear_count",
    "collection_of", "export_video",
    "per_date", "profile",
]
