"""A video (MP4 or GIF, as ``export_video`` writes) laid on the map over its bounds and
played in the browser.

Bokeh draws images on a canvas: an ``<img>`` of a GIF shows only its first frame and there
is no video glyph. So the frames are decoded here (``engine.timeseries.read_video``), each
becomes a JPEG data URL in one row of an ``image_url`` glyph's source, and a CDSView
``IndexFilter`` shows one row. A ``pn.widgets.Player`` animates in the browser and a CustomJS
on its value moves the filter (and the date label): playback needs no server round trip per
frame, every frame is sent once. The Player (``controls``) must be on the page to play.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import panel as pn
import param
from bokeh.models import CDSView, ColumnDataSource, IndexFilter, Label
from PIL import Image

from components.session import locked
from components.tilemath import to_mercator
from engine.errors import InvalidInput
from engine.timeseries.video import MAX_LAYER_FRAMES, MAX_LAYER_SIDE, read_video
from engine.timeutil import normalize_bbox

#: JPEG quality of the frames sent to the browser.
JPEG_QUALITY = 88

# cb_obj is the Player's model: show its frame (one row of the source) and that frame's date.
_FRAME_JS = """
const n = src.data.url.length;
const i = Math.min(Math.max(Math.round(cb_obj.value), 0), n - 1);
if (flt.indices.length !== 1 || flt.indices[0] !== i) { flt.indices = [i]; }
const d = src.data.date[i];
if (d) { label.text = d; }
"""


def data_url(frame: np.ndarray, quality: int = JPEG_QUALITY) -> str:
    """A (h, w, 3) uint8 frame as a ``data:image/jpeg;base64,...`` URL."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def mercator_box(bounds: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """Web Mercator x0, y0, x1, y1 of WGS84 (W, S, E, N)."""
    (x0, x1), (y0, y1) = to_mercator(np.array([bounds[0], bounds[2]]),
                                     np.array([bounds[1], bounds[3]]))
    return float(x0), float(y0), float(x1), float(y1)


class VideoLayer(pn.viewable.Viewer):
    """One video on a MapView: the ``image_url`` glyph (one row per frame), its date label
    on the map, and the player (``__panel__``) that animates it in the browser.

    Made by ``MapView.add_video``; removed with ``map.remove_layer(name)``.
    """

    name = param.String(doc="The layer's name in the layer list.")
    bounds = param.NumericTuple(default=(0.0, 0.0, 0.0, 0.0), length=4,
                                doc="W, S, E, N (WGS84) the frames cover.")
    fps = param.Number(2.0, bounds=(0.1, 60), doc="Playback frames per second.")
    dates = param.List(default=[], item_type=str, doc="One date per frame ('' unknown).")
    n_frames = param.Integer(0, doc="Number of frames.")
    removed = param.Boolean(False, doc="The layer was removed from the map.")

    def __init__(self, *, map: Any, source: str | Path | bytes,
                 bounds: Any = None, fps: float | None = None, **params: Any) -> None:
        video = read_video(source, max_frames=MAX_LAYER_FRAMES, max_side=MAX_LAYER_SIDE)
        info = video.info
        if bounds is None:
            if info is None:
                raise InvalidInput("this video carries no bounds (it was not written by "
                                   "export_video): give bounds=(west, south, east, north)")
            if info.crs.upper() not in ("EPSG:3857", "EPSG:900913"):
                raise InvalidInput(f"the video's frames are on a {info.crs} grid, the map is "
                                   "Web Mercator: export with crs='EPSG:3857' or give bounds=")
            bounds = info.bounds
        box = normalize_bbox(bounds)
        if box[0] >= box[2] or box[1] >= box[3]:
            raise InvalidInput(f"video bounds must be (west, south, east, north) with west < "
                               f"east and south < north, got {bounds!r}")
        if fps is None:
            fps = video.fps
        if isinstance(fps, bool) or not isinstance(fps, int | float) or not (
                0.1 <= fps <= 60 and math.isfinite(fps)):
            raise InvalidInput(f"fps must be a number in 0.1..60, got {fps!r}")
        n = len(video.frames)
        dates = list(info.dates) if info is not None and len(info.dates) == n else [""] * n
        super().__init__(bounds=box, fps=float(fps), dates=dates, n_frames=n, **params)
        self.map = map

        x0, y0, x1, y1 = mercator_box(box)
        #: One row per frame (same place), the filter shows one.
        self.source = ColumnDataSource(
            {"url": [data_url(f) for f in video.frames], "x": [x0] * n, "y": [y1] * n,
             "w": [x1 - x0] * n, "h": [y1 - y0] * n, "frame": list(range(n)), "date": dates},
            name=f"eox-video-data:{self.name}")
        self.filter = IndexFilter(indices=[0], name=f"eox-video-filter:{self.name}")
        fig = map.figure
        self.renderer = fig.image_url(url="url", x="x", y="y", w="w", h="h",
                                      anchor="top_left", source=self.source,
                                      view=CDSView(filter=self.filter),
                                      name=f"eox-video:{self.name}")
        self.label = Label(x=x0, y=y1, x_offset=4, y_offset=-4, text=dates[0],
                           text_baseline="top", text_font_size="12px", text_color="#ffffff",
                           background_fill_color="#000000", background_fill_alpha=0.6,
                           visible=bool(dates[0]), name=f"eox-video-date:{self.name}")
        fig.add_layout(self.label)
        self.player = pn.widgets.Player(
            start=0, end=max(n - 1, 0), value=0, interval=max(16, round(1000 / self.fps)),
            loop_policy="loop", direction=1 if n > 1 else 0, show_loop_controls=False,
            visible_buttons=["previous", "pause", "play", "next"], scale_buttons=0.8,
            height=60, width=300, label=f"{self.name}: {n} frame(s)", margin=(0, 10),
            css_classes=["eox-video-player"])
        self.player.jscallback(args={"src": self.source, "flt": self.filter,
                                     "label": self.label}, value=_FRAME_JS)
        self._listed = False  # seen in map.layers (until then a change is not a removal)
        self._watcher = map.param.watch(self._layers_changed, "layers")

    @property
    def mercator_bounds(self) -> tuple[float, float, float, float]:
        """x0, y0, x1, y1 of the glyph (Web Mercator metres)."""
        d = self.source.data
        return (d["x"][0], d["y"][0] - d["h"][0], d["x"][0] + d["w"][0], d["y"][0])

    def show_frame(self, i: int) -> None:
        """Show frame ``i`` (from Python; the browser's player does the same in JS)."""
        if not 0 <= i < self.n_frames:
            raise InvalidInput(f"frame must be in 0..{self.n_frames - 1}, got {i}")
        self._show_frame(i)

    @locked(lambda self: self.label)
    def _show_frame(self, i: int) -> None:
        self.player.param.update(direction=0, value=i)
        self.filter.indices = [i]
        if self.dates[i]:
            self.label.text = self.dates[i]

    @locked(lambda self: self.label)
    def _layers_changed(self, event: Any) -> None:
        spec = next((s for s in event.new if s.name == self.name), None)
        if spec is not None:
            self._listed = True
        elif self._listed:  # removed from the map: drop the label, stop the player
            self.map.param.unwatch(self._watcher)
            fig = self.map.figure
            fig.center = [m for m in fig.center if m is not self.label]
            self.player.param.update(direction=0, visible=False)
            self.removed = True
        if spec is not None:
            self.label.visible = spec.visible and bool(self.dates[0])

    def __panel__(self) -> pn.viewable.Viewable:
        return self.player
