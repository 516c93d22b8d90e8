"""What every piece of the session state shares: the engine handles and the user's messages.

``AppState`` (components/state.py) is composed of pieces that each own their parameters:
:class:`~components.viewstate.ViewState` (map view, drawings),
:class:`~components.searchstate.SearchState` (query, results, selection),
:class:`~components.displaystate.DisplayState` (bands, stretch, the displayed chain) and
:class:`~components.statsstate.StatisticsState` (statistics and auto stretch). Each piece
derives from :class:`StateBase`, so it can tell the user something and reach the engine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import count

import param

from components.backend import Backend
from engine.errors import EOXError

log = logging.getLogger(__name__)

_notice_ids = count(1)

BBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class Notice:
    """A message for the user: level is "info", "success", "warning" or "error"."""

    text: str
    level: str = "info"
    detail: str = ""  # technical detail, shown on demand (a traceback)
    serial: int = field(default_factory=lambda: next(_notice_ids))


def bbox_polygon(bbox: BBox) -> dict:
    """GeoJSON polygon of a (W, S, E, N) box."""
    w, s, e, n = bbox
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def overlaps(a: tuple, b: tuple) -> bool:
    """True when two (W, S, E, N) boxes share some area (or touch)."""
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def union_box(boxes: list[tuple]) -> BBox:
    """The (W, S, E, N) box around ``boxes`` (not empty)."""
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))


class StateBase(param.Parameterized):
    """The engine handles and the notice every piece of the state may set."""

    backend = param.ClassSelector(class_=Backend, constant=True, doc="Engine handles.")
    notice = param.ClassSelector(class_=Notice, default=None, allow_None=True,
                                 doc="The message shown to the user (banner and toast).")

    def notify(self, text: str, level: str = "info", *, detail: str = "") -> None:
        """Tell the user something (the shell shows it as a notification)."""
        self.notice = Notice(text, level, detail)

    def resolved(self) -> None:
        """An action succeeded: the banner about an earlier problem goes away."""
        if self.notice is not None and self.notice.level in ("error", "warning"):
            self.notice = None

    def fail(self, exc: EOXError, action: str) -> None:
        """Show an engine error with what was being done."""
        log.info("%s failed: %s", action, exc)
        self.notice = Notice(f"{action}: {exc}", "error")
