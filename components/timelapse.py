"""Timelapse export: the slider's dates over the map's view, rendered with the display chain
to an MP4 or GIF in a background thread, with a progress bar and a download button.

"Show on map" lays the export (MP4 or GIF) on the session map over the view it was rendered
for (``MapView.add_video``: the frames play in the browser); its player shows below.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

import panel as pn
import param

from components.map import MapView
from components.state import AppState
from components.timeslider import TimeSlider
from engine.errors import EOXError, InvalidInput
from engine.timeseries import export_video, per_date

log = logging.getLogger(__name__)

#: Frame widths offered, pixels (height follows the view's aspect ratio).
WIDTHS = (256, 384, 512, 768, 1024)

def _cleanup(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)


class TimelapsePanel(pn.viewable.Viewer):
    """Export form (width, fps, format), progress, download, and "Show on map"."""

    state = param.ClassSelector(class_=AppState, doc="The session state.")
    slider = param.ClassSelector(class_=TimeSlider, doc="Gives the dates and the cloud limit.")
    map = param.ClassSelector(class_=MapView, default=None, allow_None=True,
                             doc="The MapView the export is shown on (optional).")
    width = param.Selector(objects=list(WIDTHS), default=512, doc="Frame width, pixels.")
    fps = param.Number(2.0, bounds=(0.1, 30), doc="Frames per second.")
    format = param.Selector(objects=["mp4", "gif"], default="mp4", doc="Video format.")
    label = param.Boolean(True, doc="Write the date on each frame.")
    running = param.Boolean(False, doc="An export is being rendered.")
    done = param.Integer(0, doc="Frames rendered so far.")
    total = param.Integer(0, doc="Frames of the running or last export.")
    path = param.String("", doc="The last exported file ('' for none).")
    bbox = param.Tuple(default=None, length=4, allow_None=True,
                       doc="W, S, E, N of the last export.")
    #: Name of the export's layer on the map.
    LAYER = "Timelapse"
    message = param.String("", doc="What the last export did.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._folder = tempfile.mkdtemp(prefix="eox-timelapse-")
        weakref.finalize(self, _cleanup, self._folder)
        self._thread: threading.Thread | None = None
        self._w = pn.widgets.Select.from_param(self.param.width, name="Width (px)", width=110)
        self._fps = pn.widgets.FloatInput.from_param(self.param.fps, name="Frames/s", width=90,
                                                     step=0.5)
        self._fmt = pn.widgets.RadioButtonGroup.from_param(
            self.param.format, name="Format", options={"MP4": "mp4", "GIF": "gif"},
            button_type="light")
        self._lbl = pn.widgets.Checkbox.from_param(self.param.label, name="Date on frames")
        self._go = pn.widgets.Button(name="Export timelapse of this view",
                                     button_type="primary", sizing_mode="stretch_width")
        self._go.on_click(lambda e: self.start())
        self._bar = pn.indicators.Progress(value=0, max=1, active=False, visible=False,
                                           sizing_mode="stretch_width", bar_color="info",
                                           name="timelapse-progress")
        self._info = pn.pane.Markdown(self.param.message, margin=(0, 10))
        self._download = pn.widgets.FileDownload(label="Download", button_type="success",
                                                 visible=False, embed=False,
                                                 sizing_mode="stretch_width")
        self._show = pn.widgets.Button(name="Show on map", button_type="default",
                                       disabled=True, visible=self.map is not None,
                                       sizing_mode="stretch_width",
                                       description="Play the export on the map over its view")
        self._show.on_click(lambda e: self.show_on_map())
        #: The export's layer on the map (its player shows below the button).
        self.video = None
        self._player = pn.Column(pn.Spacer(height=0), sizing_mode="stretch_width")

    # -- export -----------------------------------------------------------------------------
    def start(self) -> bool:
        """Start rendering the slider's dates over the view; False (with a message) if not."""
        if self.running:
            self.state.notify("Timelapse: an export is already running", "warning")
            return False
        s = self.state
        try:
            if s.viewport is None:
                raise InvalidInput("the map has not reported its view yet")
            if not self.slider.frames:
                self.slider.refresh()
            if not self.slider.frames:
                raise InvalidInput(self.slider.message or "no date in this view")
            template = s.chain if s.chain is not None else s.display_chain()
        except EOXError as exc:
            s.fail(exc, "Timelapse")
            self.message = f"Timelapse: {exc}"
            return False
        frames = list(self.slider.frames)
        out = Path(self._folder) / f"timelapse_{s.collection}_{frames[0].label}_" \
                                   f"{frames[-1].label}.{self.format}"
        job = {"coll": self.slider.query(), "chain_fn": per_date(template), "out": out,
               "bbox": tuple(s.viewport), "width": int(self.width), "fps": float(self.fps),
               "dates": [f.day for f in frames], "label": self.label,
               "max_cloud": self.slider.max_cloud if self.slider.max_cloud < 100 else None,
               "renderer": s.backend.renderer}
        self.param.update(running=True, done=0, total=len(frames),
                          message=f"Rendering {len(frames)} frame(s)…")
        self._go.disabled = True
        self._bar.param.update(value=0, max=len(frames), visible=True, active=True)
        self._thread = threading.Thread(target=self._run, kwargs=job, daemon=True,
                                        name="eox-timelapse")
        self._thread.start()
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running export ends (tests, scripts); True if it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def _run(self, *, coll: Any, chain_fn: Any, out: Path, bbox: tuple, **options: Any) -> None:
        """The background thread: render, encode, then offer the file (or say why not)."""
        try:
            path = export_video(coll, chain_fn, out, bbox=bbox, progress=self._progress,
                                **options)
        except EOXError as exc:
            log.info("timelapse failed: %s", exc)
            self._finish(message=f"Timelapse failed: {exc}", failed=exc)
            return
        size = path.stat().st_size
        self._finish(message=f"Timelapse ready: {self.total} frame(s), {out.suffix[1:].upper()}"
                     f", {size / 1e6:.2f} MB.", path=str(path), bbox=bbox)

    def _progress(self, done: int, total: int) -> None:
        self.done = done
        self._bar.value = done

    def _finish(self, *, message: str, path: str = "", bbox: tuple | None = None,
                failed: EOXError | None = None) -> None:
        self.param.update(running=False, message=message)
        self._go.disabled = False
        self._bar.active = False
        if failed is not None:
            self._bar.visible = False
            self.state.fail(failed, "Timelapse")
            return
        self.param.update(path=path, bbox=bbox)
        self._download.param.update(file=path, filename=Path(path).name, visible=True,
                                    label=f"Download {Path(path).name}")
        self._show.disabled = self.map is None
        self.state.notify(message, "success")

    # -- on the map -------------------------------------------------------------------------
    def show_on_map(self) -> bool:
        """Lay the last export on the map over its view and play it (replaces the previous
        one); False (with a message) if there is nothing to show or it cannot be shown."""
        if self.map is None or not self.path:
            return False
        try:
            self.video = self.map.add_video(self.path, name=self.LAYER)
        except EOXError as exc:
            self.state.fail(exc, "Timelapse")
            self.message = f"Timelapse: cannot show it on the map: {exc}"
            return False
        self._player.objects = [self.video]
        self.state.notify(f"Timelapse on the map: {self.video.n_frames} frame(s), layer "
                          f"{self.LAYER!r}", "info")
        return True

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown("**Timelapse** — the dates above, over the map's view, drawn "
                             "with the current display", margin=(0, 10)),
            pn.Row(self._w, self._fps, self._lbl),
            self._fmt,
            self._go,
            self._bar,
            self._info,
            self._download,
            self._show,
            self._player,
            sizing_mode="stretch_width",
        )
