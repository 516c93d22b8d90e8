"""Temporal slider: the dates with data in the map's view, played one after another.

Each date is a *frame*: the scenes of that UTC day in the view (below the cloud limit). The
slider shows a frame by selecting its scenes, so the map draws the current display chain
restricted to that day's items (same chain id as selecting them by hand, hence the same tile
URLs, share link and caches). While a date is shown the next few frames' chains are
registered and their visible tiles requested by the browser as hidden images, so playing
only swaps to tiles already in the browser's cache.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import panel as pn
import param
from bokeh.models import ColumnDataSource, CustomJS

from components.map import MapView
from components.session import locked
from components.state import AppState
from engine.chain import Chain
from engine.collection import Collection
from engine.errors import EOXError
from engine.timeseries import per_date

log = logging.getLogger(__name__)

#: Most scenes looked at for the dates of a view (more: the user is asked to zoom in).
MAX_SCENES = 5000
#: Playback speeds offered, frames per second.
SPEEDS: dict[str, float] = {"0.5 fps": 0.5, "1 fps": 1.0, "2 fps": 2.0, "4 fps": 4.0}

#: What each player button does, shown on hover (the buttons have no text, only icons).
BUTTON_TIPS = {"slower": "Slower", "previous": "Previous date", "pause": "Pause",
               "play": "Play", "next": "Next date", "faster": "Faster"}
PLAYER_CSS = "button { position: relative; }\n" + "".join(
    f'button.{cls}:hover::after {{ content: "{tip}"; }}\n' for cls, tip in BUTTON_TIPS.items()
) + """button:hover::after { position: absolute; top: 110%; left: 50%;
  transform: translateX(-50%); background: #222; color: #fff; padding: 2px 6px;
  border-radius: 3px; font-size: 11px; white-space: nowrap; z-index: 100;
  pointer-events: none; }
"""

# Request the visible tiles of the next frames as hidden images, with the same zoom level and
# tile range Bokeh's own tile renderer will ask for (its tile source computes both).
_PREFETCH_JS = """
const urls = src.data.url || [];
const rend = fig.renderers.find((r) => r.name === name);
if (rend == null || urls.length === 0) return;
const ts = rend.tile_source;
const w = fig.inner_width, h = fig.inner_height;
if (!(w > 0 && h > 0)) return;
const extent = [fig.x_range.start, fig.y_range.start, fig.x_range.end, fig.y_range.end];
const level = ts.get_level_by_extent(extent, h, w);
const tiles = ts.get_tiles_by_extent(extent, level);
const keep = window.__eox_prefetch = [];
let n = 0;
for (const tpl of urls) {
  for (const t of tiles) {
    const [x, y, z] = ts.tms_to_wmts(t[0], t[1], t[2]);
    const img = new Image();
    img.src = tpl.replace("{X}", x).replace("{Y}", y).replace("{Z}", z);
    keep.push(img);
    n += 1;
  }
}
src.tags = [n];
"""


def utc_day(value: date | datetime | None) -> date | None:
    """The UTC calendar day of a date or datetime (naive datetimes are taken as UTC)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    return value


@dataclass(frozen=True)
class Frame:
    """One date of the slider: its UTC day, the scenes shown and their mean cloud cover."""

    day: date
    ids: tuple[str, ...]
    cloud: float | None

    @property
    def label(self) -> str:
        """The slider's text for this date."""
        return self.day.isoformat()


def view_frames(coll: Collection, bbox: tuple[float, float, float, float], *,
                max_cloud: float = 100.0, max_scenes: int = MAX_SCENES) -> tuple[list[Frame], bool]:
    """The frames of ``coll`` (its dates and filters) inside ``bbox``, oldest first.

    Scenes above ``max_cloud`` percent are left out (a date with only such scenes does not
    play). Returns the frames and whether the view had more than ``max_scenes`` scenes (then
    only the newest ``max_scenes`` are used).
    """
    narrowed = coll.filter_bbox(bbox)
    if max_cloud < 100:
        narrowed = narrowed.filter("eo:cloud_cover", "<=", float(max_cloud))
    items = narrowed.sort("datetime", ascending=False).limit(max_scenes + 1).items()
    more = len(items) > max_scenes
    days: dict[date, list[tuple[str, float | None]]] = {}
    for item in items[:max_scenes]:
        if item.datetime is None:
            continue
        cover = item.properties.get("eo:cloud_cover")
        cloud = float(cover) if isinstance(cover, int | float) else None
        days.setdefault(utc_day(item.datetime), []).append((item.id, cloud))
    frames = []
    for day in sorted(days):
        scenes = days[day]
        covers = [c for _, c in scenes if c is not None]
        frames.append(Frame(day=day, ids=tuple(sorted(i for i, _ in scenes)),
                            cloud=sum(covers) / len(covers) if covers else None))
    return frames, more


def frame_chain(template: Chain, frame: Frame, *, catalog: Any) -> Chain:
    """``template`` (the display chain) with its source restricted to the scenes of ``frame``.

    Equal to the chain the state builds when the frame's scenes are selected."""
    coll = Collection(template.source.collection, catalog=catalog).ids(list(frame.ids))
    return per_date(template)(coll)


class TimeSlider(pn.viewable.Viewer):
    """Dates in view, a player with speed, a cloud limit; shows each date on the map."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")
    map = param.ClassSelector(class_=MapView, default=None, allow_None=True,
                             doc="The MapView (for prefetching; optional).")
    active = param.Boolean(False, doc="True while the tab is shown (dates follow the view).")
    follow = param.Boolean(True, doc="Recompute the dates when the view or query changes.")
    max_cloud = param.Number(100.0, bounds=(0, 100), doc="Dates play only with scenes at most "
                             "this cloudy (percent).")
    speed = param.Selector(objects=list(SPEEDS), default="1 fps", doc="Playback speed.")
    prefetch = param.Integer(3, bounds=(0, 10), doc="Frames after the shown one to prefetch.")
    frames = param.List(default=[], item_type=Frame, doc="Dates with data in the view.")
    date = param.String("", doc="The date shown (YYYY-MM-DD), '' for none.")
    prefetch_urls = param.List(default=[], item_type=str,
                               doc="Tile URL templates of the frames being prefetched.")
    message = param.String("", doc="What the slider found (or why it is empty).")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._stale = True
        self._frames_of: str | None = None  # collection of the frames
        self._registered: dict[str, str] = {}  # chain id -> tile URL
        self._player = pn.widgets.DiscretePlayer(
            name="Date", options=["–"], value="–", interval=self._interval(), loop_policy="loop",
            show_loop_controls=False, show_value=True, sizing_mode="stretch_width",
            disabled=True, visible_buttons=list(BUTTON_TIPS), stylesheets=[PLAYER_CSS])
        # options and value together: the slider fitted to new frames, never the user's move
        self._player.param.watch(self._player_moved, ["value", "options"], onlychanged=False)
        self._player.param.watch(self._direction_changed, "direction")
        self._speed = pn.widgets.RadioButtonGroup.from_param(self.param.speed, name="Speed",
                                                             button_type="light")
        self._cloud = pn.widgets.FloatSlider.from_param(
            self.param.max_cloud, name="Play dates with cloud cover at most (%)", step=5,
            sizing_mode="stretch_width")
        self._follow = pn.widgets.Checkbox.from_param(self.param.follow,
                                                      name="Dates follow the map's view")
        self._refresh = pn.widgets.Button(name="Dates in this view", width=150)
        self._refresh.on_click(lambda e: self.refresh())
        self._info = pn.pane.Markdown(self.param.message, margin=(0, 10))
        self._shown = pn.pane.Markdown(self._shown_text, margin=(0, 10), name="time-shown")
        # The URLs travel to the browser in a data source of an invisible glyph on the map.
        self._src = ColumnDataSource({"url": [], "x": [], "y": []}, name="eox-prefetch-data")
        if self.map is not None:
            fig = self.map.figure
            fig.scatter("x", "y", source=self._src, size=0, visible=False,
                        name="eox-prefetch")
            self._src.js_on_change("data", CustomJS(
                args={"src": self._src, "fig": fig, "name": "eox-scenes"},
                code=_PREFETCH_JS))
        if self.active and self.follow:
            self.refresh()

    # -- dates ------------------------------------------------------------------------------
    def query(self) -> Collection:
        """The search form's collection and dates (its area is replaced by the view)."""
        s = self.state
        coll = Collection(s.collection, catalog=s.backend.catalog)
        if s.start is not None or s.end is not None:
            coll = coll.filter_date(utc_day(s.start), utc_day(s.end))
        return coll

    def refresh(self) -> list[Frame]:
        """Recompute the dates of the view; keep the shown date when it is still there."""
        s = self.state
        self._stale = False
        if s.collection is None or s.viewport is None:
            self.param.update(frames=[], message="The map has not reported its view yet.")
            return []
        try:
            frames, more = view_frames(self.query(), s.viewport, max_cloud=self.max_cloud)
        except EOXError as exc:
            s.fail(exc, "Dates in view")
            self.param.update(frames=[], message=f"No dates: {exc}")
            return []
        if not frames:
            why = (f" at most {self.max_cloud:g}% cloudy" if self.max_cloud < 100 else "")
            msg = (f"No scene of {s.collection}{why} in this view: move the map onto the data, "
                   "widen the dates or raise the cloud limit.")
        else:
            msg = (f"{len(frames)} date(s) of {s.collection} in this view, "
                   f"{frames[0].label} to {frames[-1].label}.")
            if more:
                msg += f" Only the newest {MAX_SCENES} scenes are used: zoom in for all."
        self._frames_of = s.collection
        self.param.update(frames=frames, message=msg)
        return frames

    @param.depends("date", "frames")
    def _shown_text(self) -> str:
        labels = [f.label for f in self.frames]
        if self.date not in labels:
            return ("Map shows: the search's selection. Move the slider or press play to show "
                    "a date." if labels else "")
        frame = self.frames[labels.index(self.date)]
        cloud = "" if frame.cloud is None else f", {frame.cloud:.0f}% cloud"
        return (f"Map shows: **{self.date}** ({labels.index(self.date) + 1} of {len(labels)}, "
                f"{len(frame.ids)} scene(s){cloud})")

    def frame(self, label: str) -> Frame | None:
        """The frame of a date label, if the view has it."""
        return next((f for f in self.frames if f.label == label), None)

    @param.depends("state.viewport", "state.collection", "state.start", "state.end",
                   "max_cloud", watch=True)
    def _query_changed(self) -> None:
        if self.active and self.follow:
            self.refresh()
            return
        self._stale = True
        if self.frames and self.state.collection != self._frames_of:
            # dates of another collection: never offer (or claim to show) them
            self.param.update(frames=[], message="")

    @param.depends("active", "follow", watch=True)
    def _activated(self) -> None:
        if self.active and self.follow and self._stale:
            self.refresh()

    @param.depends("frames", watch=True)
    def _frames_changed(self) -> None:
        labels = [f.label for f in self.frames]
        keep = self.date if self.date in labels else self._shown_label()
        if not labels:
            self._player.param.update(options=["–"], value="–", disabled=True)
            self.date = ""
            return
        # No date shown yet: the slider starts on the newest date, the map is left alone
        # until the user moves the slider or plays.
        self._player.param.update(options=labels, value=keep or labels[-1], disabled=False)
        self.date = keep
        if keep:
            self._prefetch_next()

    def _shown_label(self) -> str:
        """The date whose scenes are the current selection, if any."""
        wanted = tuple(sorted(self.state.selected))
        return next((f.label for f in self.frames if f.ids == wanted), "")

    # -- showing a date ---------------------------------------------------------------------
    def _player_moved(self, *events: param.parameterized.Event) -> None:
        if any(e.name == "options" for e in events):
            return  # _frames_changed fitted the slider to new frames
        event = events[-1]
        if event.new in ("–", None) or event.new == self.date:  # the shown date: no move
            return
        if self._player.direction and self.date in [f.label for f in self.frames]:
            # playing: the browser's player is the clock, each change one tick; the next
            # date follows the shown one, so a slow server delays dates but skips none
            # (Panel merges changes that arrive while it is busy)
            self.step(1 if self._player.direction > 0 else -1)
            return
        self.show(str(event.new))

    def _direction_changed(self, event: param.parameterized.Event) -> None:
        self.state.playing = bool(event.new)

    def show(self, label: str) -> bool:
        """Show the frame of ``label`` on the map and prefetch the next ones."""
        frame = self.frame(label)
        if frame is None:
            self.state.notify(f"Time: no scene on {label} in this view", "warning")
            return False
        self.date = label
        self._set_player(label)
        if tuple(self.state.selected) != frame.ids:
            self.state.selected = list(frame.ids)
        self._prefetch_next()
        return True

    def step(self, n: int = 1) -> str:
        """Show the date ``n`` frames after the shown one (wrapping); returns its label."""
        labels = [f.label for f in self.frames]
        if not labels:
            return ""
        i = labels.index(self.date) if self.date in labels else -1
        label = labels[(i + n) % len(labels)]
        self.show(label)
        return label

    @param.depends("state.selected", watch=True)
    def _selection_changed(self) -> None:
        label = self._shown_label()
        if label and label != self.date:  # scenes of a date picked by hand: follow them
            self.date = label
            self._set_player(label)
        elif not label and self.date:  # other scenes (or none): the map shows no date
            self.date = ""

    def _set_player(self, label: str) -> None:
        if self._player.value != label:  # the shown date: _player_moved leaves it
            self._player.value = label

    @param.depends("state.chain_id", watch=True)
    def _display_changed(self) -> None:
        if self.date:
            self._prefetch_next()

    def frame_url(self, frame: Frame) -> str:
        """Register the chain of ``frame`` (display chain on its scenes); its tile URL."""
        template = self.state.chain if self.state.chain is not None else self.state.display_chain()
        chain = frame_chain(template, frame, catalog=self.state.backend.catalog)
        url = self._registered.get(chain.id)
        if url is None:
            url = self.state.backend.register(chain)
            self._registered[chain.id] = url
        return url

    def _prefetch_next(self) -> None:
        labels = [f.label for f in self.frames]
        if self.date not in labels or self.prefetch == 0 or self.state.chain is None:
            self.prefetch_urls = []
            return
        i = labels.index(self.date)
        ahead = [self.frames[(i + k) % len(labels)] for k in range(1, self.prefetch + 1)
                 if k < len(labels)]
        try:
            urls = [self.frame_url(f) for f in ahead]
        except EOXError as exc:
            log.info("prefetch skipped: %s", exc)
            urls = []
        self.prefetch_urls = urls

    @param.depends("prefetch_urls", watch=True)
    @locked(lambda self: self._src)
    def _push_prefetch(self) -> None:
        nan = [math.nan] * len(self.prefetch_urls)
        self._src.data = {"url": list(self.prefetch_urls), "x": nan, "y": list(nan)}

    # -- speed ----------------------------------------------------------------------------
    def _interval(self) -> int:
        return round(1000 / SPEEDS[self.speed])

    @param.depends("speed", watch=True)
    def _speed_changed(self) -> None:
        self._player.interval = self._interval()

    @property
    def player(self) -> pn.widgets.DiscretePlayer:
        """The play/pause widget (its value is the date label)."""
        return self._player

    def __panel__(self) -> pn.viewable.Viewable:
        parts: list[Any] = [
            pn.pane.Markdown("**Dates in view** — play them on the map", margin=(0, 10)),
            pn.Row(self._refresh, self._follow),
            self._cloud,
            self._player,
            self._shown,
            pn.Row(pn.pane.Markdown("Speed", margin=(8, 10)), self._speed),
            self._info,
        ]
        return pn.Column(*parts, sizing_mode="stretch_width")
