"""Statistics of what the map shows, and the auto stretch made from them."""

from __future__ import annotations

from collections.abc import Callable

import param

from components.displaystate import percentile_stretch
from components.statebase import BBox, StateBase, bbox_polygon, union_box
from engine.chain import Chain
from engine.errors import EOXError, InvalidInput


class StatisticsState(StateBase):
    """Histogram and percentiles of the visible pixels (or of a drawn area).

    Reads the view (``viewport``, ``drawings``), the selection (``bounds``, ``selected``) and
    the analytic chain of the other pieces ``AppState`` is composed with; sets ``vmin`` and
    ``vmax`` of the display on an auto stretch."""

    statistics = param.Dict(default={}, doc="Statistics of the visible pixels, per band.")
    stretch_low = param.Number(2.0, bounds=(0.0, 100.0), doc="Percentile auto stretch maps to min.")
    stretch_high = param.Number(98.0, bounds=(0.0, 100.0),
                                doc="Percentile auto stretch maps to max.")
    histogram_bins = param.Integer(64, bounds=(8, 512), doc="Bins of the histogram of the view.")
    statistics_area = param.String("", doc="Id of the drawn area (``drawings``) the statistics "
                                   "and auto stretch describe; empty: the visible pixels.")

    # provided by ViewState, SearchState and DisplayState in AppState
    viewport: BBox | None
    drawings: list[dict]
    bounds: dict[str, tuple]
    selected: list[str]
    analytic_chain: Callable[[], Chain]

    def visible_geometry(self) -> dict:
        """The visible area (clipped to the selected scenes) as a GeoJSON polygon."""
        boxes = [self.bounds[i] for i in self.selected if i in self.bounds]
        view = self.viewport
        if view is None and not boxes:
            raise InvalidInput("the map has not reported its view yet")
        if boxes:
            w, s, e, n = union_box(boxes)
            if view is not None:
                w, s = max(w, view[0]), max(s, view[1])
                e, n = min(e, view[2]), min(n, view[3])
                if w >= e or s >= n:
                    raise InvalidInput("the selected scenes are outside the visible map: "
                                       "zoom to them first")
            return bbox_polygon((w, s, e, n))
        return bbox_polygon(view)  # type: ignore[arg-type]

    def compute_statistics(self) -> dict:
        """Statistics of the visible pixels (or of ``statistics_area``) of the analytic chain:
        histogram in ``histogram_bins`` bins, percentiles ``stretch_low`` and ``stretch_high``."""
        try:
            area = next((f["geometry"] for f in self.drawings
                         if f["id"] == self.statistics_area), None)
            if self.statistics_area and area is None:
                raise InvalidInput(f"the statistics area {self.statistics_area!r} is no longer "
                                   "drawn: pick another area or the map's view")
            stats = self.backend.statistics(
                self.analytic_chain(), area or self.visible_geometry(), bins=self.histogram_bins,
                percentiles=(self.stretch_low, self.stretch_high))
        except EOXError as exc:
            self.fail(exc, "Statistics")
            return {}
        self.statistics = stats
        return stats

    def auto_stretch(self, low: float | None = None, high: float | None = None) -> bool:
        """Stretch each band between two percentiles of the visible pixels (by default
        ``stretch_low`` and ``stretch_high``; given values become those)."""
        low = self.stretch_low if low is None else float(low)
        high = self.stretch_high if high is None else float(high)
        if not 0 <= low < high <= 100:
            self.notify(f"Auto stretch: the low percentile ({low:g}) must be below the high "
                        f"one ({high:g}), both within 0..100", "warning")
            return False
        self.param.update(stretch_low=low, stretch_high=high)
        stats = self.compute_statistics()
        if not stats:
            return False
        stretch = percentile_stretch(stats, low, high)
        if isinstance(stretch, str):
            self.notify(f"Auto stretch: band {stretch} has no valid pixel in view", "warning")
            return False
        self.param.update(vmin=stretch[0], vmax=stretch[1])
        return True
